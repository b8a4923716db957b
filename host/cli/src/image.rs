//! `kiln image <command>`: Docker's `docker image ...` group, the same commands as the top-level
//! ones (`images`, `rmi`, `inspect`, `load`, ...) under their `image` names.

use std::path::Path;

use anyhow::Result;
use clap::Subcommand;

use crate::{history, images, import, inspect, load, prune, rmi, save, tag};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images
    #[command(visible_alias = "list", alias = "images")]
    Ls(images::ImagesArgs),
    /// Remove images
    #[command(visible_alias = "remove", alias = "rmi")]
    Rm(rmi::RmiArgs),
    /// Remove dangling (or, with -a, all) images and reclaim their space
    Prune(prune::PruneArgs),
    /// Show details of images as JSON
    Inspect(inspect::InspectArgs),
    /// Show the history of an image
    History(history::HistoryArgs),
    /// Give an image another name
    Tag(tag::TagArgs),
    /// Load images from a docker-archive or OCI archive
    Load(load::LoadArgs),
    /// Save images to a tar archive
    Save(save::SaveArgs),
    /// Create a one-layer image from a root filesystem tarball
    Import(import::ImportArgs),
}

pub fn run(root: &Path, cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Ls(a) => images::run(root, a),
        ImageCommand::Rm(a) => rmi::run(root, a),
        ImageCommand::Prune(a) => prune::run(root, a),
        ImageCommand::Inspect(a) => inspect::run(root, a),
        ImageCommand::History(a) => history::run(root, a),
        ImageCommand::Tag(a) => tag::run(root, a),
        ImageCommand::Load(a) => load::run(root, a),
        ImageCommand::Save(a) => save::run(root, a),
        ImageCommand::Import(a) => import::run(root, a),
    }
}
