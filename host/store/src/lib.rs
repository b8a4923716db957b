//! kiln's content-addressed image store.
//!
//! Layout under the store root (`$KILN_ROOT`, else `$XDG_DATA_HOME/kiln`):
//! ```text
//! blobs/sha256/<hex>   immutable blobs: layers (tar; gzip from builds, as they came from loads),
//!                      image configs, manifests
//! ingest/              temp files being written; never read as blobs
//! refs.json            image name -> manifest digest
//! pins/                files other parts of kiln write to keep blobs alive (the build cache);
//!                      the store only reads the digests they mention
//! images/<hex>         one empty marker per image (manifest digest), named or not
//! lock                 advisory lock serialising writers of refs.json
//! ```
//! A blob appears under `blobs/` only after its bytes were hashed, fsync'd and renamed into place,
//! so a crash at any point leaves either no blob or a complete, verified one. This crate knows
//! nothing of builds or VMs: it stores what it is given, checking what it cannot trust.

pub mod archive;
mod archive_read;
pub mod catalog;
pub mod digest;
pub mod error;
pub mod expansion;
pub mod flatten;
pub mod fsck;
pub mod gc;
pub mod image;
pub mod index;
pub mod ingest;
pub mod layer;
pub mod layer_read;
pub mod layer_verify;
pub mod load;
pub mod platform;
pub mod reference;
pub mod refs;
pub mod resolve;
pub mod rootfs;
mod staging;
mod store;
pub mod time;
mod units;

pub use digest::Digest;
pub use error::StoreError;
pub use image::{ImageRecord, NewImage};
pub use index::{ImageEntry, IndexEntry, IndexRecord};
pub use layer::LayerInfo;
pub use platform::Platform;
pub use reference::Reference;
pub use staging::{StagedImage, Staging};
pub use store::{Store, StoreLock};
pub use units::{human_size, parse_size};
