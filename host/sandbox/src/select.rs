//! Choosing a backend: `auto` (the built-in VMM when it can boot Linux here, else QEMU),
//! `vm` (the built-in VMM, or a clear error saying why not) or `qemu`.

use std::path::Path;
use std::str::FromStr;

use crate::qemu::QemuBackend;
use crate::{Backend, SandboxError};

/// What `--backend` / `KILN_BACKEND` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    #[default]
    Auto,
    Vm,
    Qemu,
}

impl FromStr for BackendKind {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, SandboxError> {
        match s {
            "auto" | "" => Ok(Self::Auto),
            "vm" => Ok(Self::Vm),
            "qemu" => Ok(Self::Qemu),
            other => Err(SandboxError::BadSetting { name: "backend", value: other.into(), why: "expected auto, vm or qemu" }),
        }
    }
}

/// The backend to boot with, and why it was chosen (for progress output and `kiln doctor`).
pub fn choose_backend(kind: BackendKind, cache_dir: &Path) -> Result<(Box<dyn Backend>, String), SandboxError> {
    match kind {
        BackendKind::Qemu => Ok((Box::new(QemuBackend::default()), "qemu (asked for)".into())),
        BackendKind::Vm | BackendKind::Auto => match builtin_verdict(cache_dir) {
            Ok(backend) => Ok((backend, "built-in VMM (KVM can boot Linux guests here)".into())),
            Err(why) if kind == BackendKind::Vm => Err(SandboxError::BackendUnusable(format!("--backend vm: the built-in VMM cannot be used here: {why}"))),
            Err(why) => Ok((Box::new(QemuBackend::default()), format!("qemu, because the built-in VMM cannot be used: {why}"))),
        },
    }
}

/// A backend that makes the choice only when a guest is first needed, so a build that needs
/// no guest (fully cached, COPY only) never probes anything.
pub struct ChosenLater {
    pub kind: BackendKind,
    pub cache_dir: std::path::PathBuf,
}

impl Backend for ChosenLater {
    fn start(&self, image: &crate::GuestImage, config: &crate::VmConfig) -> Result<Box<dyn crate::Vm>, SandboxError> {
        // The built-in VMM runs x86_64 guests on x86-64 hosts only; QEMU runs the others.
        if self.kind == BackendKind::Auto && !(image.arch == crate::GuestArch::X86_64 && image.arch.is_host()) {
            return QemuBackend::default().start(image, config);
        }
        let (backend, _why) = choose_backend(self.kind, &self.cache_dir)?;
        backend.start(image, config)
    }
}

/// Whether the built-in VMM can boot Linux guests here (`kiln doctor`): `Ok`, or the one-line
/// reason, which on hosts it does not run on yet says so and names the backend to use.
pub fn builtin_status(cache_dir: &Path) -> Result<(), String> {
    builtin_verdict(cache_dir).map(|_| ())
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn builtin_verdict(cache_dir: &Path) -> Result<Box<dyn Backend>, String> {
    crate::builtin::can_boot_linux(cache_dir)?;
    Ok(Box::new(crate::builtin::BuiltinBackend))
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn builtin_verdict(_cache_dir: &Path) -> Result<Box<dyn Backend>, String> {
    Err(kiln_vmm::probe::probe().linux_boot.err().unwrap_or_else(|| "the built-in VMM is not built for this host".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse() {
        assert_eq!("auto".parse::<BackendKind>().expect("ok"), BackendKind::Auto);
        assert_eq!("vm".parse::<BackendKind>().expect("ok"), BackendKind::Vm);
        assert_eq!("qemu".parse::<BackendKind>().expect("ok"), BackendKind::Qemu);
        assert!("firecracker".parse::<BackendKind>().is_err());
    }
}
