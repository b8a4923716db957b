//! Bounds on what a compressed stream may expand to: a decompression bomb (a small blob that
//! inflates to terabytes) is cut off after work in proportion to the bytes it came as, with
//! one clear error. Used wherever kiln undoes compression of something it did not make:
//! layers (load, pull, cache import, every read of a stored layer) and `ADD` archives.
//!
//! The rule: past a grace of [`Expansion::grace`] bytes, the output may be at most
//! [`Expansion::ratio`] times the compressed bytes read so far, and never more than
//! [`Expansion::max`] in all. gzip cannot exceed ~1032:1, so the default ratio (1100) only
//! stops other formats' bombs (zstd reaches 10,000:1 and more); the absolute bound stops the
//! rest. `KILN_MAX_EXPANSION` and `KILN_MAX_LAYER_SIZE` override them (an image with a huge
//! zero-filled file compressed by zstd may need the first).
//!
//! Errors are of kind `FileTooLarge`, which readers report as they are.
//!
//! This module must never let a caller read past a bound it reported.

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::StoreError;

/// How far a compressed stream may expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expansion {
    pub ratio: u64,
    pub grace: u64,
    pub max: u64,
}

impl Default for Expansion {
    fn default() -> Self {
        Self { ratio: 1100, grace: 256 << 20, max: 256 << 30 }
    }
}

impl Expansion {
    /// The default, with `KILN_MAX_EXPANSION` (a ratio) and `KILN_MAX_LAYER_SIZE` (bytes, with
    /// k/m/g/t) applied.
    pub fn from_env() -> Result<Self, StoreError> {
        let mut e = Self::default();
        if let Some(v) = std::env::var("KILN_MAX_EXPANSION").ok().filter(|v| !v.is_empty()) {
            e.ratio = v.trim().parse().ok().filter(|r| *r > 0).ok_or_else(|| StoreError::BadSetting(format!("KILN_MAX_EXPANSION={v:?}: expected a ratio such as 1100")))?;
        }
        if let Some(v) = std::env::var("KILN_MAX_LAYER_SIZE").ok().filter(|v| !v.is_empty()) {
            e.max = crate::parse_size(&v).map_err(|_| StoreError::BadSetting(format!("KILN_MAX_LAYER_SIZE={v:?}: expected a size such as 64g")))?;
        }
        Ok(e)
    }

    /// Checks `out` bytes produced from `read_in` compressed bytes.
    fn check(&self, read_in: u64, out: u64) -> io::Result<()> {
        if out > self.max {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, format!("it expands beyond {} bytes (KILN_MAX_LAYER_SIZE raises the bound)", self.max)));
        }
        if out > self.grace && out / self.ratio.max(1) > read_in {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("it expands more than {} times its compressed size: a decompression bomb? (KILN_MAX_EXPANSION raises the bound)", self.ratio),
            ));
        }
        Ok(())
    }
}

/// A compressed input that counts the bytes taken from it.
pub struct CountIn<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> CountIn<R> {
    pub fn new(inner: R) -> (Self, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        (Self { inner, count: count.clone() }, count)
    }
}

impl<R: Read> Read for CountIn<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountIn<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.count.fetch_add(amt as u64, Ordering::Relaxed);
        self.inner.consume(amt);
    }
}

/// A decompressed output held to an [`Expansion`] against its input's [`CountIn`].
pub struct Bounded<R> {
    inner: R,
    read_in: Arc<AtomicU64>,
    out: u64,
    limit: Expansion,
}

impl<R> Bounded<R> {
    pub fn new(inner: R, read_in: Arc<AtomicU64>, limit: Expansion) -> Self {
        Self { inner, read_in, out: 0, limit }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        self.limit.check(self.read_in.load(Ordering::Relaxed), self.out)?;
        Ok(n)
    }
}

/// A writer taking decompressed output (for decoders that only write), held to an
/// [`Expansion`] against its input's [`CountIn`].
pub struct BoundedWriter<W> {
    inner: W,
    read_in: Arc<AtomicU64>,
    out: u64,
    limit: Expansion,
}

impl<W> BoundedWriter<W> {
    pub fn new(inner: W, read_in: Arc<AtomicU64>, limit: Expansion) -> Self {
        Self { inner, read_in, out: 0, limit }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: io::Write> io::Write for BoundedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.limit.check(self.read_in.load(Ordering::Relaxed), self.out + buf.len() as u64)?;
        let n = self.inner.write(buf)?;
        self.out += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).expect("gzip");
        enc.finish().expect("gzip")
    }

    fn inflate(blob: &[u8], limit: Expansion) -> io::Result<u64> {
        let (input, count) = CountIn::new(io::BufReader::new(blob));
        let mut out = Bounded::new(flate2::bufread::MultiGzDecoder::new(input), count, limit);
        io::copy(&mut out, &mut io::sink())
    }

    #[test]
    fn a_bomb_is_cut_off_and_ordinary_data_passes() {
        let zeros = vec![0u8; 8 << 20];
        let blob = gzip(&zeros);
        let strict = Expansion { ratio: 100, grace: 1 << 20, max: 1 << 40 };
        let err = inflate(&blob, strict).expect_err("8 MiB of zeros is ~1000:1");
        assert!(err.to_string().contains("decompression bomb"), "{err}");
        assert_eq!(inflate(&blob, Expansion::default()).expect("within the defaults"), 8 << 20);
        let capped = Expansion { max: 4 << 20, ..Expansion::default() };
        assert!(inflate(&blob, capped).expect_err("over max").to_string().contains("KILN_MAX_LAYER_SIZE"));
        let text: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8 ^ (i >> 13) as u8).collect();
        assert_eq!(inflate(&gzip(&text), strict).expect("ordinary data"), 4 << 20);
    }
}
