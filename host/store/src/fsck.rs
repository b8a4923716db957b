//! `system check`: verifying the whole store — every blob against its digest, every name and
//! image against the blobs it needs — and, only when asked, repairing what can be repaired.
//!
//! Repair never invents data: it removes what is wrong (a blob whose bytes do not match its
//! name, a stray file among the blobs, a name or image record whose blobs are missing or
//! corrupt) so the rest of the store is usable and trustworthy again. Unreferenced blobs are not
//! a problem (`image prune` collects them). Runs under the store lock.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;

use crate::digest::{Digest, HashingWriter};
use crate::error::IoContext;
use crate::gc::STALE_INGEST_AGE;
use crate::{Reference, Store, StoreError};

/// One thing wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A blob whose content does not hash to its name.
    CorruptBlob { digest: Digest, actual: Digest },
    /// A file under `blobs/` or `images/` that is not named by a digest, or not a file.
    StrayFile(PathBuf),
    /// A name that is not a valid reference.
    BadName { name: String, why: String },
    /// An image whose manifest, config or layers are missing, unreadable or corrupt.
    BrokenImage { manifest: Digest, names: Vec<String>, why: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CorruptBlob { digest, actual } => write!(f, "blob {digest} is corrupt: its content hashes to {actual}"),
            Self::StrayFile(p) => write!(f, "stray file {}", p.display()),
            Self::BadName { name, why } => write!(f, "name {name:?} is invalid: {why}"),
            Self::BrokenImage { manifest, names, why } => {
                write!(f, "image {manifest}")?;
                if !names.is_empty() {
                    write!(f, " ({})", names.join(", "))?;
                }
                write!(f, " is broken: {why}")
            }
        }
    }
}

/// What a check found and, with repair, did.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub blobs: usize,
    pub images: usize,
    pub names: usize,
    pub problems: Vec<Problem>,
    /// Whether the problems were repaired.
    pub repaired: bool,
    /// Stale temp entries removed from `ingest/` (repair only).
    pub stale_ingest: usize,
}

fn hash_file(path: &std::path::Path) -> io::Result<Digest> {
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut File::open(path)?, &mut w)?;
    Ok(w.finish().0)
}

fn remove(path: &std::path::Path) -> Result<(), StoreError> {
    let meta = fs::symlink_metadata(path).ctx(|| format!("inspecting {}", path.display()))?;
    let r = if meta.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    r.ctx(|| format!("removing {}", path.display()))
}

impl Store {
    /// Checks every blob, name and image; with `repair`, removes what is wrong.
    pub fn check(&self, repair: bool) -> Result<CheckReport, StoreError> {
        let lock = self.lock()?;
        let mut report = CheckReport { repaired: repair, ..Default::default() };
        let mut to_remove = Vec::new();
        let blobs = self.blobs_dir();
        for entry in fs::read_dir(&blobs).ctx(|| format!("listing {}", blobs.display()))? {
            let entry = entry.ctx(|| format!("listing {}", blobs.display()))?;
            let path = entry.path();
            let named = format!("sha256:{}", entry.file_name().to_string_lossy()).parse::<Digest>();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            match named {
                Ok(digest) if is_file => {
                    report.blobs += 1;
                    let actual = hash_file(&path).ctx(|| format!("reading blob {digest}"))?;
                    if actual != digest {
                        report.problems.push(Problem::CorruptBlob { digest, actual });
                        to_remove.push(path);
                    }
                }
                _ => {
                    report.problems.push(Problem::StrayFile(path.clone()));
                    to_remove.push(path);
                }
            }
        }
        let markers = self.images_dir();
        for entry in fs::read_dir(&markers).ctx(|| format!("listing {}", markers.display()))? {
            let entry = entry.ctx(|| format!("listing {}", markers.display()))?;
            if format!("sha256:{}", entry.file_name().to_string_lossy()).parse::<Digest>().is_err() {
                report.problems.push(Problem::StrayFile(entry.path()));
                to_remove.push(entry.path());
            }
        }
        let mut refs = self.refs()?;
        report.names = refs.len();
        let mut bad_names = Vec::new();
        for name in refs.keys() {
            if let Err(e) = name.parse::<Reference>() {
                report.problems.push(Problem::BadName { name: name.clone(), why: e.to_string() });
                bad_names.push(name.clone());
            }
        }
        let corrupt: Vec<Digest> = report
            .problems
            .iter()
            .filter_map(|p| match p {
                Problem::CorruptBlob { digest, .. } => Some(digest.clone()),
                _ => None,
            })
            .collect();
        let mut broken = Vec::new();
        for manifest in self.image_digests()? {
            report.images += 1;
            // An index is broken when any of its platform images is.
            let why = match self.platform_images(&manifest) {
                Err(e) => Some(e.to_string()),
                Ok(images) => images
                    .iter()
                    .flat_map(|img| &img.layers)
                    .find(|l| !self.has_blob(l) || corrupt.contains(l))
                    .map(|l| format!("layer {l} is missing or corrupt")),
            };
            if let Some(why) = why {
                let names = refs.iter().filter(|(_, d)| **d == manifest).map(|(n, _)| n.clone()).collect();
                report.problems.push(Problem::BrokenImage { manifest: manifest.clone(), names, why });
                broken.push(manifest);
            }
        }
        if repair && !report.problems.is_empty() {
            for path in &to_remove {
                remove(path)?;
            }
            refs.retain(|name, d| !bad_names.contains(name) && !broken.contains(d));
            self.write_refs(&refs)?;
            for manifest in &broken {
                self.forget_image(&lock, manifest)?;
            }
        }
        if repair {
            report.stale_ingest = self.clean_stale_ingest(STALE_INGEST_AGE)?.0;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::make_image;

    #[test]
    fn finds_corruption_and_repairs_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let good = make_image(&store, &["a"], Some("good"));
        let bad = make_image(&store, &["b"], Some("bad"));
        assert!(store.check(false).expect("check").problems.is_empty());
        let layer = store.image(&bad).expect("image").layers[0].clone();
        fs::write(store.blob_path(&layer), b"bit rot").expect("corrupt");
        fs::write(store.blobs_dir().join("junk"), b"x").expect("stray");
        let report = store.check(false).expect("check");
        assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
        assert!(store.blob_path(&layer).exists(), "a plain check changes nothing");
        let report = store.check(true).expect("repair");
        assert_eq!(report.problems.len(), 3);
        assert!(store.check(false).expect("check").problems.is_empty(), "repaired");
        assert!(store.image_by_name("good").is_ok() && store.image(&good).is_ok());
        assert!(store.image_by_name("bad").is_err());
    }
}
