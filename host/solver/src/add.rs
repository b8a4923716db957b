//! What ADD does beyond COPY: remote URLs are downloaded on the host (mode 0600, dated by
//! Last-Modified, `--checksum` verified) and copied like a file; local tar archives (plain,
//! gzip, bzip2, xz or zstd, recognised by their bytes, not their names) are unpacked into the
//! destination, keeping the owners recorded in the archive. URLs are never unpacked, as in
//! Docker.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use kiln_store::expansion::{Bounded, CountIn, Expansion};
use kiln_store::rootfs::RootFs;
use sha2::{Digest as _, Sha256};

use crate::BuildError;

/// A downloaded `ADD <url>` source.
pub struct Downloaded {
    /// Directory holding the file under its name.
    pub dir: tempfile::TempDir,
    pub name: String,
    /// `sha256:...` of the body.
    pub digest: String,
}

/// The file name a URL's body gets: the last path segment (query and fragment removed).
pub fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let after_host = path.splitn(4, '/').nth(3).unwrap_or_default();
    after_host.rsplit('/').find(|s| !s.is_empty()).map(str::to_string).unwrap_or_else(|| "download".into())
}

/// Downloads `url` with the build's fetcher, checks `--checksum`, and places it for copying.
pub fn download(fetch: Option<&crate::Fetcher>, url: &str, checksum: Option<&str>) -> Result<Downloaded, BuildError> {
    let fetch = fetch.ok_or_else(|| BuildError::Invalid(format!("ADD {url}: downloads are not available here")))?;
    let (mut body, modified) = fetch(url).map_err(|why| BuildError::Invalid(format!("ADD {url}: {why}")))?;
    let dir = tempfile::tempdir().map_err(|e| BuildError::Invalid(format!("creating a temp dir: {e}")))?;
    let name = url_file_name(url);
    let path = dir.path().join(&name);
    let io = |e: io::Error| BuildError::Invalid(format!("ADD {url}: {e}"));
    let mut file = fs::File::create(&path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io)?;
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(want) = checksum {
        if want != digest {
            return Err(BuildError::Invalid(format!("ADD {url}: digest mismatch: expected {want}, got {digest}")));
        }
    }
    // Docker gives a URL's file mode 0600 (read back by the copy; Windows files have no modes,
    // so there it is copied as 0755: see kiln_sys::fs::mode_of).
    kiln_sys::fs::set_private(&path).map_err(io)?;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(modified.and_then(|m| u64::try_from(m).ok()).unwrap_or(0));
    file.set_modified(when).map_err(io)?;
    Ok(Downloaded { dir, name, digest })
}

/// Compression of an archive, by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Whether the first 512 bytes are a tar header (checksum valid, as Go's archive/tar checks).
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field.iter().take_while(|b| **b != 0 && **b != b' ').map(|b| *b as char).collect();
    let Ok(want) = u32::from_str_radix(text.trim(), 8) else { return false };
    let sum: u32 = block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { u32::from(b' ') } else { u32::from(*b) }).sum();
    sum == want
}

/// The most an xz decoder may use (KiB): `xz -9` needs 65 MiB, the format allows 4 GiB.
const XZ_MEMORY_KIB: u32 = 256 << 10;

/// If `path` is a (possibly compressed) tar archive, its uncompressed tar in a temp file.
pub fn as_archive(path: &Path) -> Result<Option<fs::File>, BuildError> {
    let io = |e: io::Error| BuildError::Invalid(format!("{}: {e}", path.display()));
    let mut file = BufReader::new(fs::File::open(path).map_err(io)?);
    let kind = sniff(file.fill_buf().map_err(io)?);
    // What the archive expands to is bounded (a decompression bomb stops with an error).
    let limit = Expansion::from_env()?;
    let (reader, read_in) = CountIn::new(file);
    let decoded: Box<dyn Read> = match kind {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        Compression::Zstd => Box::new(ruzstd::decoding::StreamingDecoder::new(reader).map_err(|e| io(io::Error::other(e.to_string())))?),
        // Streamed, with the decoder's memory bounded: each block header's dictionary is
        // checked before any of it is allocated (a hostile header may ask for 4 GiB).
        Compression::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(reader, true, XZ_MEMORY_KIB)),
    };
    let mut decoded = Bounded::new(decoded, read_in, limit);
    let mut head = [0u8; 512];
    match decoded.read_exact(&mut head) {
        Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
            return Err(BuildError::Invalid(format!(
                "{}: an xz archive whose dictionary needs more than {} MiB to decompress",
                path.display(),
                XZ_MEMORY_KIB / 1024
            )))
        }
        Err(_) => return Ok(None),
        Ok(()) if !is_tar_header(&head) => return Ok(None),
        Ok(()) => {}
    }
    let mut out = tempfile::tempfile().map_err(io)?;
    out.write_all(&head).map_err(io)?;
    io::copy(&mut decoded, &mut out).map_err(|e| BuildError::Invalid(format!("{}: not a readable archive: {e}", path.display())))?;
    out.rewind().map_err(io)?;
    Ok(Some(out))
}

/// The view of an archive's entries, to copy from like a stage.
pub fn archive_view(tar: fs::File, name: &Path) -> Result<RootFs, BuildError> {
    RootFs::from_tar(tar).map_err(|e| BuildError::Invalid(format!("ADD {}: {e}", name.display())))
}

/// The context path of a local ADD source, when it names one regular file.
pub fn local_file(context: &Path, src: &str) -> Option<PathBuf> {
    if kiln_frontend::dockerignore::has_wildcards(src) {
        return None;
    }
    let root = fs::canonicalize(context).ok()?;
    let p = fs::canonicalize(root.join(crate::copy::clean_rooted(src))).ok()?;
    (p.starts_with(&root) && p.is_file()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_names_and_archive_detection() {
        assert_eq!(url_file_name("http://h:1/a/b/file.tar.gz?x=1"), "file.tar.gz");
        assert_eq!(url_file_name("https://h/"), "download");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "x/y", &b"hi"[..]).expect("append");
        let tar = b.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gz");
        fs::write(dir.path().join("a.tgz"), gz.finish().expect("gz")).expect("write");
        fs::write(dir.path().join("plain.txt"), "just text, not a tar").expect("write");
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).expect("bz");
        fs::write(dir.path().join("a.tbz"), bz.finish().expect("bz")).expect("write");
        for name in ["a.tgz", "a.tbz"] {
            let mut f = as_archive(&dir.path().join(name)).expect("sniff").expect("an archive");
            let mut got = Vec::new();
            f.read_to_end(&mut got).expect("read");
            assert_eq!(got, tar, "{name}");
        }
        assert!(as_archive(&dir.path().join("plain.txt")).expect("sniff").is_none());
    }

    /// `hello.txt` ("hi\n") in a tar, xz-compressed by Python's lzma with an 8 MiB dictionary,
    /// and the same with a 1 GiB one (what a hostile archive declares to make the decoder
    /// allocate it).
    const XZ_8M: &str = "fd377a585a000004e6d6b4460200210116000000742fe5a3e027ff005f5d00341949ee8df0bac8ff9bfff20c69af11eb6354891df8a09ebc658072cbff7f58ac8472dd66640aefa2cd5169e79af2936e541c25ca338c47afd4dd6788cf15a5947c5b5774e306f5be767596b2cffbf65261000f3a307a7736cb4c805000000000b9fc935c5a0f605100017b8050000000ef965bd8b1c467fb020000000004595a";
    const XZ_1G: &str = "fd377a585a000004e6d6b44602002101240000005e1fc7f9e027ff005f5d00341949ee8df0bac8ff9bfff20c69af11eb6354891df8a09ebc658072cbff7f58ac8472dd66640aefa2cd5169e79af2936e541c25ca338c47afd4dd6788cf15a5947c5b5774e306f5be767596b2cffbf65261000f3a307a7736cb4c805000000000b9fc935c5a0f605100017b8050000000ef965bd8b1c467fb020000000004595a";

    #[test]
    fn xz_archives_are_streamed_and_a_huge_dictionary_is_refused_before_it_is_allocated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, hex_text: &str| {
            let path = dir.path().join(name);
            fs::write(&path, hex::decode(hex_text).expect("hex")).expect("write");
            path
        };
        let mut tar = Vec::new();
        as_archive(&write("ok.tar.xz", XZ_8M)).expect("archive").expect("an archive").read_to_end(&mut tar).expect("read");
        let mut ar = tar::Archive::new(tar.as_slice());
        let mut entry = ar.entries().expect("entries").next().expect("one").expect("entry");
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("read");
        assert_eq!((entry.path().expect("path").to_string_lossy().into_owned(), text), ("hello.txt".to_string(), "hi\n".to_string()));
        let err = as_archive(&write("huge.tar.xz", XZ_1G)).expect_err("a 1 GiB dictionary");
        assert!(err.to_string().contains("dictionary needs more than 256 MiB"), "{err}");
    }
}
