//! Image indexes: a multi-platform image is an OCI image index whose entries are the platform
//! manifests, each a complete image of its own. The store keeps an index as one image (one
//! marker, the names point at it); its platform manifests are not images of their own but are
//! kept alive through it. [`Store::entry`] says which of the two a digest is, and
//! [`Store::image_for`] picks the manifest that serves a platform. This module never fetches:
//! an index is recorded only when every manifest it lists is in the store.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::ImageRecord;
use crate::platform::Platform;
use crate::{Store, StoreError};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Most entries an index may have (real ones have a handful; each costs a manifest check).
pub const MAX_INDEX_ENTRIES: usize = 256;

/// One platform manifest of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub manifest: Digest,
    pub size: u64,
    pub platform: Platform,
}

/// A stored index, read back. `entries` lists its image manifests that name a platform, in
/// the index's order; other entries (attestations, nested indexes) are not images and are
/// left out.
#[derive(Debug, Clone)]
pub struct IndexRecord {
    pub digest: Digest,
    pub size: u64,
    pub entries: Vec<IndexEntry>,
}

impl IndexRecord {
    /// The entry serving `want`.
    pub fn choose(&self, want: &Platform) -> Option<&IndexEntry> {
        self.entries.iter().find(|e| want.matches(&e.platform))
    }

    /// The platforms it holds, as `a, b, c`.
    pub fn platform_list(&self) -> String {
        self.entries.iter().map(|e| e.platform.to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// What an image digest of the store names.
#[derive(Debug, Clone)]
pub enum ImageEntry {
    Image(Box<ImageRecord>),
    Index(IndexRecord),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIndex {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<RawDescriptor>,
}

/// Whether a stored JSON document is an index (its media type says so, or it lists manifests).
pub(crate) fn is_index(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(p) => matches!(p.media_type.as_deref(), Some(OCI_INDEX | DOCKER_LIST)) || (p.media_type.is_none() && p.manifests.is_some()),
        Err(_) => false,
    }
}

fn corrupt(digest: &Digest, why: impl ToString) -> StoreError {
    StoreError::Corrupt { what: "index", digest: digest.to_string(), why: why.to_string() }
}

/// The bytes of an OCI index listing `entries` (in that order).
pub fn encode_index(entries: &[IndexEntry]) -> Result<Vec<u8>, StoreError> {
    let raw = RawIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX.into()),
        manifests: entries
            .iter()
            .map(|e| RawDescriptor {
                media_type: Some(OCI_MANIFEST.into()),
                digest: e.manifest.to_string(),
                size: e.size,
                platform: Some(e.platform.clone()),
            })
            .collect(),
    };
    serde_json::to_vec(&raw).map_err(|e| StoreError::io("encoding an index", e.into()))
}

/// Parses an index document (already verified against `digest`).
pub fn decode_index(digest: &Digest, bytes: &[u8]) -> Result<IndexRecord, StoreError> {
    let raw: RawIndex = serde_json::from_slice(bytes).map_err(|e| corrupt(digest, e))?;
    if raw.schema_version != 2 {
        return Err(corrupt(digest, "schemaVersion is not 2"));
    }
    if raw.manifests.len() > MAX_INDEX_ENTRIES {
        return Err(corrupt(digest, format!("{} entries: more than {MAX_INDEX_ENTRIES}", raw.manifests.len())));
    }
    let mut entries: Vec<IndexEntry> = Vec::new();
    for d in raw.manifests {
        let is_manifest = d.media_type.as_deref().is_none_or(|m| m == OCI_MANIFEST || m == DOCKER_MANIFEST);
        // BuildKit's attestation manifests say `unknown/unknown`: not an image to run.
        let Some(platform) = d.platform.filter(|p| is_manifest && p.os != "unknown") else { continue };
        let manifest: Digest = d.digest.parse()?;
        if entries.iter().any(|e| e.platform == platform || e.manifest == manifest) {
            return Err(corrupt(digest, format!("{platform} or {manifest} is listed twice")));
        }
        entries.push(IndexEntry { manifest, size: d.size, platform });
    }
    Ok(IndexRecord { digest: digest.clone(), size: bytes.len() as u64, entries })
}

/// That `img` is an image of `platform` (os, architecture, and the variant when its config
/// records one).
pub fn check_platform(img: &ImageRecord, platform: &Platform) -> Result<(), StoreError> {
    config_platform_differs(&img.config, platform)
        .map_or(Ok(()), |have| Err(StoreError::Conflict(format!("manifest {} is a {have} image, not {platform}", img.manifest_digest))))
}

/// The platform an image config records, when it is not `platform` (os, architecture, and the
/// variant when both name one).
pub(crate) fn config_platform_differs(config: &crate::image::ImageConfig, platform: &Platform) -> Option<Platform> {
    let variant = config.extra.get("variant").and_then(|v| v.as_str());
    let variant_differs = variant.is_some() && platform.variant.is_some() && variant != platform.variant.as_deref();
    (config.os != platform.os || config.architecture != platform.architecture || variant_differs)
        .then(|| Platform { os: config.os.clone(), architecture: config.architecture.clone(), variant: variant.map(str::to_string) })
}

impl Store {
    /// Writes an index of `entries` (manifests the store holds, each of the platform it is
    /// listed with) and records it as an image. Returns its digest. Call it under the store
    /// lock, as [`Store::write_image`].
    pub fn write_index(&self, entries: &[IndexEntry]) -> Result<Digest, StoreError> {
        let digest = self.write_index_unrecorded(entries)?;
        self.record_image(&digest)?;
        Ok(digest)
    }

    /// [`Store::write_index`] without recording the image (a staging area's blob).
    pub fn write_index_unrecorded(&self, entries: &[IndexEntry]) -> Result<Digest, StoreError> {
        if entries.is_empty() {
            return Err(StoreError::Conflict("an index needs at least one manifest".into()));
        }
        for (i, e) in entries.iter().enumerate() {
            if entries[..i].iter().any(|o| o.platform == e.platform) {
                return Err(StoreError::Conflict(format!("platform {} is listed twice", e.platform)));
            }
            let img = self.image(&e.manifest)?;
            if img.manifest_size != e.size {
                return Err(corrupt(&e.manifest, "size differs from the manifest's"));
            }
            check_platform(&img, &e.platform)?;
        }
        self.write_blob(&encode_index(entries)?)
    }

    /// Reads the index `digest` names.
    pub fn index(&self, digest: &Digest) -> Result<IndexRecord, StoreError> {
        let bytes = self.read_blob(digest)?;
        if !is_index(&bytes) {
            return Err(corrupt(digest, "not an image index"));
        }
        decode_index(digest, &bytes)
    }

    /// Reads what an image digest names: a single-platform image or an index.
    pub fn entry(&self, digest: &Digest) -> Result<ImageEntry, StoreError> {
        let bytes = self.read_blob(digest)?;
        if is_index(&bytes) {
            return decode_index(digest, &bytes).map(ImageEntry::Index);
        }
        self.image(digest).map(|i| ImageEntry::Image(Box::new(i)))
    }

    /// Every image `digest` stands for: itself, or each platform image of an index (in the
    /// index's order). What gc, push, save and the build cache walk.
    pub fn platform_images(&self, digest: &Digest) -> Result<Vec<ImageRecord>, StoreError> {
        match self.entry(digest)? {
            ImageEntry::Image(img) => Ok(vec![*img]),
            ImageEntry::Index(index) => index.entries.iter().map(|e| self.image(&e.manifest)).collect(),
        }
    }

    /// The image `digest` names for `want` (default: this machine's platform). A
    /// single-platform image is itself whatever its platform (callers that care compare); an
    /// index yields the entry for the platform, or an error naming the platforms it has.
    pub fn image_for(&self, digest: &Digest, want: Option<&Platform>) -> Result<ImageRecord, StoreError> {
        match self.entry(digest)? {
            ImageEntry::Image(img) => Ok(*img),
            ImageEntry::Index(index) => {
                let host = Platform::host();
                let want = want.unwrap_or(&host);
                match index.choose(want) {
                    Some(e) => self.image(&e.manifest),
                    None => Err(StoreError::NoPlatform { platform: want.to_string(), available: index.platform_list() }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::make_image_for;

    #[test]
    fn indexes_round_trip_and_pick_platforms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let amd = make_image_for(&store, &["a"], None, "amd64");
        let arm = make_image_for(&store, &["b"], None, "arm64");
        let entry = |d: &Digest, p: &str| IndexEntry {
            manifest: d.clone(),
            size: store.image(d).expect("img").manifest_size,
            platform: Platform::parse(p).expect("platform"),
        };
        let index = store.write_index(&[entry(&amd, "linux/amd64"), entry(&arm, "linux/arm64")]).expect("index");
        let ImageEntry::Index(rec) = store.entry(&index).expect("entry") else { panic!("an index") };
        assert_eq!(rec.platform_list(), "linux/amd64, linux/arm64");
        let arm64 = Platform::parse("linux/arm64/v8").expect("p");
        assert_eq!(store.image_for(&index, Some(&arm64)).expect("arm64").manifest_digest, arm);
        assert_eq!(store.image_for(&amd, Some(&arm64)).expect("plain image").manifest_digest, amd);
        let s390x = Platform::parse("linux/s390x").expect("p");
        let err = store.image_for(&index, Some(&s390x)).expect_err("absent").to_string();
        assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
        assert!(matches!(store.entry(&amd), Ok(ImageEntry::Image(_))));
        // A manifest listed under the wrong platform, twice, or with the wrong size is refused.
        assert!(store.write_index(&[entry(&amd, "linux/arm64")]).is_err());
        assert!(store.write_index(&[entry(&amd, "linux/amd64"), entry(&amd, "linux/amd64")]).is_err());
        let mut wrong = entry(&amd, "linux/amd64");
        wrong.size += 1;
        assert!(store.write_index(&[wrong]).is_err());
        assert!(store.write_index(&[]).is_err());
    }

    #[test]
    fn hostile_index_documents_are_refused() {
        let d = Digest::of(b"x");
        let entry = |digest: &str, platform: &str| format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":1,"platform":{platform}}}"#);
        let doc = |entries: &[String]| format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#, entries.join(","));
        let (a, b) = (Digest::of(b"a").to_string(), Digest::of(b"b").to_string());
        let amd = r#"{"os":"linux","architecture":"amd64"}"#;
        let ok = doc(&[entry(&a, amd), entry(&b, r#"{"os":"linux","architecture":"arm64"}"#)]);
        assert_eq!(decode_index(&d, ok.as_bytes()).expect("fine").entries.len(), 2);
        // The same platform or manifest twice, too many entries, and platforms that are not.
        assert!(decode_index(&d, doc(&[entry(&a, amd), entry(&b, amd)]).as_bytes()).is_err());
        assert!(decode_index(&d, doc(&[entry(&a, amd), entry(&a, r#"{"os":"linux","architecture":"arm64"}"#)]).as_bytes()).is_err());
        let many: Vec<String> = (0..=MAX_INDEX_ENTRIES).map(|i| entry(&Digest::of(i.to_string().as_bytes()).to_string(), amd)).collect();
        assert!(decode_index(&d, doc(&many).as_bytes()).is_err());
        for bad in [r#"{"os":"linux","architecture":"amd64/x"}"#, r#"{"os":"linux[31m","architecture":"amd64"}"#, r#"{"os":"..","architecture":"amd64"}"#] {
            assert!(decode_index(&d, doc(&[entry(&a, bad)]).as_bytes()).is_err(), "{bad}");
        }
        // Attestations (unknown/unknown) are not images.
        let att = doc(&[entry(&a, amd), entry(&b, r#"{"os":"unknown","architecture":"unknown"}"#)]);
        assert_eq!(decode_index(&d, att.as_bytes()).expect("fine").entries.len(), 1);
    }
}
