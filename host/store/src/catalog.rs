//! The image catalog: which images the store holds (named or not), which names point at them,
//! and Docker's rules for tagging and removing them.
//!
//! An image is a manifest digest with a marker file `images/<hex>` (written by
//! [`Store::write_image`] and by archive loads); names live in `refs.json`. Stores written before
//! markers existed are still read: every manifest a name points at is an image too. A marker
//! without a name is a dangling image (`<none>:<none>`), or an intermediate one when another
//! image builds on its layers. Removing an image only drops its marker and names; the blobs go
//! in the garbage collection that follows ([`crate::gc`]), under the same lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;

use crate::digest::Digest;
use crate::error::IoContext;
use crate::image::ImageRecord;
use crate::index::{ImageEntry, IndexRecord};
use crate::platform::Platform;
use crate::ingest::sync_dir;
use crate::store::StoreLock;
use crate::{Reference, Store, StoreError};

/// One image with what `images`, `inspect` and `rmi` need to know about it.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The image; for a multi-platform image, the manifest for this machine's platform (else
    /// its first).
    pub record: ImageRecord,
    /// Set for a multi-platform image: its index (`record` is one of its entries).
    pub index: Option<IndexRecord>,
    /// Names pointing at the image, sorted.
    pub names: Vec<Reference>,
    /// Whether another image's layers start with all of this image's layers.
    pub has_children: bool,
    /// Sum of the stored layer blobs' sizes.
    pub size: u64,
}

impl ImageSummary {
    /// The digest names point at: the index's, else the manifest's.
    pub fn digest(&self) -> &Digest {
        self.index.as_ref().map_or(&self.record.manifest_digest, |i| &i.digest)
    }

    /// The image id: the config digest, or for a multi-platform image the index digest (as
    /// Docker's containerd store shows it).
    pub fn id(&self) -> &Digest {
        self.index.as_ref().map_or(&self.record.config_digest, |i| &i.digest)
    }

    /// Every manifest digest this image stands for (its own, or the index's and its entries').
    pub fn manifests(&self) -> Vec<&Digest> {
        match &self.index {
            Some(i) => std::iter::once(&i.digest).chain(i.entries.iter().map(|e| &e.manifest)).collect(),
            None => vec![&self.record.manifest_digest],
        }
    }

    /// Unnamed and nobody's parent: what `--filter dangling=true` and `prune` select.
    pub fn dangling(&self) -> bool {
        self.names.is_empty() && !self.has_children
    }
}

/// What a removal did, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    Untagged(Reference),
    /// An image (by its id, the config digest) or a layer blob that is gone.
    Deleted(Digest),
}

/// Whether `child`'s layers strictly extend `parent`'s (and `parent` has any).
fn is_parent(parent: &ImageRecord, child: &ImageRecord) -> bool {
    let (p, c) = (&parent.config.rootfs.diff_ids, &child.config.rootfs.diff_ids);
    !p.is_empty() && c.len() > p.len() && c.starts_with(p)
}

impl Store {
    /// Marks `manifest` as an image of this store.
    pub(crate) fn record_image(&self, manifest: &Digest) -> Result<(), StoreError> {
        let path = self.images_dir().join(manifest.hex());
        if !path.exists() {
            fs::write(&path, b"").ctx(|| format!("recording image {manifest}"))?;
            sync_dir(&self.images_dir())?;
        }
        Ok(())
    }

    /// Drops the marker of `manifest` (its names are dropped separately).
    pub(crate) fn forget_image(&self, _lock: &StoreLock, manifest: &Digest) -> Result<(), StoreError> {
        match fs::remove_file(self.images_dir().join(manifest.hex())) {
            Ok(()) => sync_dir(&self.images_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("removing image {manifest}"), e)),
        }
    }

    /// Every image's manifest digest: marked ones and those a name points at.
    pub fn image_digests(&self) -> Result<BTreeSet<Digest>, StoreError> {
        let mut out: BTreeSet<Digest> = self.refs()?.into_values().collect();
        let dir = self.images_dir();
        for entry in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            // Anything that is not a digest (a temp file, say) is not an image.
            if let Ok(d) = format!("sha256:{}", name.to_string_lossy()).parse::<Digest>() {
                out.insert(d);
            }
        }
        Ok(out)
    }

    /// Every image with its names, sorted by name (unnamed last).
    pub fn list_images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let mut names: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
        for (name, digest) in self.refs()? {
            names.entry(digest).or_default().push(name.parse()?);
        }
        let mut records = Vec::new();
        for digest in self.image_digests()? {
            let unreadable = |e: StoreError| StoreError::Corrupt { what: "image", digest: digest.to_string(), why: format!("{e} (run `kiln system check`)") };
            match self.entry(&digest).map_err(unreadable)? {
                ImageEntry::Image(record) => records.push((*record, None, None)),
                ImageEntry::Index(index) => {
                    let mut size = 0;
                    let mut seen = BTreeSet::new();
                    let children = self.platform_images(&digest).map_err(unreadable)?;
                    for child in &children {
                        for l in child.manifest.layers() {
                            if seen.insert(l.digest().to_string()) {
                                size += l.size();
                            }
                        }
                    }
                    // The one `run` would pick (this machine's platform), else the first.
                    let pick = index.choose(&Platform::host()).map(|e| e.manifest.clone());
                    let shown = children
                        .iter()
                        .find(|c| Some(&c.manifest_digest) == pick.as_ref())
                        .or(children.first())
                        .cloned()
                        .ok_or_else(|| unreadable(StoreError::Conflict("the index lists no image".into())))?;
                    records.push((shown, Some(index), Some(size)));
                }
            }
        }
        let mut out: Vec<ImageSummary> = records
            .iter()
            .map(|(r, index, size)| ImageSummary {
                names: names.remove(index.as_ref().map_or(&r.manifest_digest, |i| &i.digest)).unwrap_or_default(),
                has_children: index.is_none() && records.iter().any(|(c, _, _)| is_parent(r, c)),
                size: size.unwrap_or_else(|| r.manifest.layers().iter().map(|l| l.size()).sum()),
                record: r.clone(),
                index: index.clone(),
            })
            .collect();
        out.sort_by_key(|s| (s.names.is_empty(), s.names.first().map(|n| n.to_string())));
        Ok(out)
    }

    /// Finds an image by name, else by (a unique prefix of) its id or manifest digest.
    /// Returns the name when it was found by one.
    pub fn lookup(&self, name_or_id: &str) -> Result<(Option<Reference>, Digest), StoreError> {
        if let Ok(reference) = name_or_id.parse::<Reference>() {
            if let Some(d) = self.refs()?.get(&reference.to_string()) {
                return Ok((Some(reference), d.clone()));
            }
            // `name@sha256:...` names an image by manifest digest, as Docker allows.
            if let Some(d) = reference.digest.as_ref().filter(|d| self.has_blob(d)) {
                if self.image_digests()?.contains(d) {
                    return Ok((None, d.clone()));
                }
            }
        }
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        let is_hex = !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex {
            let mut found = BTreeMap::new();
            for digest in self.image_digests()? {
                let id = match self.entry(&digest)? {
                    ImageEntry::Image(img) => img.config_digest,
                    ImageEntry::Index(_) => digest.clone(),
                };
                if digest.hex().starts_with(hex) || id.hex().starts_with(hex) {
                    found.insert(digest, id);
                }
            }
            let ids: BTreeSet<&Digest> = found.values().collect();
            // Several manifests of one config (loaded from different archives) are one image id.
            if ids.len() > 1 {
                return Err(StoreError::Conflict(format!("{name_or_id} is ambiguous: it matches {} images", ids.len())));
            }
            if let Some(first) = found.into_keys().next() {
                return Ok((None, first));
            }
        }
        // A malformed name is reported as such rather than as absent.
        name_or_id.parse::<Reference>()?;
        Err(StoreError::NoSuchImage(name_or_id.to_string()))
    }

    /// Points `target` at the image `source` names. Returns the new name.
    pub fn tag(&self, source: &str, target: &str) -> Result<Reference, StoreError> {
        let target: Reference = target.parse()?;
        if target.digest.is_some() {
            return Err(StoreError::BadReference { reference: target.to_string(), why: "a tag cannot contain a digest".into() });
        }
        let lock = self.lock()?;
        let (_, digest) = self.lookup(source)?;
        self.set_ref_locked(&lock, &target, &digest)?;
        Ok(target)
    }

    /// `rmi`: untags `target` when it is one name among several, else deletes the image
    /// (Docker's rules; see the module docs). Blobs no image needs any more are removed.
    pub fn remove_image(&self, target: &str, force: bool) -> Result<Vec<RemoveEvent>, StoreError> {
        let lock = self.lock()?;
        let (by_name, digest) = self.lookup(target)?;
        let all = self.list_images()?;
        let summary = all
            .iter()
            .find(|s| *s.digest() == digest)
            .ok_or_else(|| StoreError::NoSuchImage(target.into()))?;
        let mut events = Vec::new();
        let mut refs = self.refs()?;
        match by_name {
            Some(name) if summary.names.len() > 1 || summary.has_children => {
                refs.remove(&name.to_string());
                self.write_refs(&refs)?;
                events.push(RemoveEvent::Untagged(name));
                return Ok(events);
            }
            Some(_) => {}
            None => {
                let repos: BTreeSet<String> =
                    all.iter().filter(|s| s.id() == summary.id()).flat_map(|s| s.names.iter().map(|n| n.repository())).collect();
                if repos.len() > 1 && !force {
                    return Err(StoreError::Conflict(format!(
                        "unable to delete {target} (must be forced): image is referenced in multiple repositories"
                    )));
                }
                if summary.has_children {
                    return Err(StoreError::Conflict(format!(
                        "unable to delete {target} (cannot be forced): image has dependent child images"
                    )));
                }
            }
        }
        // By id, every manifest of the image's config goes (they are one image id); by its last
        // name, only the manifest the name pointed at.
        let doomed: Vec<&ImageSummary> = if by_name.is_some() {
            vec![summary]
        } else {
            all.iter().filter(|s| s.id() == summary.id()).collect()
        };
        if doomed.iter().any(|s| s.has_children) {
            return Err(StoreError::Conflict(format!("unable to delete {target} (cannot be forced): image has dependent child images")));
        }
        for s in &doomed {
            for name in &s.names {
                refs.remove(&name.to_string());
                events.push(RemoveEvent::Untagged(name.clone()));
            }
        }
        // Every layer of what goes (all platforms of an index), read while it is still there.
        let mut layers: BTreeSet<Digest> = BTreeSet::new();
        for s in &doomed {
            for img in self.platform_images(s.digest())? {
                layers.extend(img.layers);
            }
        }
        self.write_refs(&refs)?;
        for s in &doomed {
            self.forget_image(&lock, s.digest())?;
        }
        events.push(RemoveEvent::Deleted(summary.id().clone()));
        let gc = self.collect_garbage(&lock)?;
        events.extend(gc.removed.into_iter().filter(|(d, _)| layers.contains(d)).map(|(d, _)| RemoveEvent::Deleted(d)));
        Ok(events)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::RunConfig;
    use crate::NewImage;

    fn layer_tar(name: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_cksum();
        b.append_data(&mut h, name, &b"x"[..]).expect("append");
        b.into_inner().expect("tar")
    }

    /// An image whose layers are one per name in `files`; named `name` if given.
    pub(crate) fn make_image(store: &Store, files: &[&str], name: Option<&str>) -> Digest {
        make_image_for(store, files, name, "amd64")
    }

    /// [`make_image`] for a linux image of architecture `arch`.
    pub(crate) fn make_image_for(store: &Store, files: &[&str], name: Option<&str>, arch: &str) -> Digest {
        let layers = files.iter().map(|f| store.ingest_layer(layer_tar(f).as_slice()).expect("layer")).collect();
        let image = NewImage {
            layers,
            config: RunConfig::default(),
            history: vec![],
            created: "2026-01-01T00:00:00Z".into(),
            architecture: arch.into(),
            os: "linux".into(),
            author: None,
            variant: None,
        };
        let d = store.write_image(image).expect("image");
        if let Some(n) = name {
            store.set_ref(&n.parse().expect("ref"), &d).expect("tag");
        }
        d
    }

    #[test]
    fn tag_then_rmi_untags_before_deleting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let d = make_image(&store, &["a"], Some("app:v1"));
        store.tag("app:v1", "other/app:v2").expect("tag");
        assert_eq!(store.lookup("other/app:v2").expect("lookup").1, d);
        let ev = store.remove_image("app:v1", false).expect("rmi");
        assert_eq!(ev, vec![RemoveEvent::Untagged("app:v1".parse().expect("ref"))]);
        assert!(store.has_blob(&d));
        let ev = store.remove_image("other/app:v2", false).expect("rmi");
        assert!(matches!(ev[0], RemoveEvent::Untagged(_)));
        assert!(ev.iter().any(|e| matches!(e, RemoveEvent::Deleted(_))));
        assert!(!store.has_blob(&d), "manifest collected");
        assert!(store.list_images().expect("list").is_empty());
        assert_eq!(fs::read_dir(store.blobs_dir()).expect("ls").count(), 0);
    }

    #[test]
    fn by_id_needs_force_across_repositories_and_parents_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let base = make_image(&store, &["a"], Some("base"));
        let child = make_image(&store, &["a", "b"], Some("child"));
        store.tag("child", "again").expect("tag");
        let id = store.image(&child).expect("img").config_digest.hex()[..12].to_string();
        assert!(matches!(store.remove_image(&id, false), Err(StoreError::Conflict(_))));
        let base_id = store.image(&base).expect("img").config_digest.hex()[..12].to_string();
        let err = store.remove_image(&base_id, true).expect_err("parent");
        assert!(err.to_string().contains("dependent child images"), "{err}");
        // By name the parent is only untagged and stays as an intermediate image.
        store.remove_image("base", false).expect("untag");
        assert!(store.image_digests().expect("list").contains(&base));
        store.remove_image(&id, true).expect("forced");
        let left = store.list_images().expect("list");
        assert_eq!(left.len(), 1);
        assert!(left[0].dangling(), "the former parent is now dangling");
        assert!(store.lookup("nosuch").is_err());
        assert_eq!(store.lookup(&format!("anything@{base}")).expect("by digest").1, base);
        assert!(matches!(store.lookup("Bad:Ref:X"), Err(StoreError::BadReference { .. })));
    }
}
