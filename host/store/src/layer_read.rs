//! The one place that opens a layer blob as a tar stream, whatever its compression.
//!
//! Layers reach the store as they came: plain tar (docker-archives, `docker save`), gzip
//! (registries, kiln's own builds) or zstd. Every reader of a layer's content — the guest
//! upload, `COPY --from`, bind mounts from images, `-o type=local|tar`, flattening, the
//! build cache's import/export, containers — goes through [`open_tar`] (or
//! [`crate::Store::open_layer`]), which judges the compression by the blob's first bytes. A
//! layer's media type is only a cross-check ([`Compression::check_declared`]): a plain tar
//! under a gzip media type reads (docker-archives say gzip of plain layers), but compressed
//! content under another compression's media type is refused.
//!
//! This module must never write or extract anything: it only hands out readers.

use std::io::{self, BufRead, BufReader, Read};

use crate::digest::Digest;
use crate::expansion::{Bounded, CountIn, Expansion};
use crate::{Store, StoreError};

/// How a layer blob is compressed, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer so compressed.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => "application/vnd.oci.image.layer.v1.tar",
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// What a (Docker or OCI) layer media type says the compression is, if it is a layer type.
    pub fn from_media_type(media: &str) -> Option<Self> {
        if media.ends_with("+gzip") || media.ends_with(".tar.gzip") {
            Some(Self::Gzip)
        } else if media.ends_with("+zstd") || media.ends_with(".tar.zstd") {
            Some(Self::Zstd)
        } else if media.ends_with(".tar") || media.ends_with("diff.tar") {
            Some(Self::None)
        } else {
            None
        }
    }

    /// The compression of a stream starting with `head`.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// Cross-checks a layer's declared media type against its content (`self`). Content
    /// decides how the layer is read; the media type may only understate it: a plain tar under
    /// a compressed media type is accepted (docker-archives and `docker save` label plain
    /// layers gzip), compressed content under a plain or a different compression's media type
    /// is refused, and a media type that is not a layer's is unsupported.
    pub fn check_declared(self, media: &str) -> Result<(), DeclaredMismatch> {
        match Self::from_media_type(media) {
            None => Err(DeclaredMismatch::NotALayer(media.to_string())),
            Some(declared) if declared == self || self == Self::None => Ok(()),
            Some(_) => Err(DeclaredMismatch::Differs { content: self, media: media.to_string() }),
        }
    }
}

/// Why a layer's media type does not fit its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclaredMismatch {
    #[error("media type {0} is not a layer's")]
    NotALayer(String),
    #[error("the layer is {} but its media type says {media}", content.describe())]
    Differs { content: Compression, media: String },
}

impl Compression {
    /// "gzip-compressed", "zstd-compressed" or "an uncompressed tar", for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::None => "an uncompressed tar",
            Self::Gzip => "gzip-compressed",
            Self::Zstd => "zstd-compressed",
        }
    }
}

fn hostile(why: impl Into<String>) -> StoreError {
    StoreError::HostileLayer(why.into())
}

/// A layer's tar stream with its compression undone: gzip by `flate2` (members concatenated
/// as `gzip` writes them are all read), zstd by `ruzstd` (a small pure-Rust decoder: no C
/// toolchain, and kiln only ever reads zstd, never writes it; frame checksums are verified).
/// What it expands to is bounded ([`crate::expansion`]): a decompression bomb ends in an
/// error after work in proportion to its size.
pub struct TarStream<R: BufRead> {
    inner: Bounded<Decoder<CountIn<R>>>,
}

enum Decoder<R: BufRead> {
    Plain(R),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Zstd(Box<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>),
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(r) => r.read(buf),
            Self::Gzip(r) => r.read(buf),
            Self::Zstd(r) => r.read(buf),
        }
    }
}

impl<R: BufRead> Read for TarStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: BufRead> TarStream<R> {
    /// Wraps a buffered stream whose compression is `compression` (see [`Compression::sniff`]),
    /// bounded as the environment says ([`Expansion::from_env`]): for layers coming in.
    pub fn new(compression: Compression, buffered: R) -> Result<Self, StoreError> {
        Self::with_limit(compression, buffered, Expansion::from_env()?)
    }

    /// A stored layer: it was bounded when it came in (maybe under a raised bound), so only the
    /// absolute ceiling applies now.
    pub fn stored(compression: Compression, buffered: R) -> Result<Self, StoreError> {
        Self::with_limit(compression, buffered, Expansion { ratio: u64::MAX, grace: u64::MAX, max: u64::MAX })
    }

    fn with_limit(compression: Compression, buffered: R, limit: Expansion) -> Result<Self, StoreError> {
        let (counted, read_in) = CountIn::new(buffered);
        let decoder = match compression {
            Compression::None => Decoder::Plain(counted),
            Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(counted)),
            Compression::Zstd => {
                Decoder::Zstd(Box::new(ruzstd::decoding::StreamingDecoder::new(counted).map_err(|e| hostile(format!("corrupt zstd stream: {e}")))?))
            }
        };
        Ok(Self { inner: Bounded::new(decoder, read_in, limit) })
    }
}

/// Opens a tar stream that may be gzip- or zstd-compressed (judged by its first bytes); an
/// empty stream is an error. Returns the plain tar stream and the compression found.
pub fn open_tar<R: Read>(reader: R) -> Result<(TarStream<BufReader<R>>, Compression), StoreError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf().map_err(|e| StoreError::io("reading a tar stream", e))?;
    if head.is_empty() {
        return Err(hostile("the stream is empty"));
    }
    let compression = Compression::sniff(head);
    Ok((TarStream::new(compression, buffered)?, compression))
}

impl Store {
    /// Opens the stored layer `digest` as a plain tar stream, whatever its compression.
    /// `media_type`, when the caller knows it (from a manifest), is cross-checked against the
    /// content ([`Compression::check_declared`]).
    pub fn open_layer(&self, digest: &Digest, media_type: Option<&str>) -> Result<LayerStream, StoreError> {
        open_layer_file(self.open_blob(digest)?, digest, media_type)
    }

    /// The compression of the stored blob `digest`, by its first bytes.
    pub fn layer_compression(&self, digest: &Digest) -> Result<Compression, StoreError> {
        let mut head = [0u8; 4];
        let mut file = self.open_blob(digest)?;
        let mut n = 0;
        while n < head.len() {
            match file.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::io(format!("reading blob {digest}"), e)),
            }
        }
        Ok(Compression::sniff(&head[..n]))
    }
}

/// [`Store::open_layer`] for a blob already opened (e.g. from a build's staging area).
pub fn open_layer_file(file: std::fs::File, digest: &Digest, media_type: Option<&str>) -> Result<LayerStream, StoreError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, file);
    let head = buffered.fill_buf().map_err(|e| StoreError::io(format!("reading layer {digest}"), e))?;
    let compression = Compression::sniff(head);
    if let Some(media) = media_type {
        compression.check_declared(media).map_err(|e| hostile(format!("layer {digest}: {e}")))?;
    }
    TarStream::stored(compression, buffered).map_err(|e| match e {
        StoreError::HostileLayer(why) => hostile(format!("layer {digest}: {why}")),
        other => other,
    })
}

/// A stored layer opened as a plain tar stream.
pub type LayerStream = TarStream<BufReader<std::fs::File>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_path("etc/motd").expect("path");
        h.set_cksum();
        b.append(&h, &b"hello"[..]).expect("append");
        b.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        out
    }

    #[test]
    fn plain_and_gzip_blobs_open_to_the_same_tar() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let tar = tar_bytes();
        let plain = store.write_blob(&tar).expect("plain");
        let gz = store.write_blob(&gzip(&tar)).expect("gz");
        assert_eq!(read_all(store.open_layer(&plain, None).expect("open plain")), tar);
        assert_eq!(read_all(store.open_layer(&gz, None).expect("open gz")), tar);
        assert_eq!(store.layer_compression(&plain).expect("sniff"), Compression::None);
        assert_eq!(store.layer_compression(&gz).expect("sniff"), Compression::Gzip);
        // A docker-archive labels plain layers gzip: content decides.
        let docker_gzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
        assert_eq!(read_all(store.open_layer(&plain, Some(docker_gzip)).expect("plain under gzip")), tar);
        // Compressed content under a plain or another compression's media type is refused.
        let err = store.open_layer(&gz, Some(Compression::Zstd.oci_media_type())).err().expect("gzip under zstd");
        assert!(err.to_string().contains("gzip-compressed but its media type says"), "{err}");
        assert!(store.open_layer(&gz, Some(Compression::None.oci_media_type())).is_err());
        assert!(store.open_layer(&gz, Some("application/vnd.oci.image.config.v1+json")).is_err());
    }

    #[test]
    fn open_tar_refuses_an_empty_stream() {
        assert!(open_tar(&b""[..]).is_err());
        let (r, c) = open_tar(std::io::Cursor::new(gzip(b"abc"))).expect("gzip");
        assert_eq!((read_all(r), c), (b"abc".to_vec(), Compression::Gzip));
    }
}
