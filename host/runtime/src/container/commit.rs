//! `kiln commit`: a container's writable layer (`rw.tar`, its overlay upper dir with
//! whiteouts, as saved when it stopped or on request while it runs) becomes one new layer on
//! its image, with a history entry. The layer goes through the store's one verification rule
//! on its way in, like every layer.

use std::fs::File;

use kiln_store::image::{History, RunConfig};
use kiln_store::{Digest, ImageRecord, LayerInfo, NewImage, Reference, Store};

use super::record::Container;
use crate::RuntimeError;

/// What `kiln commit` records besides the layer.
pub struct CommitOptions {
    /// The new image's config (the image's, with `--change`s applied).
    pub config: RunConfig,
    pub author: Option<String>,
    pub message: Option<String>,
    pub names: Vec<Reference>,
}

/// An empty layer tar: two zero blocks.
const EMPTY_TAR: [u8; 1024] = [0; 1024];

/// Stores the new image; returns its manifest digest.
pub fn commit(store: &Store, c: &Container, image: &ImageRecord, opts: CommitOptions) -> Result<Digest, RuntimeError> {
    let staging = store.staging()?;
    let rw = c.rw_layer();
    let layer = if rw.is_file() {
        let f = File::open(&rw).map_err(|e| RuntimeError::io(format!("opening {}", rw.display()), e))?;
        staging.store().ingest_layer(f)?
    } else {
        staging.store().ingest_layer(&EMPTY_TAR[..])?
    };
    let mut layers: Vec<LayerInfo> = image.layer_infos();
    layers.push(layer);
    let created = kiln_store::time::rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0));
    let mut history = image.config.history.clone();
    history.push(History { created: Some(created.clone()), created_by: Some(c.config.command_line()), comment: opts.message, empty_layer: false });
    let new = NewImage {
        layers,
        config: opts.config,
        history,
        created,
        architecture: image.config.architecture.clone(),
        os: image.config.os.clone(),
        author: opts.author,
        variant: image.config.extra.get("variant").and_then(|v| v.as_str()).map(str::to_string),
    };
    Ok(staging.commit(new, &opts.names)?)
}
