//! Pulling an image into the store.
//!
//! The manifest is resolved (an index picks one platform's manifest), then the config and the
//! layers the store lacks are downloaded — in parallel — into a private staging area, each
//! streamed through the store's ingest, which hashes while writing: a blob whose size or digest
//! differs from its descriptor is never kept. Downloaded layers are then checked entry by entry
//! and against the config's diff ids, as `kiln load` does. Only then are the blobs moved into
//! the store and the name set, under the store lock: an interrupted or failed pull leaves
//! nothing visible. Manifests are stored byte for byte as served, so digests match the
//! registry's.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_store::image::ImageConfig;
use kiln_store::layer_verify::{check_layer, Compression};
use kiln_store::{Digest, Reference, StagedImage, Store, StoreError};
use ureq::http::Method;

use crate::client::{error_detail, Client, Payload};
use crate::manifest::{self, Descriptor, Document, Platform, ACCEPT, MAX_MANIFEST_BYTES};
use crate::RegistryError;

/// How many layers download at once.
const PARALLEL_LAYERS: usize = 3;

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to pick from an index (default: this machine's).
    pub platform: Option<Platform>,
    /// kiln's auth file (`--authfile`) for [`crate::pull_image`]; default: [`crate::AuthFiles::locate`]'s.
    pub authfile: Option<std::path::PathBuf>,
}

/// Progress of a pull, for a UI. Layer events come in this order for each layer: either
/// `LayerExists`, or `LayerQueued`, `Downloading` (at 0 bytes, then as bytes arrive; back to
/// fewer bytes when a download starts over), `Verifying`, `Downloaded`, `Complete`. Layers
/// download in parallel, so events of different layers interleave. The config blob has no
/// events.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The store has this layer already: it is not downloaded.
    LayerExists(Digest),
    /// This layer (of this many bytes) will be downloaded. Every layer gets either this or
    /// `LayerExists`, in the manifest's order (base layer first), before any download starts.
    LayerQueued(Digest, u64),
    /// Bytes of a layer received so far, and its size (every [`PROGRESS_STEP`] bytes or so).
    Downloading { layer: Digest, have: u64, size: u64 },
    /// Every byte of the layer is in: its digest is being checked.
    Verifying(Digest),
    /// The layer's bytes match its digest; its entries are being checked.
    Downloaded(Digest),
    /// The layer passed every check; it becomes visible when the whole pull commits.
    Complete(Digest),
}

/// How many bytes of a blob arrive between two progress reports.
pub const PROGRESS_STEP: u64 = 256 * 1024;

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Digest of what the reference names at the registry (the index, for a multi-arch image):
    /// Docker's `Digest:` line.
    pub digest: Digest,
    /// The image now in the store: its (platform) manifest digest, for [`Store::image`].
    pub image: Digest,
    /// The name set (none when pulled by digest alone).
    pub name: Option<Reference>,
    /// Whether anything new was stored or named.
    pub changed: bool,
}

/// `repository:<path>:pull`.
pub(crate) fn pull_scope(path: &str) -> String {
    format!("repository:{path}:pull")
}

/// Fetches a manifest by tag or digest: its bytes as served, digest and content type.
pub fn fetch_manifest(client: &Client, path: &str, tag_or_digest: &str, scope: &str) -> Result<(Vec<u8>, Digest, Option<String>), RegistryError> {
    let what = format!("{}/{path}:{tag_or_digest}", client.domain());
    let url = client.url(&format!("{path}/manifests/{tag_or_digest}"));
    let resp = client.send(Method::GET, &url, &[("Accept", ACCEPT)], &Payload::Empty, scope, &format!("fetching manifest {what}"))?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Err(RegistryError::ManifestUnknown(what));
    }
    if status != 200 {
        return Err(RegistryError::Status { context: format!("fetching manifest {what}"), status, detail: error_detail(resp) });
    }
    let too_big = || RegistryError::invalid(format!("manifest {what} is larger than {} MiB: refused", MAX_MANIFEST_BYTES >> 20));
    let len = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if len.is_some_and(|l| l > MAX_MANIFEST_BYTES) {
        return Err(too_big());
    }
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RegistryError::io(format!("reading manifest {what}"), e))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_big());
    }
    let digest = Digest::of(&bytes);
    if let Ok(want) = tag_or_digest.parse::<Digest>() {
        if want != digest {
            return Err(RegistryError::invalid(format!("manifest {what}: the registry served content with digest {digest}")));
        }
    }
    Ok((bytes, digest, content_type))
}

/// Downloads one blob into `into` (a staging store), verifying size and digest on the way.
/// A dropped connection resumes where it stopped with a `Range` request (or starts again when
/// the registry ignores ranges), a bounded number of times.
/// `progress` hears the bytes stored so far: 0 when a transfer starts over from the first byte,
/// then every [`PROGRESS_STEP`] bytes or so, and `size` once every byte is in, before the
/// digest is checked.
pub fn fetch_blob(client: &Client, path: &str, digest: &Digest, size: u64, scope: &str, into: &Store, progress: &dyn Fn(u64)) -> Result<(), RegistryError> {
    const MAX_RESUMES: u32 = 5;
    let what = format!("blob {digest}");
    let url = client.url(&format!("{path}/blobs/{digest}"));
    let mut ingest = into.ingest()?;
    let mut have: u64 = 0;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let range = format!("bytes={have}-");
        let headers: Vec<(&str, &str)> = if have > 0 { vec![("Range", range.as_str())] } else { Vec::new() };
        let resp = client.send(Method::GET, &url, &headers, &Payload::Empty, scope, &format!("fetching {what}"))?;
        let status = resp.status().as_u16();
        let resumed = status == 206 && have > 0 && content_range_start(&resp) == Some(have);
        if (status == 200 && have > 0) || (status == 206 && !resumed) {
            // The registry sends the whole blob (or an unexpected range): start again.
            ingest = into.ingest()?;
            have = 0;
            progress(0);
            if status == 206 {
                continue;
            }
        } else if status != 200 && status != 206 {
            let detail = error_detail(resp);
            return Err(RegistryError::Status { context: format!("fetching {what} from {}/{path}", client.domain()), status, detail });
        }
        let remaining = size - have;
        let len = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if let Some(l) = len.filter(|l| *l != remaining) {
            return Err(RegistryError::invalid(format!("{what}: the registry sends {} bytes, the manifest says {size}", l + have)));
        }
        let mut reader = resp.into_body().into_reader().take(remaining + 1);
        let mut buf = vec![0u8; 256 * 1024];
        let dropped = loop {
            match reader.read(&mut buf) {
                Ok(0) => break have < size,
                Ok(n) => {
                    io::Write::write_all(&mut ingest, &buf[..n]).map_err(|e| RegistryError::io(format!("storing {what}"), e))?;
                    let before = have;
                    have += n as u64;
                    if have > size {
                        return Err(RegistryError::invalid(format!("{what}: received more than the {size} bytes the manifest says")));
                    }
                    if have < size && before / PROGRESS_STEP != have / PROGRESS_STEP {
                        progress(have);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if attempt >= MAX_RESUMES => return Err(RegistryError::io(format!("downloading {what}"), e)),
                Err(_) => break true,
            }
        };
        if dropped {
            if attempt >= MAX_RESUMES {
                return Err(RegistryError::invalid(format!("{what}: the connection kept closing after {have} of {size} bytes")));
            }
            continue;
        }
        progress(size);
        return match ingest.commit(Some(digest)) {
            Ok(_) => Ok(()),
            Err(StoreError::DigestMismatch { actual, .. }) => {
                Err(RegistryError::invalid(format!("{what} from {}/{path}: content has digest {actual}: rejected", client.domain())))
            }
            Err(e) => Err(e.into()),
        };
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` answer.
fn content_range_start(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    v.trim().strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// Pulls `reference` from `client`'s registry into `store`. On error the store is unchanged.
pub fn pull(store: &Store, client: &Client, reference: &Reference, opts: &PullOptions, events: &(dyn Fn(PullEvent) + Sync)) -> Result<Pulled, RegistryError> {
    let path = reference.path.as_str();
    let scope = pull_scope(path);
    let wanted = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let shown = reference.familiar();
    let (bytes, top_digest, ct) = fetch_manifest(client, path, &wanted, &scope)?;
    let (manifest_bytes, image_digest, manifest) = match manifest::parse(&bytes, ct.as_deref(), &shown)? {
        Document::Image(m) => (bytes, top_digest.clone(), m),
        Document::Index(index) => {
            let platform = opts.platform.clone().unwrap_or_else(Platform::host);
            let entry = manifest::choose(&index, &platform, &shown)?;
            let digest = entry.digest()?;
            let (bytes, got, ct) = fetch_manifest(client, path, &digest.to_string(), &scope)?;
            if bytes.len() as u64 != entry.size || got != digest {
                return Err(RegistryError::invalid(format!("manifest {digest} of {shown}: size or digest differs from the index entry")));
            }
            match manifest::parse(&bytes, ct.as_deref(), &format!("{shown} ({platform})"))? {
                Document::Image(m) => (bytes, digest, m),
                Document::Index(_) => return Err(RegistryError::Unsupported(format!("{shown}: an index inside an index"))),
            }
        }
    };
    let layers = manifest.layers.iter().map(Descriptor::digest).collect::<Result<Vec<_>, _>>()?;
    for l in &manifest.layers {
        let media = l.media_type.as_deref().unwrap_or_default();
        if Compression::from_media_type(media).is_none() {
            return Err(RegistryError::Unsupported(format!("{shown}: layer media type {media:?}")));
        }
    }

    let staging = store.staging()?;
    let config_digest = manifest.config.digest()?;
    let mut fetched = 0usize;
    if !store.has_blob(&config_digest) {
        fetch_blob(client, path, &config_digest, manifest.config.size, &scope, staging.store(), &|_| {})?;
        fetched += 1;
    }
    let config_bytes = staging.open_blob(&config_digest).map_err(RegistryError::from).and_then(|f| {
        let mut b = Vec::new();
        f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut b).map_err(|e| RegistryError::io(format!("reading config {config_digest}"), e))?;
        Ok(b)
    })?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| RegistryError::invalid(format!("{shown}: config {config_digest} is not valid: {e}")))?;
    if config.rootfs.diff_ids.len() != layers.len() {
        return Err(RegistryError::invalid(format!("{shown}: the config lists {} layers, the manifest {}", config.rootfs.diff_ids.len(), layers.len())));
    }
    if let Some(p) = &opts.platform {
        if config.os != p.os || config.architecture != p.architecture {
            return Err(RegistryError::invalid(format!("{shown}: the image is {}/{}, not the requested {p}", config.os, config.architecture)));
        }
    }

    let missing: Vec<(usize, &Descriptor)> = manifest.layers.iter().enumerate().filter(|(i, _)| !store.has_blob(&layers[*i])).collect();
    for (i, (d, desc)) in layers.iter().zip(&manifest.layers).enumerate() {
        if missing.iter().any(|(j, _)| *j == i) {
            events(PullEvent::LayerQueued(d.clone(), desc.size));
        } else {
            events(PullEvent::LayerExists(d.clone()));
        }
    }
    download_layers(client, path, &scope, &staging, &missing, &config, events)?;
    fetched += missing.len();

    let stored_manifest = staging.store().write_blob(&manifest_bytes)?;
    if stored_manifest != image_digest {
        return Err(RegistryError::invalid(format!("{shown}: manifest digest changed while storing it")));
    }
    let name = reference.digest.is_none().then(|| Reference { digest: None, tag: Some(wanted.clone()), ..reference.clone() });
    let named_already = match &name {
        Some(n) => store.resolve(&n.to_string()).ok().map(|(_, d)| d) == Some(image_digest.clone()),
        None => true,
    };
    let changed = fetched > 0 || !store.has_blob(&image_digest) || !named_already;
    let blobs = std::iter::once(config_digest).chain(layers).collect();
    staging.commit_staged(&[StagedImage { manifest: image_digest.clone(), blobs, names: name.iter().cloned().collect() }])?;
    Ok(Pulled { digest: top_digest, image: image_digest, name, changed })
}

/// Downloads and checks the missing layers, `PARALLEL_LAYERS` at a time.
fn download_layers(
    client: &Client,
    path: &str,
    scope: &str,
    staging: &kiln_store::Staging,
    missing: &[(usize, &Descriptor)],
    config: &ImageConfig,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<(), RegistryError> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<RegistryError>> = Mutex::new(None);
    let work = || loop {
        let k = next.fetch_add(1, Ordering::SeqCst);
        let Some(&(i, desc)) = missing.get(k) else { return };
        if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
            return;
        }
        if let Err(e) = download_layer(client, path, scope, staging, desc, &config.rootfs.diff_ids[i], events) {
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert(e);
            }
            return;
        }
    };
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_LAYERS.min(missing.len()) {
            s.spawn(work);
        }
    });
    match failure.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(RegistryError::invalid("a download thread panicked")),
    }
}

fn download_layer(
    client: &Client,
    path: &str,
    scope: &str,
    staging: &kiln_store::Staging,
    desc: &Descriptor,
    diff_id: &Digest,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<(), RegistryError> {
    let digest = desc.digest()?;
    let size = desc.size;
    events(PullEvent::Downloading { layer: digest.clone(), have: 0, size });
    let progress = |have: u64| {
        events(PullEvent::Downloading { layer: digest.clone(), have, size });
        if have == size {
            events(PullEvent::Verifying(digest.clone()));
        }
    };
    fetch_blob(client, path, &digest, size, scope, staging.store(), &progress)?;
    events(PullEvent::Downloaded(digest.clone()));
    let checked = check_layer(staging.store().open_blob(&digest)?).map_err(|e| match e {
        StoreError::HostileLayer(why) => RegistryError::invalid(format!("layer {digest}: rejected: {why}")),
        other => other.into(),
    })?;
    if checked.diff_id != *diff_id {
        return Err(RegistryError::invalid(format!("layer {digest} has diff id {}, the config says {diff_id}", checked.diff_id)));
    }
    let media = desc.media_type.as_deref().unwrap_or_default();
    checked.compression.check_declared(media).map_err(|e| RegistryError::invalid(format!("layer {digest}: {e}")))?;
    events(PullEvent::Complete(digest));
    Ok(())
}
