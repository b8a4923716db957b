//! What a running build uses stays in the store: the blobs of its base images and of the
//! cached layers it reuses are listed in a pin file (`pins/builds/<pid>-<start>-<n>`) that
//! garbage collection honours, so an `image prune -a` or `builder prune -a` racing the build
//! cannot take them from under it. A pin is written under the store's lock, which garbage
//! collection holds from deciding what is live to deleting, and what it pins is then checked
//! to be present: a prune that ran between the build's lookup and its pin is seen, never
//! raced. The file goes when the build ends; one left by a killed build (its process gone, or
//! another process with its pid) is removed by the next build.
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

    /// Adds `digests` to the pin (written before the caller goes on using them, under the
    /// store's lock) and says whether all of them are in the store: one a concurrent prune took
    /// before the pin was written is gone, and the caller must treat it as never found.
    pub fn add<'a>(&self, store: &Store, digests: impl IntoIterator<Item = &'a Digest>) -> Result<bool, BuildError> {
        let digests: Vec<&Digest> = digests.into_iter().collect();
        let _lock = store.lock()?;
        self.write(&digests)?;
        Ok(digests.iter().all(|d| store.has_blob(d)))
    }

    fn write(&self, digests: &[&Digest]) -> Result<(), BuildError> {
        let mut all = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        let before = all.len();
        all.extend(digests.iter().map(|d| d.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_says_whether_what_it_pins_is_still_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let kept = store.write_blob(b"kept").expect("blob");
        let gone = store.write_blob(b"pruned before the pin").expect("blob");
        // A prune that ran between the build's lookup and its pin: the blob is gone.
        let lock = store.lock().expect("lock");
        let report = store.collect_garbage(&lock).expect("gc");
        drop(lock);
        assert!(!store.has_blob(&gone) && !store.has_blob(&kept), "nothing pinned yet: {report:?}");
        let kept = store.write_blob(b"kept").expect("blob");
        let pin = BuildPin::new(&store).expect("pin");
        assert!(pin.add(&store, [&kept]).expect("add"), "a present blob is pinned and reported present");
        assert!(!pin.add(&store, [&gone]).expect("add"), "a pruned blob is reported gone, never used");
        // Pinned blobs survive the next collection.
        let lock = store.lock().expect("lock");
        store.collect_garbage(&lock).expect("gc");
        assert!(store.has_blob(&kept));
    }
}
