//! Writing image archives: one tar holding an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) plus, in the docker format (the default), Docker's `manifest.json` and
//! `repositories` as current Docker's `docker save` writes, so both `oci-archive:` and
//! `docker-archive:` readers accept it; [`Format::Oci`] leaves the Docker files out.
//!
//! Every blob is re-hashed while it is copied out; a blob that no longer matches its digest
//! aborts the archive instead of exporting corrupt data.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use serde_json::json;

use crate::digest::{Digest, HashingWriter};
use crate::index::{ImageEntry, OCI_INDEX, OCI_MANIFEST};
use crate::platform::Platform;
use crate::{Reference, Store, StoreError};

fn io_err(context: &str) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::io(context.to_string(), e)
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
    tar.append_data(&mut h, path, bytes).map_err(io_err(path))
}

/// Reads through to a hasher so the copied bytes can be checked after the copy.
struct Verify<R> {
    inner: R,
    hash: HashingWriter<io::Sink>,
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn append_blob<W: Write>(store: &Store, tar: &mut tar::Builder<W>, digest: &Digest) -> Result<(), StoreError> {
    let file = store.open_blob(digest)?;
    let size = file.metadata().map_err(io_err("reading blob size"))?.len();
    let mut h = header(size, 0o644, tar::EntryType::Regular);
    let path = format!("blobs/sha256/{}", digest.hex());
    let mut src = Verify { inner: file, hash: HashingWriter::new(io::sink()) };
    tar.append_data(&mut h, &path, &mut src).map_err(io_err(&path))?;
    let (actual, _, _) = src.hash.finish();
    if actual != *digest {
        return Err(StoreError::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() });
    }
    Ok(())
}

/// Which archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// OCI layout plus `manifest.json` and `repositories` (what `docker save` writes).
    #[default]
    Docker,
    /// A pure OCI image layout.
    Oci,
}

/// Writes `images` (each with the name it is saved under) as one docker-format archive to `out`.
pub fn write_archive<W: Write>(store: &Store, images: &[(Reference, ImageEntry)], out: W) -> Result<W, StoreError> {
    write_archive_as(store, images, Format::Docker, out)
}

/// Writes `images` as one archive of the given format to `out`. A multi-platform image goes in
/// whole: its index and every platform's image in the OCI layout; `manifest.json` (which
/// cannot hold an index) lists its image for this machine's platform, else its first.
pub fn write_archive_as<W: Write>(
    store: &Store,
    images: &[(Reference, ImageEntry)],
    format: Format,
    out: W,
) -> Result<W, StoreError> {
    let mut tar = tar::Builder::new(out);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, 0o755, tar::EntryType::Directory);
        tar.append_data(&mut h, dir, io::empty()).map_err(io_err(dir))?;
    }
    let mut written = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut docker_manifest = Vec::new();
    let mut repositories = serde_json::Map::new();
    let host = Platform::host();
    for (name, entry) in images {
        let (members, top, docker_img) = match entry {
            ImageEntry::Image(img) => (vec![(**img).clone()], None, (**img).clone()),
            ImageEntry::Index(index) => {
                let members = index.entries.iter().map(|e| store.image(&e.manifest)).collect::<Result<Vec<_>, _>>()?;
                let shown = index.choose(&host).map_or(0, |e| index.entries.iter().position(|x| x == e).unwrap_or(0));
                let docker_img = members.get(shown).cloned().ok_or_else(|| StoreError::Conflict(format!("{name}: the index lists no image")))?;
                (members, Some(index), docker_img)
            }
        };
        for img in &members {
            let blobs = std::iter::once(&img.config_digest).chain(&img.layers).chain(std::iter::once(&img.manifest_digest));
            for d in blobs {
                if written.insert(d.clone()) {
                    append_blob(store, &mut tar, d)?;
                }
            }
        }
        if let Some(index) = top {
            if written.insert(index.digest.clone()) {
                append_blob(store, &mut tar, &index.digest)?;
            }
        }
        let img = &docker_img;
        let mut annotations = serde_json::Map::new();
        annotations.insert("io.containerd.image.name".into(), json!(name.to_string()));
        if let Some(tag) = &name.tag {
            annotations.insert("org.opencontainers.image.ref.name".into(), json!(tag));
        }
        let (media, digest, size) = match top {
            Some(index) => (OCI_INDEX, &index.digest, index.size),
            None => (OCI_MANIFEST, &img.manifest_digest, img.manifest_size),
        };
        index_entries.push(json!({
            "mediaType": media,
            "digest": digest.to_string(),
            "size": size,
            "annotations": annotations,
        }));
        let repo_tags: Vec<String> = if name.tag.is_some() { vec![name.familiar()] } else { vec![] };
        if let Some(tag) = &name.tag {
            let familiar = name.familiar();
            let repo = familiar.strip_suffix(&format!(":{tag}")).unwrap_or(&familiar).to_string();
            let tags = repositories.entry(repo).or_insert_with(|| json!({}));
            if let Some(t) = tags.as_object_mut() {
                t.insert(tag.clone(), json!(img.config_digest.hex()));
            }
        }
        docker_manifest.push(json!({
            "Config": format!("blobs/sha256/{}", img.config_digest.hex()),
            "RepoTags": repo_tags,
            "Layers": img.layers.iter().map(|d| format!("blobs/sha256/{}", d.hex())).collect::<Vec<_>>(),
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_entries,
    });
    let encode = |v: &serde_json::Value| serde_json::to_vec(v).map_err(|e| StoreError::io("encoding archive index", e.into()));
    append_bytes(&mut tar, "index.json", &encode(&index)?)?;
    if format == Format::Docker {
        append_bytes(&mut tar, "manifest.json", &encode(&serde_json::Value::Array(docker_manifest))?)?;
        append_bytes(&mut tar, "repositories", &encode(&serde_json::Value::Object(repositories))?)?;
    }
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.into_inner().map_err(io_err("finishing archive"))
}
