//! The name index: `refs.json` maps full image names to manifest digests.
//!
//! Changed only under the store lock and replaced atomically, so readers never see a torn file.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use crate::digest::Digest;
use crate::ingest::write_atomic;
use crate::store::StoreLock;
use crate::{Reference, Store, StoreError};

/// Name -> manifest digest (both as strings, validated on load).
pub type RefMap = BTreeMap<String, Digest>;

impl Store {
    /// All names in the store.
    pub fn refs(&self) -> Result<RefMap, StoreError> {
        let path = self.root().join("refs.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RefMap::new()),
            Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
        };
        let raw: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: "name index",
            digest: path.display().to_string(),
            why: e.to_string(),
        })?;
        raw.into_iter().map(|(k, v)| Ok((k, v.parse()?))).collect()
    }

    /// Points `name` at `manifest` (taking the store lock).
    pub fn set_ref(&self, name: &Reference, manifest: &Digest) -> Result<(), StoreError> {
        let lock = self.lock()?;
        self.set_ref_locked(&lock, name, manifest)
    }

    /// Points `name` at `manifest` while the caller holds the store lock.
    pub(crate) fn set_ref_locked(&self, _lock: &StoreLock, name: &Reference, manifest: &Digest) -> Result<(), StoreError> {
        let mut refs = self.refs()?;
        refs.insert(name.to_string(), manifest.clone());
        self.write_refs(&refs)
    }

    /// The manifest digest an image name points at.
    pub fn resolve(&self, name: &str) -> Result<(Reference, Digest), StoreError> {
        let reference: Reference = name.parse()?;
        let refs = self.refs()?;
        match refs.get(&reference.to_string()) {
            Some(d) => Ok((reference, d.clone())),
            None => Err(StoreError::NoSuchImage(name.to_string())),
        }
    }

    pub(crate) fn write_refs(&self, refs: &RefMap) -> Result<(), StoreError> {
        let raw: BTreeMap<&String, String> = refs.iter().map(|(k, v)| (k, v.to_string())).collect();
        let bytes = serde_json::to_vec_pretty(&raw).map_err(|e| StoreError::io("encoding refs", e.into()))?;
        write_atomic(&self.root().join("refs.json"), &bytes)
    }
}
