//! Loading image archives: docker-archive (`manifest.json`, the old layout with `<id>/layer.tar`
//! and the new one with an OCI layout inside) and OCI archives (`index.json`).
//!
//! Blobs are kept byte-identical — layers are not recompressed — so manifest, config and layer
//! digests stay what the archive's writer (skopeo, Docker, kiln) recorded. Everything is
//! verified before anything reaches the store: blob digests and sizes against their
//! descriptors, that manifests name configs that exist, that every layer's diff id matches the
//! config's `rootfs.diff_ids`, and every layer entry (see [`crate::layer_verify`]). All of it
//! happens in a staging area; only a fully verified archive is committed, under the store lock.
//! A docker-archive carries no manifest, so one (OCI) is written for it.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;
use serde_json::json;

use crate::archive_read::{read_members, Member, Members};
use crate::digest::Digest;
use crate::image::ImageConfig;
use crate::layer_read::{Compression, DeclaredMismatch};
use crate::layer_verify::check_layer;
use crate::{Reference, StagedImage, Staging, Store, StoreError};

/// One image an archive held.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub manifest: Digest,
    /// The image id.
    pub config: Digest,
    pub names: Vec<Reference>,
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

fn bad(why: impl Into<String>) -> StoreError {
    StoreError::BadArchive(why.into())
}

fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("{what} is not valid: {e}")))
}

struct Loader<'a> {
    staging: &'a Staging,
    members: Members,
}

impl Loader<'_> {
    fn stage(&self) -> &Store {
        self.staging.store()
    }

    fn read_member(&self, member: &Member) -> Result<Vec<u8>, StoreError> {
        self.stage().read_blob(&member.digest)
    }

    /// The OCI layout blob a descriptor names, its digest and size checked.
    fn blob(&self, d: &Descriptor) -> Result<(Digest, &Member), StoreError> {
        let digest: Digest = d.digest.parse().map_err(|_| bad(format!("unsupported or invalid digest {:?}", d.digest)))?;
        let member = self.members.get(&format!("blobs/sha256/{}", digest.hex()))?;
        if member.digest != digest {
            return Err(StoreError::DigestMismatch { expected: digest.to_string(), actual: member.digest.to_string() });
        }
        if member.size != d.size {
            return Err(bad(format!("blob {digest} is {} bytes, its descriptor says {}", member.size, d.size)));
        }
        Ok((digest, member))
    }

    /// Checks the layers against the config's diff ids; returns (digest, size, compression).
    fn check_layers(&self, config: &ImageConfig, layers: &[(&Member, Option<&str>)]) -> Result<Vec<(Digest, u64, Compression)>, StoreError> {
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != layers.len() {
            return Err(bad(format!("the config lists {} layers, the manifest {}", diff_ids.len(), layers.len())));
        }
        let mut out = Vec::new();
        for ((member, media), want) in layers.iter().zip(diff_ids) {
            let file = self.stage().open_blob(&member.digest)?;
            let checked = check_layer(file).map_err(|e| match e {
                StoreError::HostileLayer(why) => StoreError::HostileLayer(format!("layer {}: {why}", member.digest)),
                other => other,
            })?;
            if checked.diff_id != *want {
                return Err(bad(format!("layer {} has diff id {}, the config says {want}", member.digest, checked.diff_id)));
            }
            if let Some(media) = media {
                match checked.compression.check_declared(media) {
                    Ok(()) => {}
                    Err(DeclaredMismatch::NotALayer(_)) => return Err(StoreError::Unsupported(format!("layer media type {media}"))),
                    Err(e) => return Err(bad(format!("layer {}: {e}", member.digest))),
                }
            }
            out.push((checked.digest, checked.size, checked.compression));
        }
        Ok(out)
    }

    fn config(&self, member: &Member) -> Result<ImageConfig, StoreError> {
        let bytes = self.read_member(member)?;
        parse_json(&bytes, &format!("image config {}", member.digest))
    }

    /// Images of a docker-archive's `manifest.json`; a manifest is written for each.
    fn docker(&self) -> Result<Vec<StagedImage>, StoreError> {
        let bytes = self.read_member(self.members.get("manifest.json")?)?;
        let entries: Vec<DockerEntry> = parse_json(&bytes, "manifest.json")?;
        let mut out = Vec::new();
        for e in entries {
            let config_member = self.members.get(&e.config)?;
            let config = self.config(config_member)?;
            let layer_members = e.layers.iter().map(|l| Ok((self.members.get(l)?, None))).collect::<Result<Vec<_>, StoreError>>()?;
            let layers = self.check_layers(&config, &layer_members)?;
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_member.digest.to_string(),
                    "size": config_member.size,
                },
                "layers": layers.iter().map(|(d, size, c)| json!({
                    "mediaType": c.oci_media_type(), "digest": d.to_string(), "size": size,
                })).collect::<Vec<_>>(),
            });
            let bytes = serde_json::to_vec(&manifest).map_err(|e| StoreError::io("encoding a manifest", e.into()))?;
            let manifest = self.stage().write_blob(&bytes)?;
            let names = e.repo_tags.unwrap_or_default().iter().map(|t| parse_name(t)).collect::<Result<_, _>>()?;
            let blobs = std::iter::once(config_member.digest.clone()).chain(layers.into_iter().map(|l| l.0)).collect();
            out.push(StagedImage { manifest, blobs, names });
        }
        Ok(out)
    }

    /// Images an OCI `index.json` lists. An index it lists is one multi-platform image: its
    /// platform manifests are loaded as its parts, not as images of their own (entries without
    /// a platform, such as BuildKit's attestations, are left out).
    fn oci(&self, index: &Index, out: &mut Vec<StagedImage>) -> Result<(), StoreError> {
        for d in &index.manifests {
            let (digest, member) = self.blob(d)?;
            let bytes = self.read_member(member)?;
            let names = names_of(d)?;
            let media = d.media_type.as_deref().unwrap_or_default();
            if media != OCI_INDEX && media != DOCKER_LIST {
                out.push(self.manifest(&digest, &bytes, names)?);
                continue;
            }
            let inner: Index = parse_json(&bytes, &format!("index {digest}"))?;
            let record = crate::index::decode_index(&digest, &bytes).map_err(|e| bad(e.to_string()))?;
            if record.entries.is_empty() {
                return Err(bad(format!("index {digest} lists no image of any platform")));
            }
            let mut blobs = Vec::new();
            for entry in &record.entries {
                let desc = inner
                    .manifests
                    .iter()
                    .find(|m| m.digest == entry.manifest.to_string())
                    .ok_or_else(|| bad(format!("index {digest}: entry {} is not listed", entry.manifest)))?;
                let (child, child_member) = self.blob(desc)?;
                let part = self.manifest(&child, &self.read_member(child_member)?, Vec::new())?;
                let config = self.config(self.members.get(&format!("blobs/sha256/{}", part.blobs[0].hex()))?)?;
                if let Some(have) = crate::index::config_platform_differs(&config, &entry.platform) {
                    return Err(bad(format!("index {digest} lists {child} as {}, but it is a {have} image", entry.platform)));
                }
                blobs.push(child);
                blobs.extend(part.blobs);
            }
            // Entries that are not platform images (attestations, nested indexes) are not kept:
            // the stored index must name only blobs the store has, so it is written anew
            // without them (and gets a digest of its own).
            let manifest = if record.entries.len() == inner.manifests.len() {
                digest
            } else {
                self.stage().write_blob(&crate::index::encode_index(&record.entries)?)?
            };
            out.push(StagedImage { manifest, blobs, names });
        }
        Ok(())
    }

    /// One image manifest of the layout (`digest`, its `bytes`), checked whole.
    fn manifest(&self, digest: &Digest, bytes: &[u8], names: Vec<Reference>) -> Result<StagedImage, StoreError> {
        let manifest: Manifest = parse_json(bytes, &format!("manifest {digest}"))?;
        if let Some(m) = manifest.media_type.as_deref().filter(|m| *m == OCI_INDEX || *m == DOCKER_LIST) {
            return Err(bad(format!("{digest} is a {m}, its descriptor says a manifest")));
        }
        let (config_digest, config_member) = self.blob(&manifest.config).map_err(|e| match e {
            StoreError::BadArchive(why) => bad(format!("manifest {digest} names config {}: {why}", manifest.config.digest)),
            other => other,
        })?;
        let config = self.config(config_member)?;
        let mut layer_members = Vec::new();
        for l in &manifest.layers {
            layer_members.push((self.blob(l)?.1, l.media_type.as_deref()));
        }
        let layers = self.check_layers(&config, &layer_members)?;
        let blobs = std::iter::once(config_digest).chain(layers.into_iter().map(|l| l.0)).collect();
        Ok(StagedImage { manifest: digest.clone(), blobs, names })
    }

    /// `RepoTags` of a docker `manifest.json` next to an OCI layout, by config digest.
    fn docker_names(&self) -> Result<BTreeMap<Digest, Vec<Reference>>, StoreError> {
        let mut out: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
        if !self.members.has("manifest.json") {
            return Ok(out);
        }
        let bytes = self.read_member(self.members.get("manifest.json")?)?;
        let entries: Vec<DockerEntry> = parse_json(&bytes, "manifest.json")?;
        for e in entries {
            let config = self.members.get(&e.config)?.digest.clone();
            for t in e.repo_tags.unwrap_or_default() {
                out.entry(config.clone()).or_default().push(parse_name(&t)?);
            }
        }
        Ok(out)
    }
}

/// The names an OCI layout's `index.json` entry carries in its annotations.
fn names_of(d: &Descriptor) -> Result<Vec<Reference>, StoreError> {
    let mut names = Vec::new();
    if let Some(a) = &d.annotations {
        if let Some(n) = a.get("io.containerd.image.name") {
            names.push(parse_name(n)?);
        } else if let Some(n) = a.get("org.opencontainers.image.ref.name").filter(|n| n.contains(':') || n.contains('/')) {
            // A bare tag ("v1") names no repository: only full references are used.
            names.push(parse_name(n)?);
        }
    }
    Ok(names)
}

fn parse_name(name: &str) -> Result<Reference, StoreError> {
    let r: Reference = name.parse()?;
    if r.tag.is_none() {
        return Err(bad(format!("image name {name} has no tag")));
    }
    Ok(Reference { digest: None, ..r })
}

/// Loads every image of an archive read from `reader`. On any error the store is unchanged.
pub fn load_archive(store: &Store, reader: impl Read) -> Result<Vec<LoadedImage>, StoreError> {
    let staging = store.staging()?;
    let members = read_members(staging.store(), reader)?;
    let loader = Loader { staging: &staging, members };
    let mut images = Vec::new();
    if loader.members.has("index.json") {
        let bytes = loader.read_member(loader.members.get("index.json")?)?;
        loader.oci(&parse_json(&bytes, "index.json")?, &mut images)?;
        let docker_names = loader.docker_names()?;
        for img in &mut images {
            let config = img.blobs.first().cloned();
            if let Some(names) = config.and_then(|c| docker_names.get(&c)) {
                for n in names {
                    if !img.names.contains(n) {
                        img.names.push(n.clone());
                    }
                }
            }
        }
    } else if loader.members.has("manifest.json") {
        images = loader.docker()?;
    } else {
        return Err(bad("neither index.json (OCI) nor manifest.json (docker-archive) found"));
    }
    if images.is_empty() {
        return Err(bad("the archive holds no images"));
    }
    drop(loader);
    staging.commit_staged(&images)?;
    images
        .iter()
        .map(|i| {
            // The image id: the config digest, or a multi-platform image's index digest.
            let config = match store.entry(&i.manifest)? {
                crate::ImageEntry::Image(img) => img.config_digest,
                crate::ImageEntry::Index(_) => i.manifest.clone(),
            };
            Ok(LoadedImage { manifest: i.manifest.clone(), config, names: i.names.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{write_archive_as, Format};
    use crate::catalog::tests::make_image;
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;

    fn snapshot(root: &Path) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for sub in ["blobs/sha256", "images", "ingest"] {
            for e in fs::read_dir(root.join(sub)).expect("ls").flatten() {
                out.insert(format!("{sub}/{}", e.file_name().to_string_lossy()), e.metadata().map(|m| m.len()).unwrap_or(0));
            }
        }
        out.insert("refs.json".into(), fs::metadata(root.join("refs.json")).map(|m| m.len()).unwrap_or(0));
        out
    }

    fn archive(format: Format) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        make_image(&store, &["a", "b"], Some("src:1"));
        let (name, img) = store.image_by_name("src:1").expect("image");
        write_archive_as(&store, &[(name, crate::ImageEntry::Image(Box::new(img)))], format, Vec::new()).expect("archive")
    }

    #[test]
    fn own_archives_load_in_both_formats() {
        for format in [Format::Docker, Format::Oci] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path()).expect("open");
            let loaded = load_archive(&store, archive(format).as_slice()).expect("load");
            assert_eq!(loaded.len(), 1);
            assert_eq!(loaded[0].names, vec!["src:1".parse::<Reference>().expect("ref")]);
            assert!(store.image_by_name("src:1").is_ok());
        }
    }

    #[test]
    fn a_multi_platform_image_loads_as_one_index() {
        use crate::catalog::tests::make_image_for;
        use crate::{ImageEntry, IndexEntry, Platform};
        let src = tempfile::tempdir().expect("tempdir");
        let store = Store::open(src.path()).expect("open");
        let amd = make_image_for(&store, &["a"], None, "amd64");
        let arm = make_image_for(&store, &["b"], None, "arm64");
        let entry = |d: &Digest, p: &str| IndexEntry { manifest: d.clone(), size: store.image(d).expect("img").manifest_size, platform: Platform::parse(p).expect("p") };
        let index = store.write_index(&[entry(&amd, "linux/amd64"), entry(&arm, "linux/arm64")]).expect("index");
        let name: Reference = "multi:1".parse().expect("ref");
        store.set_ref(&name, &index).expect("tag");
        // As a multi-platform build leaves them: the platform images are parts, not images.
        let lock = store.lock().expect("lock");
        store.forget_image(&lock, &amd).expect("forget");
        store.forget_image(&lock, &arm).expect("forget");
        drop(lock);
        let listed = store.list_images().expect("list");
        assert_eq!(listed.len(), 1, "one image, not three");
        assert_eq!(listed[0].id(), &index);
        for format in [Format::Docker, Format::Oci] {
            let archive = write_archive_as(&store, &[(name.clone(), store.entry(&index).expect("entry"))], format, Vec::new()).expect("archive");
            let dir = tempfile::tempdir().expect("tempdir");
            let fresh = Store::open(dir.path()).expect("open");
            let loaded = load_archive(&fresh, archive.as_slice()).expect("load");
            assert_eq!(loaded.len(), 1);
            assert_eq!((loaded[0].manifest.clone(), loaded[0].config.clone()), (index.clone(), index.clone()));
            let ImageEntry::Index(rec) = fresh.entry(&fresh.resolve("multi:1").expect("name").1).expect("entry") else { panic!("an index") };
            assert_eq!(rec.platform_list(), "linux/amd64, linux/arm64");
            assert_eq!(fresh.image_for(&index, Some(&Platform::parse("linux/arm64").expect("p"))).expect("arm64").manifest_digest, arm);
            // rmi of the index removes its platform images' blobs too.
            fresh.remove_image("multi:1", false).expect("rmi");
            assert_eq!(fs::read_dir(dir.path().join("blobs/sha256")).expect("ls").count(), 0);
        }
    }

    /// A poor man's fuzzer that runs with the unit tests: corrupted and truncated archives
    /// must fail cleanly (no panic, store unchanged) or load something that verifies.
    #[test]
    fn mutated_archives_fail_cleanly_or_load_verified_images() {
        for format in [Format::Docker, Format::Oci] {
            let good = archive(format);
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path()).expect("open");
            let mut cases: Vec<Vec<u8>> = Vec::new();
            for cut in (0..good.len()).step_by(397) {
                cases.push(good[..cut].to_vec());
            }
            for pos in (0..good.len()).step_by(211) {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[pos] ^= flip;
                    cases.push(bad);
                }
            }
            for (i, case) in cases.iter().enumerate() {
                let before = snapshot(dir.path());
                match load_archive(&store, case.as_slice()) {
                    Ok(_) => {
                        for d in store.image_digests().expect("images") {
                            store.image(&d).unwrap_or_else(|e| panic!("case {i}: loaded a broken image: {e}"));
                        }
                        assert!(store.check(false).expect("check").problems.is_empty(), "case {i}");
                    }
                    Err(_) => assert_eq!(snapshot(dir.path()), before, "case {i}: a failed load changed the store"),
                }
            }
        }
    }
}
