//! Finding the guest boot image (kernel + initramfs with the agent as /init).
//!
//! Looked for, in order: `$KILN_GUEST_DIR`; `<exe dir>/../share/kiln/guest` (an installed
//! kiln); `images/out` of the workspace this binary was built from (a developer checkout).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::SandboxError;

/// The files that make up the guest.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// A guest image in `dir` (`kernel` + `initramfs.cpio`), if both files are there.
    pub fn in_dir(dir: &Path) -> Option<Self> {
        let kernel = dir.join("kernel");
        let initrd = dir.join("initramfs.cpio");
        (kernel.is_file() && initrd.is_file()).then_some(Self { kernel, initrd })
    }

    /// Finds the guest image, or says where it looked.
    pub fn locate() -> Result<Self, SandboxError> {
        let mut candidates = Vec::new();
        if let Some(dir) = std::env::var_os("KILN_GUEST_DIR") {
            candidates.push(PathBuf::from(dir));
        } else {
            if let Some(exe_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
                candidates.push(exe_dir.join("../share/kiln/guest"));
            }
            candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/out"));
        }
        for dir in &candidates {
            if let Some(img) = Self::in_dir(dir) {
                return Ok(img);
            }
        }
        let looked = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        Err(SandboxError::GuestMissing { looked })
    }

    /// A short fingerprint of the kernel (size + mtime + path), for probe caches.
    pub fn fingerprint(&self) -> String {
        let meta = std::fs::metadata(&self.kernel).ok();
        let stamp = meta.map(|m| (m.len(), m.modified().ok())).unwrap_or_default();
        let text = format!("{}|{:?}", self.kernel.display(), stamp);
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }
}
