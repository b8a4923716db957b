//! Windows (experimental): the Windows Hypervisor Platform is an optional feature whose DLL
//! exists only when it is enabled; kiln does not load it, and leaves the decision to QEMU's
//! first `-accel whpx` start.

use super::Native;

pub fn native() -> Native {
    let system_root = std::env::var_os("SystemRoot").unwrap_or_else(|| "C:\\Windows".into());
    let dll = std::path::Path::new(&system_root).join("System32").join("WinHvPlatform.dll");
    if dll.is_file() {
        Native::Unknown("the Windows Hypervisor Platform is installed; QEMU's first -accel whpx start decides".into())
    } else {
        Native::Unavailable("the Windows Hypervisor Platform is not enabled (Windows Features: \"Windows Hypervisor Platform\")".into())
    }
}
