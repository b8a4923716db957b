//! Choosing a backend: `auto` (the built-in VMM when it can boot Linux here, else QEMU; on an
//! Apple silicon Mac without QEMU, Virtualization.framework), `vm` (the built-in VMM, or a clear error saying
//! why not), `qemu`, or `vz` (Virtualization.framework, macOS only, experimental).

use std::path::Path;
use std::str::FromStr;

use crate::accel::HostOs;
use crate::qemu::QemuBackend;
use crate::{Backend, SandboxError};

/// What `--backend` / `KILN_BACKEND` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    #[default]
    Auto,
    Vm,
    Qemu,
    Vz,
}

impl FromStr for BackendKind {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, SandboxError> {
        match s {
            "auto" | "" => Ok(Self::Auto),
            "vm" => Ok(Self::Vm),
            "qemu" => Ok(Self::Qemu),
            "vz" => Ok(Self::Vz),
            other => Err(SandboxError::BadSetting { name: "backend", value: other.into(), why: "expected auto, vm, qemu or vz" }),
        }
    }
}

/// The backend to boot with, and why it was chosen (for progress output and `kiln doctor`).
pub fn choose_backend(kind: BackendKind, cache_dir: &Path) -> Result<(Box<dyn Backend>, String), SandboxError> {
    match kind {
        BackendKind::Qemu => Ok((Box::new(QemuBackend::default()), "qemu (asked for)".into())),
        BackendKind::Vz => match crate::vz::backend() {
            Ok(backend) => Ok((backend, "vz: Virtualization.framework (asked for; experimental)".into())),
            Err(why) => Err(SandboxError::BackendUnusable(format!("--backend vz: {why}; use --backend qemu"))),
        },
        BackendKind::Vm | BackendKind::Auto => match builtin_verdict(cache_dir) {
            Ok(backend) => Ok((backend, "built-in VMM (KVM can boot Linux guests here)".into())),
            Err(why) if kind == BackendKind::Vm => Err(SandboxError::BackendUnusable(format!("--backend vm: the built-in VMM cannot be used here: {why}"))),
            Err(why) => {
                if prefer_vz(HostOs::current(), crate::GuestArch::of_host(), qemu_installed()) {
                    if let Ok(backend) = crate::vz::backend() {
                        return Ok((backend, "vz: Virtualization.framework (experimental), because QEMU is not installed".into()));
                    }
                }
                Ok((Box::new(QemuBackend::default()), format!("qemu, because the built-in VMM cannot be used: {why}")))
            }
        },
    }
}

/// On an Apple silicon Mac, `auto` takes QEMU (with HVF) when it is installed, else
/// Virtualization.framework, so such a Mac needs nothing installed; elsewhere (Intel Macs
/// included: vz runs the arm64 guest only) it never takes vz.
fn prefer_vz(os: HostOs, host: Option<crate::GuestArch>, qemu_installed: bool) -> bool {
    os == HostOs::MacOs && host == Some(crate::GuestArch::Arm64) && !qemu_installed
}

/// Whether the QEMU a build would start (`KILN_QEMU`, else the guest's standard binary) is
/// there.
fn qemu_installed() -> bool {
    let arch = crate::GuestArch::wanted().unwrap_or(crate::GuestArch::X86_64);
    let qemu = std::env::var("KILN_QEMU").ok().filter(|q| !q.is_empty()).unwrap_or_else(|| crate::machine::qemu_binary(arch).into());
    crate::qemu::find_on_path(&qemu).is_some()
}

/// A backend that makes the choice only when a guest is first needed, so a build that needs
/// no guest (fully cached, COPY only) never probes anything.
pub struct ChosenLater {
    pub kind: BackendKind,
    pub cache_dir: std::path::PathBuf,
}

impl Backend for ChosenLater {
    fn start(&self, image: &crate::GuestImage, config: &crate::VmConfig) -> Result<Box<dyn crate::Vm>, SandboxError> {
        // The built-in VMM runs x86_64 guests on x86-64 hosts only; QEMU runs the others (and
        // on a Mac, Virtualization.framework may: choose_backend decides).
        if self.kind == BackendKind::Auto && HostOs::current() != HostOs::MacOs && !(image.arch == crate::GuestArch::X86_64 && image.arch.is_host()) {
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
        assert_eq!("vz".parse::<BackendKind>().expect("ok"), BackendKind::Vz);
        assert!("firecracker".parse::<BackendKind>().is_err());
    }

    #[test]
    fn auto_takes_virtualization_framework_only_on_a_mac_without_qemu() {
        use crate::GuestArch::{Arm64, X86_64};
        assert!(prefer_vz(HostOs::MacOs, Some(Arm64), false));
        assert!(!prefer_vz(HostOs::MacOs, Some(Arm64), true));
        assert!(!prefer_vz(HostOs::MacOs, Some(X86_64), false), "an Intel Mac's guest cannot run under vz");
        assert!(!prefer_vz(HostOs::Linux, Some(Arm64), false) && !prefer_vz(HostOs::Windows, Some(X86_64), false));
    }

    #[test]
    fn vz_elsewhere_than_macos_is_one_clear_error() {
        if cfg!(target_os = "macos") {
            return;
        }
        let err = choose_backend(BackendKind::Vz, std::path::Path::new("/nonexistent")).err().expect("not on this host");
        assert_eq!(err.to_string().lines().count(), 1);
        assert!(err.to_string().contains("--backend vz: Virtualization.framework exists only on macOS; use --backend qemu"), "{err}");
    }
}
