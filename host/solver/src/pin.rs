//! What a running build uses stays in the store: the blobs of its base images and of the
//! cached layers it reuses are listed in a pin file (`pins/builds/<pid>-<start>-<n>`) that
//! garbage collection honours, so an `image prune -a` or `builder prune -a` racing the build
//! cannot take them from under it. The file goes when the build ends; one left by a killed
//! build (its process gone, or another process with its pid) is removed by the next build.
//!
//! This module must never remove the pin of a build that still runs.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use kiln_store::{Digest, Store};

use crate::BuildError;

pub struct BuildPin {
    path: PathBuf,
    digests: Mutex<BTreeSet<String>>,
}

fn this_process() -> String {
    let pid = std::process::id();
    let start = kiln_runtime::container::record::process_start(pid).unwrap_or(0);
    format!("{pid}-{start}")
}

/// Whether the pin file `name` (`<pid>-<start>-<n>`) belongs to a build that still runs.
fn alive(name: &str) -> bool {
    let mut parts = name.split('-');
    let (Some(pid), Some(start)) = (parts.next().and_then(|p| p.parse::<u32>().ok()), parts.next().and_then(|s| s.parse::<u64>().ok())) else {
        return false;
    };
    kiln_runtime::container::record::process_start(pid) == Some(start)
}

impl BuildPin {
    /// A new (empty) pin for a build on `store` (nothing is written until something is
    /// pinned); stale pins of killed builds are removed.
    pub fn new(store: &Store) -> Result<Self, BuildError> {
        let dir = store.pins_dir().join("builds");
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if !alive(&e.file_name().to_string_lossy()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Self { path: dir.join(format!("{}-{n}", this_process())), digests: Mutex::new(BTreeSet::new()) })
    }

    /// Adds `digests` to the pin (written before the caller goes on using them).
    pub fn add<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) -> Result<(), BuildError> {
        let mut all = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        let before = all.len();
        all.extend(digests.into_iter().map(Digest::to_string));
        if all.len() == before {
            return Ok(());
        }
        let text = all.iter().cloned().collect::<Vec<_>>().join("\n");
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(|e| BuildError::Invalid(format!("creating {}: {e}", dir.display())))?;
        }
        let tmp = self.path.with_extension("tmp");
        fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, &self.path)).map_err(|e| BuildError::Invalid(format!("pinning the build's images: {e}")))
    }
}

impl Drop for BuildPin {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
