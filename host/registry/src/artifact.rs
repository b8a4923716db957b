//! Pushing content that is not an image of the store — the build cache of
//! `kiln build --cache-to type=registry` — one blob at a time and then its manifest.
//!
//! A blob the repository has already is skipped (HEAD). Others are uploaded in one PUT when
//! small, else in PATCH chunks of [`CHUNK_BYTES`] read into memory one at a time (each chunk
//! retried on its own by the client), so a large layer is never held whole. The manifest goes
//! last, byte for byte, and the digest the registry records must be its digest.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use kiln_store::Digest;
use ureq::http::Method;

use crate::client::{encode, error_detail, Client, Payload};
use crate::push::location;
use crate::RegistryError;

/// Blobs up to this size go up in one request; larger ones in chunks of this size.
pub const CHUNK_BYTES: u64 = 16 * 1024 * 1024;

/// Where a blob's bytes are.
#[derive(Debug, Clone, Copy)]
pub enum BlobData<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

fn scope(path: &str) -> String {
    format!("repository:{path}:pull,push")
}

/// Reads up to `CHUNK_BYTES` from `file` (fewer only at its end).
fn next_chunk(file: &mut File, what: &str, source: &Path) -> Result<Vec<u8>, RegistryError> {
    let mut chunk = Vec::with_capacity(CHUNK_BYTES as usize);
    file.by_ref().take(CHUNK_BYTES).read_to_end(&mut chunk).map_err(|e| RegistryError::io(format!("{what}: reading {}", source.display()), e))?;
    Ok(chunk)
}

/// Pushes blob `digest` to repository `path` unless it is there already. Returns whether it
/// was uploaded.
pub fn push_blob(client: &Client, path: &str, digest: &Digest, data: BlobData<'_>) -> Result<bool, RegistryError> {
    let what = format!("pushing blob {digest} to {}/{path}", client.domain());
    let scope = scope(path);
    let head = client.send(Method::HEAD, &client.url(&format!("{path}/blobs/{digest}")), &[], &Payload::Empty, &scope, &what)?;
    if head.status().as_u16() == 200 {
        return Ok(false);
    }
    let resp = client.send(Method::POST, &client.url(&format!("{path}/blobs/uploads/")), &[], &Payload::Empty, &scope, &what)?;
    let status = resp.status().as_u16();
    if status != 202 {
        return Err(RegistryError::Status { context: what, status, detail: error_detail(resp) });
    }
    let mut upload = location(&resp, client, &what)?;
    let octets = ("Content-Type", "application/octet-stream");
    // What the final PUT carries: the whole blob, or nothing after the chunks.
    let mut last: Option<Vec<u8>> = None;
    let body: &[u8] = match data {
        BlobData::Bytes(b) => b,
        BlobData::File(file_path) => {
            let mut file = File::open(file_path).map_err(|e| RegistryError::io(format!("{what}: opening {}", file_path.display()), e))?;
            let size = file.metadata().map_err(|e| RegistryError::io(format!("{what}: reading {}", file_path.display()), e))?.len();
            if size <= CHUNK_BYTES {
                last.insert(next_chunk(&mut file, &what, file_path)?).as_slice()
            } else {
                let mut offset = 0u64;
                loop {
                    let chunk = next_chunk(&mut file, &what, file_path)?;
                    if chunk.is_empty() {
                        break;
                    }
                    let range = format!("{offset}-{}", offset + chunk.len() as u64 - 1);
                    let headers = [octets, ("Content-Range", range.as_str())];
                    let resp = client.send(Method::PATCH, &upload, &headers, &Payload::Bytes(&chunk), &scope, &what)?;
                    let status = resp.status().as_u16();
                    if status != 202 {
                        return Err(RegistryError::Status { context: format!("{what} (chunk {range})"), status, detail: error_detail(resp) });
                    }
                    upload = location(&resp, client, &what)?;
                    offset += chunk.len() as u64;
                }
                &[]
            }
        }
    };
    let sep = if upload.contains('?') { '&' } else { '?' };
    let url = format!("{upload}{sep}digest={}", encode(&digest.to_string()));
    let payload = if body.is_empty() { Payload::Empty } else { Payload::Bytes(body) };
    let resp = client.send(Method::PUT, &url, &[octets], &payload, &scope, &what)?;
    let status = resp.status().as_u16();
    if status != 201 && status != 204 {
        return Err(RegistryError::Status { context: what, status, detail: error_detail(resp) });
    }
    Ok(true)
}

/// Puts `manifest` (of `media_type`) in repository `path` under `tag`. Returns its digest.
pub fn push_manifest(client: &Client, path: &str, tag: &str, manifest: &[u8], media_type: &str) -> Result<Digest, RegistryError> {
    let digest = Digest::of(manifest);
    let what = format!("pushing manifest {}/{path}:{tag}", client.domain());
    let url = client.url(&format!("{path}/manifests/{tag}"));
    let resp = client.send(Method::PUT, &url, &[("Content-Type", media_type)], &Payload::Bytes(manifest), &scope(path), &what)?;
    let status = resp.status().as_u16();
    if status != 201 && status != 200 {
        return Err(RegistryError::Status { context: what, status, detail: error_detail(resp) });
    }
    if let Some(d) = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
        if d != digest.to_string() {
            return Err(RegistryError::invalid(format!("{what}: the registry recorded digest {d}, kiln sent {digest}")));
        }
    }
    Ok(digest)
}
