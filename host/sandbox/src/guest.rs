//! Finding the guest boot image (kernel + initramfs with the agent as /init) of the wanted
//! architecture.
//!
//! The guest's architecture is `KILN_GUEST_ARCH` (`x86_64` or `arm64`), else this machine's:
//! Apple silicon and arm64 Linux hosts run the arm64 guest, x86-64 hosts the x86_64 one; an
//! x86-64 host can also run the arm64 guest (full-system emulation, for arm64 builds without
//! user-mode emulation). Each image directory records its architecture in `manifest.json`
//! (`"arch"`; an older directory without it is x86_64), and a directory of the wrong
//! architecture is an error, not a silent fallback. Looked for, in order: `$KILN_GUEST_DIR`
//! (`$KILN_GUEST_DIR_ARM64` or `$KILN_GUEST_DIR_X86_64` for the guest of the other architecture);
//! `<exe dir>/../share/kiln/guest` (`guest-arm64` for arm64; an installed kiln); `images/out`
//! (`images/out-arm64`) of the workspace this binary was built from (a developer checkout).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::SandboxError;

/// What a guest's kernel and agent are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestArch {
    X86_64,
    Arm64,
}

impl GuestArch {
    /// Parses `x86_64`/`amd64` or `arm64`/`aarch64`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "x86_64" | "amd64" => Some(Self::X86_64),
            "arm64" | "aarch64" => Some(Self::Arm64),
            _ => None,
        }
    }

    /// This machine's architecture, if a guest exists for it.
    pub fn of_host() -> Option<Self> {
        Self::parse(std::env::consts::ARCH)
    }

    /// The architecture asked for: `KILN_GUEST_ARCH`, else this machine's.
    pub fn wanted() -> Result<Self, SandboxError> {
        match std::env::var("KILN_GUEST_ARCH") {
            Ok(v) if !v.is_empty() => {
                Self::parse(&v).ok_or(SandboxError::BadSetting { name: "KILN_GUEST_ARCH", value: v, why: "expected x86_64 or arm64" })
            }
            _ => Self::of_host().ok_or_else(|| {
                SandboxError::BackendUnusable(format!("kiln has no guest for {} hosts (set KILN_GUEST_ARCH=x86_64 or arm64)", std::env::consts::ARCH))
            }),
        }
    }

    /// Whether a build may run its stages of another architecture in that architecture's
    /// guest, when its image is there (`KILN_CROSS_GUEST=auto`, the default), instead of under
    /// user-mode emulation in its own guest (`never`). Under TCG the other guest is ~5x faster
    /// (bench/guest-arm64.sh); where the build's own guest is hardware-accelerated, emulation
    /// inside it may win (not measured: no such host here).
    pub fn cross_guests_allowed() -> Result<bool, SandboxError> {
        match std::env::var("KILN_CROSS_GUEST").as_deref() {
            Err(_) | Ok("" | "auto") => Ok(true),
            Ok("never") => Ok(false),
            Ok(other) => Err(SandboxError::BadSetting { name: "KILN_CROSS_GUEST", value: other.into(), why: "expected auto or never" }),
        }
    }

    /// The name in manifests and `KILN_GUEST_ARCH`.
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }

    /// The OCI architecture of the guest's own binaries (what runs without emulation).
    pub fn oci(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// Whether guests of this architecture run natively here (KVM, HVF) rather than emulated.
    pub fn is_host(self) -> bool {
        Self::of_host() == Some(self)
    }

    /// The directory name suffix of this architecture's image (`out`, `out-arm64`).
    fn suffix(self) -> &'static str {
        match self {
            Self::X86_64 => "",
            Self::Arm64 => "-arm64",
        }
    }
}

/// The files that make up the guest.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub arch: GuestArch,
}

/// The `arch` a guest directory's `manifest.json` records (x86_64 when it says nothing).
fn recorded_arch(dir: &Path) -> Result<GuestArch, SandboxError> {
    let path = dir.join("manifest.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(GuestArch::X86_64),
        Err(e) => return Err(SandboxError::io(format!("reading {}", path.display()), e)),
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| SandboxError::BadPath(path.clone(), format!("not valid JSON: {e}")))?;
    match value.get("arch").and_then(|a| a.as_str()) {
        None => Ok(GuestArch::X86_64),
        Some(a) => GuestArch::parse(a).ok_or_else(|| SandboxError::BadPath(path, format!("unknown guest architecture {a:?}"))),
    }
}

impl GuestImage {
    /// A guest image in `dir` (`kernel` + `initramfs.cpio`), if both files are there.
    pub fn in_dir(dir: &Path) -> Result<Option<Self>, SandboxError> {
        let kernel = dir.join("kernel");
        let initrd = dir.join("initramfs.cpio");
        if !(kernel.is_file() && initrd.is_file()) {
            return Ok(None);
        }
        Ok(Some(Self { kernel, initrd, arch: recorded_arch(dir)? }))
    }

    /// Finds the guest image of the wanted architecture, or says where it looked.
    pub fn locate() -> Result<Self, SandboxError> {
        Self::locate_arch(GuestArch::wanted()?)
    }

    /// The guest image of `arch` if there is one and QEMU can run it here: the other
    /// architecture's guest, which a build may use for its stages of that architecture instead
    /// of emulating them (without it, or without its QEMU, they stay emulated).
    pub fn available(arch: GuestArch) -> Option<Self> {
        crate::qemu::find_on_path(crate::machine::qemu_binary(arch))?;
        Self::locate_arch(arch).ok()
    }

    /// Finds the guest image of `arch`: `KILN_GUEST_DIR` for the wanted architecture,
    /// `KILN_GUEST_DIR_ARM64` / `KILN_GUEST_DIR_X86_64` for the other, else the default places.
    pub fn locate_arch(arch: GuestArch) -> Result<Self, SandboxError> {
        let mut candidates = Vec::new();
        let wanted = GuestArch::wanted().ok() == Some(arch);
        let var = if wanted { "KILN_GUEST_DIR".to_string() } else { format!("KILN_GUEST_DIR_{}", arch.name().to_ascii_uppercase()) };
        if let Some(dir) = std::env::var_os(&var) {
            candidates.push(PathBuf::from(dir));
        } else {
            if let Some(exe_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
                candidates.push(exe_dir.join(format!("../share/kiln/guest{}", arch.suffix())));
            }
            candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../images/out{}", arch.suffix())));
        }
        for dir in &candidates {
            if let Some(img) = Self::in_dir(dir)? {
                if img.arch != arch {
                    return Err(SandboxError::BadPath(
                        dir.clone(),
                        format!("it holds the {} guest, and the {} guest is wanted (KILN_GUEST_ARCH selects one)", img.arch.name(), arch.name()),
                    ));
                }
                return Ok(img);
            }
        }
        let looked = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        Err(SandboxError::GuestMissing { looked, arch: arch.name() })
    }

    /// A short fingerprint of the kernel (size + mtime + path), for probe caches.
    pub fn fingerprint(&self) -> String {
        let meta = std::fs::metadata(&self.kernel).ok();
        let stamp = meta.map(|m| (m.len(), m.modified().ok())).unwrap_or_default();
        let text = format!("{}|{:?}", self.kernel.display(), stamp);
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_dirs_record_their_architecture() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(GuestImage::in_dir(dir.path()).expect("empty").is_none());
        std::fs::write(dir.path().join("kernel"), b"k").expect("kernel");
        std::fs::write(dir.path().join("initramfs.cpio"), b"i").expect("initrd");
        assert_eq!(GuestImage::in_dir(dir.path()).expect("ok").expect("image").arch, GuestArch::X86_64, "no manifest: x86_64");
        std::fs::write(dir.path().join("manifest.json"), br#"{"arch":"arm64"}"#).expect("manifest");
        assert_eq!(GuestImage::in_dir(dir.path()).expect("ok").expect("image").arch, GuestArch::Arm64);
        std::fs::write(dir.path().join("manifest.json"), br#"{"arch":"sparc"}"#).expect("manifest");
        assert!(GuestImage::in_dir(dir.path()).is_err());
        assert_eq!(GuestArch::parse("aarch64"), Some(GuestArch::Arm64));
        assert_eq!(GuestArch::parse("riscv64"), None);
    }
}
