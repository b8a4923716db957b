//! Image records: the image config (OCI + the Docker fields), the manifest, and writing both.
//!
//! The config struct is ours rather than oci-spec's because Docker images carry fields the OCI
//! spec lacks (Healthcheck, OnBuild, ArgsEscaped, Shell); unknown fields are kept verbatim so a
//! loaded image round-trips. Manifests use oci-spec's types.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::image::{DescriptorBuilder, ImageManifest, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::layer::LayerInfo;
use crate::layer_read::Compression;
use crate::{Reference, Store, StoreError};

type Extra = serde_json::Map<String, serde_json::Value>;

/// The runtime part of an image config (`config` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// The image config document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a builder hands the store to record a new image.
pub struct NewImage {
    pub layers: Vec<LayerInfo>,
    pub config: RunConfig,
    pub history: Vec<History>,
    /// RFC 3339 creation time.
    pub created: String,
    pub architecture: String,
    pub os: String,
    /// The image's `author` (Dockerfile `MAINTAINER`).
    pub author: Option<String>,
    /// The platform's variant (`v7` of linux/arm/v7), if it has one.
    pub variant: Option<String>,
}

/// A stored image, read back.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub manifest_size: u64,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Layer blob digests, bottom first.
    pub layers: Vec<Digest>,
}

impl ImageRecord {
    /// The image's layers (bottom first) with their diff ids and sizes, as builds and
    /// containers stack them.
    pub fn layer_infos(&self) -> Vec<LayerInfo> {
        let sizes = self.manifest.layers().iter().map(|d| d.size());
        self.layers
            .iter()
            .zip(&self.config.rootfs.diff_ids)
            .zip(sizes)
            .map(|((digest, diff_id), size)| LayerInfo { digest: digest.clone(), diff_id: diff_id.clone(), size })
            .collect()
    }
}

fn corrupt(what: &'static str, digest: &Digest, why: impl ToString) -> StoreError {
    StoreError::Corrupt { what, digest: digest.to_string(), why: why.to_string() }
}

fn descriptor(media: MediaType, digest: &Digest, size: u64) -> Result<oci_spec::image::Descriptor, StoreError> {
    let d = oci_spec::image::Digest::from_str(&digest.to_string()).map_err(|e| corrupt("descriptor", digest, e))?;
    DescriptorBuilder::default()
        .media_type(media)
        .digest(d)
        .size(size)
        .build()
        .map_err(|e| corrupt("descriptor", digest, e))
}

impl Store {
    /// Writes config and manifest for `image`, records it as an image, and returns the manifest
    /// digest. Names are set separately ([`Store::set_ref`]) so a failure here leaves only
    /// unreferenced blobs. Call it under the store lock (as [`crate::Staging::commit`] does):
    /// garbage collection could otherwise take the new blobs before the image is recorded.
    pub fn write_image(&self, image: NewImage) -> Result<Digest, StoreError> {
        let digest = self.write_image_unrecorded(image)?;
        self.record_image(&digest)?;
        Ok(digest)
    }

    /// [`Store::write_image`] without recording the image: a platform image of an index.
    pub(crate) fn write_image_unrecorded(&self, image: NewImage) -> Result<Digest, StoreError> {
        let config = ImageConfig {
            created: Some(image.created),
            architecture: image.architecture,
            os: image.os,
            config: image.config,
            rootfs: RootFs { kind: "layers".into(), diff_ids: image.layers.iter().map(|l| l.diff_id.clone()).collect() },
            history: image.history,
            extra: image
                .author
                .map(|a| ("author".to_string(), serde_json::Value::String(a)))
                .into_iter()
                .chain(image.variant.map(|v| ("variant".to_string(), serde_json::Value::String(v))))
                .collect(),
        };
        let config_bytes = serde_json::to_vec(&config).map_err(|e| StoreError::io("encoding config", e.into()))?;
        let config_digest = self.write_blob(&config_bytes)?;
        let mut layers = Vec::new();
        for l in &image.layers {
            if !self.has_blob(&l.digest) {
                return Err(StoreError::MissingBlob(l.digest.to_string()));
            }
            // Base layers keep what they are (a docker-archive's plain tars, a pull's zstd):
            // the media type says what the blob holds, judged by its content.
            let media = match self.layer_compression(&l.digest)? {
                Compression::None => MediaType::ImageLayer,
                Compression::Gzip => MediaType::ImageLayerGzip,
                Compression::Zstd => MediaType::ImageLayerZstd,
            };
            layers.push(descriptor(media, &l.digest, l.size)?);
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, &config_digest, config_bytes.len() as u64)?)
            .layers(layers)
            .build()
            .map_err(|e| corrupt("manifest", &config_digest, e))?;
        let bytes = serde_json::to_vec(&manifest).map_err(|e| StoreError::io("encoding manifest", e.into()))?;
        self.write_blob(&bytes)
    }

    /// Reads the image a manifest digest names, checking every document's digest.
    pub fn image(&self, manifest_digest: &Digest) -> Result<ImageRecord, StoreError> {
        let bytes = self.read_blob(manifest_digest)?;
        if crate::index::is_index(&bytes) {
            return Err(StoreError::IsIndex(manifest_digest.to_string()));
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| corrupt("manifest", manifest_digest, e))?;
        let config_digest: Digest = manifest.config().digest().to_string().parse()?;
        let config_bytes = self.read_blob(&config_digest)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| corrupt("image config", &config_digest, e))?;
        let layers = manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string().parse::<Digest>())
            .collect::<Result<Vec<_>, _>>()?;
        if layers.len() != config.rootfs.diff_ids.len() {
            return Err(corrupt("manifest", manifest_digest, "layer count differs from the config's diff_ids"));
        }
        Ok(ImageRecord {
            manifest_digest: manifest_digest.clone(),
            manifest,
            manifest_size: bytes.len() as u64,
            config_digest,
            config,
            layers,
        })
    }

    /// Looks an image up by name.
    pub fn image_by_name(&self, name: &str) -> Result<(Reference, ImageRecord), StoreError> {
        let (reference, digest) = self.resolve(name)?;
        Ok((reference, self.image(&digest)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_round_trips_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_cksum();
        tar.append_data(&mut h, "f", &b"hi"[..]).expect("append");
        let layer = store.ingest_layer(tar.into_inner().expect("tar").as_slice()).expect("layer");
        let digest = store
            .write_image(NewImage {
                layers: vec![layer.clone()],
                config: RunConfig { cmd: Some(vec!["/bin/sh".into()]), ..Default::default() },
                history: vec![History { created_by: Some("COPY f /".into()), ..Default::default() }],
                created: "2026-01-01T00:00:00Z".into(),
                architecture: "amd64".into(),
                os: "linux".into(),
            author: None,
            variant: None,

            })
            .expect("write");
        let name: Reference = "app".parse().expect("ref");
        store.set_ref(&name, &digest).expect("tag");
        let (_, img) = store.image_by_name("app:latest").expect("read");
        assert_eq!(img.layers, vec![layer.digest]);
        assert_eq!(img.config.rootfs.diff_ids, vec![layer.diff_id]);
        assert_eq!(img.config.config.cmd, Some(vec!["/bin/sh".to_string()]));
        assert!(matches!(store.image_by_name("other"), Err(StoreError::NoSuchImage(_))));
    }
}
