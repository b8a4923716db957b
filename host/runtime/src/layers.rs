//! Layers in a guest: each layer is unpacked at most once per guest, into its own directory
//! (`/run/kiln/layers/<n>`), and served from there as an overlay lower dir to every build step
//! and container process that needs it. The upper dir of a finished step becomes the directory
//! of the layer it produced, so nothing is uploaded twice.
//!
//! Layers are read from the store through [`kiln_store::layer_read`] (plain, gzip or zstd).
//! This module never decides what runs: it only tracks and fills directories.

use std::collections::HashMap;
use std::fs::File;

use kiln_sandbox::AgentClient;
use kiln_store::{Digest, LayerInfo, StoreError};

use crate::RuntimeError;

/// The diff id of an empty tar (1024 zero bytes): a layer with nothing in it.
pub const EMPTY_LAYER_DIFF_ID: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// Whether `layer` holds nothing (it then needs no directory in the guest).
pub fn is_empty_layer(layer: &LayerInfo) -> bool {
    layer.diff_id.to_string() == EMPTY_LAYER_DIFF_ID
}

/// The layer directories of one guest.
#[derive(Debug, Default)]
pub struct GuestLayers {
    dirs: HashMap<Digest, String>,
    next: usize,
}

impl GuestLayers {
    /// A fresh, unused layer directory name (for an upload, or a step's upper dir).
    pub fn new_dir(&mut self) -> String {
        self.next += 1;
        format!("/run/kiln/layers/{}", self.next)
    }

    /// Records that `dir` (an upper dir whose diff is `digest`) holds that layer.
    pub fn adopt(&mut self, digest: Digest, dir: String) {
        self.dirs.entry(digest).or_insert(dir);
    }

    /// The guest directories of `layers` (bottom first, empty layers left out), uploading the
    /// ones the guest lacks; `announce` is told of each upload before it starts.
    pub fn upload(
        &mut self,
        agent: &AgentClient,
        open: &dyn Fn(&Digest) -> Result<File, StoreError>,
        layers: &[LayerInfo],
        announce: &mut dyn FnMut(&LayerInfo),
    ) -> Result<Vec<String>, RuntimeError> {
        let mut dirs = Vec::new();
        for layer in layers {
            if is_empty_layer(layer) {
                continue;
            }
            if let Some(d) = self.dirs.get(&layer.digest) {
                dirs.push(d.clone());
                continue;
            }
            let dir = self.new_dir();
            announce(layer);
            let mut tar = kiln_store::layer_read::open_layer_file(open(&layer.digest)?, &layer.digest, None)?;
            agent.receive_tar(&dir, &mut tar)?;
            self.dirs.insert(layer.digest.clone(), dir.clone());
            dirs.push(dir);
        }
        Ok(dirs)
    }
}
