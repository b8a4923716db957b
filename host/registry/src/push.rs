//! Pushing an image from the store: every blob is HEAD-checked, mounted from another
//! repository of the same registry when the store knows one that has it (another name of an
//! image with that blob; up to three are tried), else uploaded: in one PUT, or — above [`PushOptions::chunk_size`] —
//! in PATCH chunks, each retried on its own; the manifest goes last, byte for byte as stored,
//! so the registry's digest is the store's.

use std::collections::BTreeSet;

use kiln_store::{Digest, Reference, Store};
use ureq::http::{Method, Response};
use ureq::Body;

use crate::client::{encode, error_detail, Client, Payload};
use crate::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::RegistryError;

/// Progress of a push, for a UI. Every layer gets `Preparing` (top layer first, the order
/// Docker lists them in) before any upload starts; then each blob (layers and config) ends with `Exists`,
/// `Mounted` or `Pushed`, uploaded ones after `Pushing` reports. Blobs go up in parallel, so
/// events of different blobs interleave.
#[derive(Debug, Clone)]
pub enum PushEvent {
    /// This layer of the image will be pushed unless the registry has it.
    Preparing(Digest),
    /// Bytes of a blob sent so far (0 at the start of every attempt, then every 256 KiB or so),
    /// and its size.
    Pushing { blob: Digest, sent: u64, size: u64 },
    /// The registry has this blob already.
    Exists(Digest),
    /// The blob was mounted from this repository of the same registry.
    Mounted(Digest, String),
    /// The blob was uploaded.
    Pushed(Digest),
}

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs larger than this go up in chunks of this size (PATCH); smaller ones in one PUT.
    pub chunk_size: u64,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self { chunk_size: 128 * 1024 * 1024 }
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub tag: String,
    /// The manifest digest and size.
    pub digest: Digest,
    pub size: u64,
}

/// Repositories of the same registry whose images (by their names in the store) hold `blob`.
fn mount_sources(store: &Store, reference: &Reference, blob: &Digest) -> Vec<String> {
    let Ok(refs) = store.refs() else { return Vec::new() };
    let mut out = BTreeSet::new();
    for (name, manifest) in refs {
        let Ok(r) = name.parse::<Reference>() else { continue };
        if r.domain != reference.domain || r.path == reference.path || out.contains(&r.path) {
            continue;
        }
        let images = store.platform_images(&manifest).unwrap_or_default();
        if images.iter().any(|img| img.layers.contains(blob) || img.config_digest == *blob) {
            out.insert(r.path);
        }
        if out.len() >= 3 {
            break;
        }
    }
    out.into_iter().collect()
}

/// The absolute upload URL a registry answered with (its `Location` header).
pub(crate) fn location(resp: &Response<Body>, client: &Client, what: &str) -> Result<String, RegistryError> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|l| client.absolute(l))
        .ok_or_else(|| RegistryError::invalid(format!("{what}: the registry sent no upload location")))
}

/// Pushes one blob unless the registry has it. Returns what happened.
fn push_blob(
    store: &Store,
    client: &Client,
    reference: &Reference,
    blob: &Digest,
    opts: &PushOptions,
    events: &(dyn Fn(PushEvent) + Sync),
) -> Result<PushEvent, RegistryError> {
    let path = &reference.path;
    let what = format!("pushing blob {blob} to {}/{path}", client.domain());
    let own_scope = format!("repository:{path}:pull,push");
    let head = client.send(Method::HEAD, &client.url(&format!("{path}/blobs/{blob}")), &[], &Payload::Empty, &own_scope, &what)?;
    if head.status().as_u16() == 200 {
        return Ok(PushEvent::Exists(blob.clone()));
    }
    // A refused mount opens an upload session (202): kept for the upload after the last
    // candidate, cancelled otherwise so that the next candidate can be tried.
    let mut upload = None;
    let sources = mount_sources(store, reference, blob);
    for (i, from) in sources.iter().enumerate() {
        let scope = format!("{own_scope} repository:{from}:pull");
        let url = client.url(&format!("{path}/blobs/uploads/?mount={blob}&from={}", encode(from)));
        let resp = client.send(Method::POST, &url, &[], &Payload::Empty, &scope, &what)?;
        match resp.status().as_u16() {
            201 => return Ok(PushEvent::Mounted(blob.clone(), from.clone())),
            202 if i + 1 == sources.len() => upload = Some(location(&resp, client, &what)?),
            202 => {
                let session = location(&resp, client, &what)?;
                // Best effort: an abandoned session expires on the registry anyway.
                let _ = client.send(Method::DELETE, &session, &[], &Payload::Empty, &own_scope, &what);
            }
            _ => {}
        }
    }
    let upload = match upload {
        Some(u) => u,
        None => {
            let resp = client.send(Method::POST, &client.url(&format!("{path}/blobs/uploads/")), &[], &Payload::Empty, &own_scope, &what)?;
            let status = resp.status().as_u16();
            if status != 202 {
                return Err(RegistryError::Status { context: what, status, detail: error_detail(resp) });
            }
            location(&resp, client, &what)?
        }
    };
    let file = store.blob_path(blob);
    let size = std::fs::metadata(&file).map_err(|e| RegistryError::io(format!("{what}: reading {}", file.display()), e))?.len();
    let sent_whole = |n: u64| events(PushEvent::Pushing { blob: blob.clone(), sent: n, size });
    let octets = ("Content-Type", "application/octet-stream");
    let (upload, payload) = if size > opts.chunk_size.max(1) {
        let mut location_now = upload;
        let mut offset = 0;
        while offset < size {
            let len = opts.chunk_size.max(1).min(size - offset);
            let range = format!("{offset}-{}", offset + len - 1);
            let sent = |n: u64| events(PushEvent::Pushing { blob: blob.clone(), sent: offset + n, size });
            let chunk = Payload::FileRange { path: &file, offset, len, sent: Some(&sent) };
            let resp = client.send(Method::PATCH, &location_now, &[octets, ("Content-Range", &range)], &chunk, &own_scope, &what)?;
            let status = resp.status().as_u16();
            if status != 202 {
                return Err(RegistryError::Status { context: format!("{what} (chunk {range})"), status, detail: error_detail(resp) });
            }
            location_now = location(&resp, client, &what)?;
            offset += len;
        }
        (location_now, Payload::Empty)
    } else {
        (upload, Payload::FileRange { path: &file, offset: 0, len: size, sent: Some(&sent_whole) })
    };
    let sep = if upload.contains('?') { '&' } else { '?' };
    let url = format!("{upload}{sep}digest={}", encode(&blob.to_string()));
    let resp = client.send(Method::PUT, &url, &[octets], &payload, &own_scope, &what)?;
    let status = resp.status().as_u16();
    if status != 201 && status != 204 {
        return Err(RegistryError::Status { context: what, status, detail: error_detail(resp) });
    }
    Ok(PushEvent::Pushed(blob.clone()))
}

/// Blobs uploaded at once: layers are independent, only the manifest must come last.
const PARALLEL_UPLOADS: usize = 3;

/// Pushes `blobs`, [`PARALLEL_UPLOADS`] at a time; the first error stops the others from
/// starting new blobs and is returned.
fn upload_blobs(
    store: &Store,
    client: &Client,
    reference: &Reference,
    opts: &PushOptions,
    events: &(dyn Fn(PushEvent) + Sync),
    blobs: &[&Digest],
) -> Result<(), RegistryError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<RegistryError>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_UPLOADS.min(blobs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let stop = failed.lock().map(|f| f.is_some()).unwrap_or(true);
                let Some(blob) = blobs.get(i).filter(|_| !stop) else { break };
                match push_blob(store, client, reference, blob, opts, events) {
                    Ok(event) => events(event),
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(()),
        Err(_) => Err(RegistryError::invalid("an upload thread panicked")),
    }
}

/// Pushes the image the store names `reference` to `client`'s registry, under its tag. A
/// multi-platform image goes up platform by platform (blobs, then each manifest by digest),
/// and its index last, under the tag.
pub fn push(store: &Store, client: &Client, reference: &Reference, opts: &PushOptions, events: &(dyn Fn(PushEvent) + Sync)) -> Result<Pushed, RegistryError> {
    if reference.digest.is_some() {
        return Err(RegistryError::Unsupported(format!("pushing by digest ({}): push a tag", reference.familiar())));
    }
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    let (_, top) = store.resolve(&reference.to_string())?;
    let images = store.platform_images(&top)?;
    let is_index = images.len() != 1 || images[0].manifest_digest != top;
    for image in &images {
        for layer in image.layers.iter().rev() {
            events(PushEvent::Preparing(layer.clone()));
        }
    }
    for image in &images {
        upload_blobs(store, client, reference, opts, events, &image.layers.iter().chain(std::iter::once(&image.config_digest)).collect::<Vec<_>>())?;
        if is_index {
            put_manifest(store, client, reference, &image.manifest_digest.to_string(), &image.manifest_digest)?;
        }
    }
    let size = put_manifest(store, client, reference, &tag, &top)?;
    Ok(Pushed { tag, digest: top, size })
}

/// PUTs the stored manifest or index `digest`, byte for byte, under `tag_or_digest`; checks
/// the digest the registry recorded. Returns its size.
fn put_manifest(store: &Store, client: &Client, reference: &Reference, tag_or_digest: &str, digest: &Digest) -> Result<u64, RegistryError> {
    let bytes = store.read_blob(digest)?;
    let probe = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let media = probe
        .as_ref()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| if probe.as_ref().is_some_and(|v| v.get("manifests").is_some()) { OCI_INDEX } else { OCI_MANIFEST }.to_string());
    let path = &reference.path;
    let what = format!("pushing manifest {}/{path}:{tag_or_digest}", client.domain());
    let url = client.url(&format!("{path}/manifests/{tag_or_digest}"));
    let resp = client.send(Method::PUT, &url, &[("Content-Type", media.as_str())], &Payload::Bytes(&bytes), &format!("repository:{path}:pull,push"), &what)?;
    let status = resp.status().as_u16();
    if status != 201 && status != 200 {
        return Err(RegistryError::Status { context: what, status, detail: error_detail(resp) });
    }
    if let Some(d) = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
        if d != digest.to_string() {
            return Err(RegistryError::invalid(format!("{what}: the registry recorded digest {d}, kiln sent {digest}")));
        }
    }
    Ok(bytes.len() as u64)
}
