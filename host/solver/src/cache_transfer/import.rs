//! Importing a build cache into the store: fetch, check, then commit (see [`super`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use kiln_store::layer_verify::check_layer;
use kiln_store::{Digest, LayerInfo, Staging, Store, StoreError};

use super::{invalid, parse_config, parse_manifest, Descriptor, TransferError};
use crate::cache::{CacheIndex, Cached};

/// Where a cache comes from: a layout directory, a registry.
pub trait CacheSource {
    /// What it is, for messages.
    fn name(&self) -> String;
    /// The cache manifest, as stored (at most [`super::MAX_MANIFEST_BYTES`]).
    fn manifest(&self) -> Result<Vec<u8>, TransferError>;
    /// Copies blob `digest`, of `size` bytes, into `into` (a private staging store) through
    /// the store's ingest, refusing any other size or digest.
    fn fetch(&self, digest: &Digest, size: u64, into: &Store) -> Result<(), TransferError>;
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Imported {
    /// Records added to the store's cache.
    pub added: usize,
    /// Records the store had already (kept as they were).
    pub present: usize,
    /// Layer blobs copied into the store, and their bytes.
    pub fetched: usize,
    pub bytes: u64,
    /// Layers refused, each with why; the records that needed them were skipped.
    pub warnings: Vec<String>,
}

/// Imports the cache `source` holds into `store`. An error means nothing was imported (the
/// source is missing or not a valid cache); a layer that fails its checks only skips the
/// records that need it (see [`Imported::warnings`]).
pub fn import(store: &Store, source: &dyn CacheSource) -> Result<Imported, TransferError> {
    let name = source.name();
    let manifest = parse_manifest(&source.manifest()?)?;
    let staging = store.staging()?;
    source.fetch(&manifest.config.digest, manifest.config.size, staging.store())?;
    // Read back through the store: size-capped and digest-checked again.
    let config = staging.store().read_blob(&manifest.config.digest)?;
    if config.len() as u64 != manifest.config.size {
        return Err(invalid(format!("the cache config has {} bytes, its descriptor says {}", config.len(), manifest.config.size)));
    }
    let (records, diff_ids) = parse_config(&config, &manifest)?;

    let cache = CacheIndex::new(store);
    let mut report = Imported::default();
    let mut new = Vec::new();
    for (key, layer) in records {
        if cache.peek(&key).is_some() {
            report.present += 1;
        } else {
            new.push((key, layer));
        }
    }
    // Each layer the new records need, checked once: Ok(whether it was fetched) or why not.
    let needed: BTreeSet<usize> = new.iter().filter_map(|(_, l)| *l).collect();
    let mut verdicts = BTreeMap::new();
    for i in needed {
        let desc = &manifest.layers[i];
        let verdict = fetch_layer(store, &staging, source, desc, &diff_ids[i]);
        match &verdict {
            Ok(true) => {
                report.fetched += 1;
                report.bytes += desc.size;
            }
            Ok(false) => {}
            Err(e) => {
                let users = new.iter().filter(|(_, l)| *l == Some(i)).count();
                report.warnings.push(format!("layer {} from {name} rejected: {e}; skipping the {users} cache record(s) that need it", desc.digest));
            }
        }
        verdicts.insert(i, verdict.is_ok());
    }

    // Commit under the store lock, so garbage collection never sees a moved blob unpinned.
    let _lock = store.lock()?;
    let mut moved = false;
    for (i, ok) in &verdicts {
        let digest = &manifest.layers[*i].digest;
        if *ok && !store.has_blob(digest) {
            move_blob(&staging, store, digest)?;
            moved = true;
        }
    }
    if moved {
        sync_parent(&store.blob_path(&manifest.config.digest))?;
    }
    for (key, layer) in &new {
        let result = match layer {
            None => Cached::Empty,
            Some(i) if verdicts.get(i) == Some(&true) => {
                let desc = &manifest.layers[*i];
                Cached::Layer(LayerInfo { digest: desc.digest.clone(), diff_id: diff_ids[*i].clone(), size: desc.size })
            }
            Some(_) => continue,
        };
        cache.put(key, &result).map_err(|e| TransferError::io("recording an imported cache entry", e))?;
        report.added += 1;
    }
    Ok(report)
}

/// Gets one layer into staging (unless the store has it) and checks it: digest, size, every
/// entry, diff id and compression. Returns whether it was fetched.
fn fetch_layer(store: &Store, staging: &Staging, source: &dyn CacheSource, desc: &Descriptor, diff_id: &Digest) -> Result<bool, TransferError> {
    let fetched = !store.has_blob(&desc.digest);
    let file = if fetched {
        source.fetch(&desc.digest, desc.size, staging.store())?;
        staging.store().open_blob(&desc.digest)?
    } else {
        store.open_blob(&desc.digest)?
    };
    let checked = check_layer(file).map_err(|e| match e {
        StoreError::HostileLayer(why) => invalid(why),
        other => other.into(),
    })?;
    if checked.digest != desc.digest || checked.size != desc.size {
        return Err(invalid(format!("its content is {} ({} bytes), not {} bytes", checked.digest, checked.size, desc.size)));
    }
    if checked.diff_id != *diff_id {
        return Err(invalid(format!("its diff id is {}, the cache says {diff_id}", checked.diff_id)));
    }
    checked.compression.check_declared(&desc.media_type).map_err(|e| invalid(e.to_string()))?;
    Ok(fetched)
}

/// Moves a checked blob from staging into the store (same filesystem: a rename), as a staging
/// commit does.
fn move_blob(staging: &Staging, store: &Store, digest: &Digest) -> Result<(), TransferError> {
    let from = staging.store().blob_path(digest);
    fs::rename(&from, store.blob_path(digest)).map_err(|e| TransferError::io(format!("moving blob {digest} into the store"), e))
}

/// fsyncs the directory holding `path`, so renames into it survive a crash.
fn sync_parent(path: &std::path::Path) -> Result<(), TransferError> {
    let Some(dir) = path.parent() else { return Ok(()) };
    kiln_sys::fs::sync_dir(dir).map_err(|e| TransferError::io(format!("syncing {}", dir.display()), e))
}
