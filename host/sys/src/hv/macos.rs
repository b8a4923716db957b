//! macOS (experimental: type-checked, not yet run on a Mac): `sysctl kern.hv_support`.

use super::Native;

pub fn native() -> Native {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    // SAFETY: a NUL-terminated name, and an output buffer of `len` bytes that we own.
    let rc = unsafe {
        libc::sysctlbyname(c"kern.hv_support".as_ptr(), (&raw mut value).cast(), &mut len, std::ptr::null_mut(), 0)
    };
    match (rc, value) {
        (0, 1) => Native::Available,
        (0, _) => Native::Unavailable("Hypervisor.framework is not supported on this Mac (kern.hv_support=0)".into()),
        _ => Native::Unknown(format!("cannot read kern.hv_support: {}", std::io::Error::last_os_error())),
    }
}
