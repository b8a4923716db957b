//! Manifests and indexes as registries serve them (Docker schema 2 and OCI), and choosing one
//! platform's manifest from an index. Pure; no I/O.

use serde::Deserialize;

use kiln_store::Digest;

use crate::RegistryError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header of a manifest request.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted from a registry.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn digest(&self) -> Result<Digest, RegistryError> {
        self.digest.parse().map_err(|_| RegistryError::Unsupported(format!("digest {:?} (only sha256 is supported)", self.digest)))
    }
}

pub use kiln_store::platform::Platform;

/// An image manifest (config and layers).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// A manifest document, parsed by its media type (the `Content-Type` or its `mediaType`).
#[derive(Debug, Clone)]
pub enum Document {
    Image(Manifest),
    Index(Index),
}

/// Parses a manifest document. `content_type` is the registry's `Content-Type`, if any.
pub fn parse(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<Document, RegistryError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| RegistryError::invalid(format!("{what}: not a valid manifest: {e}")))?;
    let ct = content_type.map(|c| c.split(';').next().unwrap_or(c).trim()).filter(|c| !c.is_empty() && *c != "application/json");
    let media = probe.media_type.as_deref().or(ct).unwrap_or(if probe.manifests.is_some() { OCI_INDEX } else { OCI_MANIFEST });
    if probe.schema_version == Some(1) || media == DOCKER_SCHEMA1 || media == "application/vnd.docker.distribution.manifest.v1+json" {
        return Err(RegistryError::Unsupported(format!("{what}: Docker image manifest schema 1 (deprecated); push it again with a current client")));
    }
    if probe.schema_version != Some(2) {
        return Err(RegistryError::invalid(format!("{what}: schemaVersion is not 2")));
    }
    match media {
        OCI_INDEX | DOCKER_LIST => serde_json::from_slice(bytes).map(Document::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => serde_json::from_slice(bytes).map(Document::Image),
        other => return Err(RegistryError::Unsupported(format!("{what}: manifest media type {other}"))),
    }
    .map_err(|e| RegistryError::invalid(format!("{what}: not a valid manifest: {e}")))
}

/// The index entry for `want`.
pub fn choose<'a>(index: &'a Index, want: &Platform, reference: &str) -> Result<&'a Descriptor, RegistryError> {
    let is_manifest = |d: &&Descriptor| d.media_type.as_deref().is_none_or(|m| m == OCI_MANIFEST || m == DOCKER_MANIFEST);
    index
        .manifests
        .iter()
        .filter(is_manifest)
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .ok_or_else(|| RegistryError::NoPlatform {
            platform: want.to_string(),
            reference: reference.to_string(),
            available: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":2,"platform":{"os":"linux","architecture":"amd64"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":3,"platform":{"os":"linux","architecture":"arm","variant":"v7"}}]}"#;

    fn index() -> Index {
        match parse(INDEX.as_bytes(), None, "t").expect("parse") {
            Document::Index(i) => i,
            Document::Image(_) => panic!("an index"),
        }
    }

    #[test]
    fn picks_the_platform_asked_for() {
        let i = index();
        let pick = |p: &str| choose(&i, &Platform::parse(p).expect("platform"), "x").map(|d| d.size);
        assert_eq!(pick("linux/amd64").expect("amd64"), 2);
        assert_eq!(pick("linux/arm64").expect("arm64"), 1);
        assert_eq!(pick("linux/arm64/v8").expect("arm64/v8"), 1);
        assert_eq!(pick("linux/arm/v7").expect("arm/v7"), 3);
        let err = pick("linux/s390x").expect_err("absent").to_string();
        assert!(err.contains("linux/arm64/v8, linux/amd64, linux/arm/v7"), "{err}");
        assert!(pick("linux/arm/v6").is_err());
    }

    #[test]
    fn refuses_schema1_and_unknown_types() {
        assert!(parse(br#"{"schemaVersion":1,"name":"x"}"#, None, "t").is_err());
        assert!(parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None, "t").is_err());
        assert!(parse(b"not json", None, "t").is_err());
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":2},"layers":[]}"#;
        assert!(matches!(parse(m, Some(DOCKER_MANIFEST), "t"), Ok(Document::Image(_))));
        assert!(Platform::parse("linux").is_err());
    }
}
