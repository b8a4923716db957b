//! VM snapshots for the QEMU backend: the first VM of a kind boots as always and, once its
//! agent answers (before anything build- or container-specific: no layer, no mount), its
//! whole state is migrated to a file under the cache dir; later VMs of that kind start with
//! `-incoming` from the file instead of booting. Many VMs may be restored from one file at
//! once (each QEMU reads it; nothing writes it after creation).
//!
//! A snapshot is only valid for exactly the VM it came from, so its name is a hash of
//! everything that shapes the VM: QEMU's binary (path, size, mtime), the kernel's and the
//! initramfs's (path, size, mtime), and QEMU's whole command line with the per-VM paths
//! replaced (memory, CPUs, accelerator, devices, shares' options; under KVM the host CPU's
//! model and flags too). At its end, a small record holds the stream's length and CRC-32,
//! checked before every restore: a truncated or corrupt file is discarded and a boot makes a
//! new one, never trusted. A snapshot is written under a temporary name and renamed whole, so
//! two kiln processes making the same snapshot at once do not collide (the last rename wins;
//! both are whole). A save that fails is not retried for an hour.
//!
//! `KILN_SNAPSHOT=0` turns snapshots off. This module must never hand QEMU a file whose
//! record does not match it.

use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::qmp::Qmp;
use crate::SandboxError;

/// Whether snapshots are to be used (`KILN_SNAPSHOT`: unset or 1 yes, 0 no).
pub fn enabled() -> Result<bool, SandboxError> {
    match std::env::var("KILN_SNAPSHOT").as_deref() {
        Err(_) | Ok("" | "1") => Ok(true),
        Ok("0") => Ok(false),
        Ok(other) => Err(SandboxError::BadSetting { name: "KILN_SNAPSHOT", value: other.into(), why: "expected 0 or 1" }),
    }
}

/// Snapshots kept per cache dir (one per kind of VM: memory, CPUs, shares, guest image);
/// saving another removes the least recently made beyond this.
const KEEP: usize = 8;

/// The end of a snapshot file: `[QEMU's migration stream][record JSON][u32 LE: JSON length]
/// [MAGIC]`. One file, renamed into place whole: a stream and a record can never be paired
/// wrongly, whatever two kiln processes do at once.
const MAGIC: &[u8; 8] = b"KILNSNAP";

/// A failed save is not retried for this long (a cache dir that cannot take one would make
/// every start pay for the attempt).
const RETRY_AFTER: Duration = Duration::from_secs(3600);

fn snapshot_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("vm-snapshots")
}

/// For `kiln doctor`: the snapshots saved under `cache_dir`, each with its size and the time
/// it took to make.
pub fn survey(cache_dir: &Path) -> Vec<(u64, Duration)> {
    let Ok(entries) = fs::read_dir(snapshot_dir(cache_dir)) else { return vec![] };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "state"))
        .filter_map(|file| read_record(&file).ok())
        .map(|(_, rec)| (rec.len, Duration::from_millis(rec.made_in_ms)))
        .collect()
}

/// Removes all but the [`KEEP`] most recently made snapshots in `dir`, and temp files of
/// saves that were cut short (older than ten minutes: a save takes well under one).
fn prune(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut states = Vec::new();
    for p in entries.flatten().map(|e| e.path()) {
        let Some(modified) = fs::metadata(&p).ok().and_then(|m| m.modified().ok()) else { continue };
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(".state-") {
            if modified.elapsed().is_ok_and(|age| age > Duration::from_secs(600)) {
                let _ = fs::remove_file(&p);
            }
        } else if name.ends_with(".state") {
            states.push((modified, p));
        }
    }
    states.sort();
    let excess = states.len().saturating_sub(KEEP);
    for (_, p) in states.into_iter().take(excess) {
        let _ = fs::remove_file(p.with_extension("failed"));
        let _ = fs::remove_file(&p);
    }
}

/// The record at the end of a snapshot file.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    /// Bytes of QEMU's stream at the start of the file.
    len: u64,
    crc32: u32,
    /// How long it took to make, for `kiln doctor`.
    #[serde(default)]
    made_in_ms: u64,
}

/// The record of the snapshot file `file`, and the file's length.
fn read_record(file: &Path) -> std::io::Result<(u64, Record)> {
    use std::io::{Seek, SeekFrom};
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut f = File::open(file)?;
    let size = f.metadata()?.len();
    let mut tail = [0u8; 12];
    if size < tail.len() as u64 {
        return Err(bad("too short"));
    }
    f.seek(SeekFrom::Start(size - 12))?;
    f.read_exact(&mut tail)?;
    if &tail[4..] != MAGIC {
        return Err(bad("no record"));
    }
    let json_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if json_len > 4096 || json_len + 12 > size {
        return Err(bad("bad record length"));
    }
    f.seek(SeekFrom::Start(size - 12 - json_len))?;
    let mut json = vec![0u8; json_len as usize];
    f.read_exact(&mut json)?;
    let rec: Record = serde_json::from_slice(&json).map_err(|_| bad("bad record"))?;
    if rec.len + json_len + 12 != size {
        return Err(bad("the record does not match the file's length"));
    }
    Ok((size, rec))
}

/// Where a snapshot of one kind of VM lives.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub file: PathBuf,
}

fn file_stamp(path: &Path) -> String {
    let modified = |m: &fs::Metadata| m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    match fs::metadata(path) {
        Ok(m) => format!("{}:{}:{}:{}", path.display(), m.len(), modified(&m).as_secs(), modified(&m).subsec_nanos()),
        Err(_) => format!("{}:missing", path.display()),
    }
}

impl Snapshot {
    /// The snapshot for a VM started by `qemu` (its resolved path) with `args`, where the
    /// per-VM paths in `args` are already replaced by placeholders, from `kernel` and `initrd`.
    pub fn for_vm(cache_dir: &Path, qemu: &Path, kernel: &Path, initrd: &Path, args: &[String]) -> Self {
        let mut h = Sha256::new();
        for part in [file_stamp(qemu), file_stamp(kernel), file_stamp(initrd)] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for a in args {
            h.update(a.as_bytes());
            h.update([0]);
        }
        let key = hex::encode(&h.finalize()[..16]);
        Self { file: snapshot_dir(cache_dir).join(format!("{key}.state")) }
    }

    /// The length of the snapshot's stream when it is there and whole (its record matches its
    /// length and CRC-32). A snapshot that is there but damaged is removed.
    pub fn check(&self) -> Result<Option<u64>, SandboxError> {
        if !self.file.exists() {
            return Ok(None);
        }
        let whole = read_record(&self.file).ok().filter(|(_, rec)| crc_of(&self.file, rec.len).is_ok_and(|crc| crc == rec.crc32));
        match whole {
            Some((_, rec)) => Ok(Some(rec.len)),
            None => {
                self.discard();
                Err(SandboxError::Snapshot(format!("{} is damaged (its record does not match its length or checksum)", self.file.display())))
            }
        }
    }

    /// Removes the snapshot.
    pub fn discard(&self) {
        let _ = fs::remove_file(&self.file);
    }

    fn marker(&self) -> PathBuf {
        self.file.with_extension("failed")
    }

    /// Whether a save of this snapshot failed within the last hour (see [`RETRY_AFTER`]).
    pub fn failed_recently(&self) -> bool {
        fs::metadata(self.marker()).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age < RETRY_AFTER))
    }

    /// Remembers that saving failed, so the next starts do not try again at once.
    pub fn mark_failed(&self) {
        if let Some(dir) = self.file.parent() {
            let _ = fs::create_dir_all(dir);
        }
        let _ = fs::write(self.marker(), b"");
    }

    /// `-incoming` for QEMU: the snapshot's `len` bytes of stream, read by `head` (QEMU 7.2
    /// has no `file:` transport, and the file ends with kiln's record).
    pub fn incoming_uri(&self, len: u64) -> Result<String, SandboxError> {
        let path = self.file.to_str().filter(|p| !p.contains('\'')).ok_or_else(|| SandboxError::BadPath(self.file.clone(), "a snapshot path must be UTF-8 without '".into()))?;
        Ok(format!("exec:head -c {len} '{path}'"))
    }

    /// Saves the state of the running VM whose QMP socket is `qmp` and lets it run on.
    pub fn save(&self, qmp: &Path) -> Result<Duration, SandboxError> {
        let started = Instant::now();
        let dir = self.file.parent().ok_or_else(|| SandboxError::Snapshot("no snapshot directory".into()))?;
        fs::create_dir_all(dir).map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
        let mut tmp = tempfile::Builder::new().prefix(".state-").tempfile_in(dir).map_err(|e| SandboxError::io("creating the snapshot file", e))?;
        let tmp_path = tmp.path().to_str().filter(|p| !p.contains('\'')).ok_or_else(|| SandboxError::Snapshot("the cache path must be UTF-8 without '".into()))?.to_string();
        let mut monitor = Qmp::connect(qmp, started + Duration::from_secs(10))?;
        let migrated = monitor.migrate(&format!("exec:cat > '{tmp_path}'"), started + Duration::from_secs(60));
        // The VM goes on either way (a migration leaves it paused).
        let resumed = monitor.execute("cont", serde_json::json!({}));
        migrated?;
        resumed?;
        let len = tmp.as_file().metadata().map_err(|e| SandboxError::io("reading back the snapshot", e))?.len();
        if len == 0 {
            return Err(SandboxError::Snapshot("QEMU wrote an empty state".into()));
        }
        let crc32 = crc_of(tmp.path(), len).map_err(|e| SandboxError::io("reading back the snapshot", e))?;
        let made_in = started.elapsed();
        let json = serde_json::to_vec(&Record { len, crc32, made_in_ms: made_in.as_millis() as u64 }).map_err(|e| SandboxError::Snapshot(e.to_string()))?;
        let mut trailer = json.clone();
        trailer.extend_from_slice(&(json.len() as u32).to_le_bytes());
        trailer.extend_from_slice(MAGIC);
        let f = tmp.as_file_mut();
        f.seek(std::io::SeekFrom::End(0)).and_then(|_| f.write_all(&trailer)).and_then(|()| f.sync_all()).map_err(|e| SandboxError::io("writing the snapshot record", e))?;
        tmp.persist(&self.file).map_err(|e| SandboxError::io("saving the snapshot", e.error))?;
        prune(dir);
        Ok(made_in)
    }
}

/// Whether the VM whose QMP socket is `qmp` is running (not left paused by a failed save).
pub fn vm_running(qmp: &Path) -> bool {
    let Ok(mut monitor) = Qmp::connect(qmp, Instant::now() + Duration::from_secs(5)) else { return false };
    monitor.execute("query-status", serde_json::json!({})).is_ok_and(|s| s.get("status").and_then(serde_json::Value::as_str) == Some("running"))
}

/// CRC-32 of the first `len` bytes of a file (which must have them).
fn crc_of(path: &Path, len: u64) -> std::io::Result<u32> {
    let mut f = File::open(path)?.take(len);
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        seen += n as u64;
    }
    if seen != len {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the snapshot is shorter than its record says"));
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_snapshot(snap: &Snapshot, stream: &[u8]) {
        fs::create_dir_all(snap.file.parent().expect("dir")).expect("mkdir");
        let json = serde_json::to_vec(&Record { len: stream.len() as u64, crc32: crc32fast::hash(stream), made_in_ms: 1 }).expect("json");
        let mut bytes = stream.to_vec();
        bytes.extend_from_slice(&json);
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(MAGIC);
        fs::write(&snap.file, bytes).expect("write");
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = Snapshot::for_vm(dir.path(), Path::new("/bin/sh"), Path::new("/k"), Path::new("/i"), &["-m".into(), "1024".into()]);
        assert_eq!(snap.check().expect("absent"), None, "no snapshot yet");
        write_snapshot(&snap, b"state bytes");
        assert_eq!(snap.check().expect("whole"), Some(11));
        assert_eq!(survey(dir.path()), [(11, Duration::from_millis(1))]);
        let mut bytes = fs::read(&snap.file).expect("read");
        bytes[3] ^= 1;
        fs::write(&snap.file, &bytes).expect("corrupt");
        assert!(snap.check().is_err(), "a flipped byte is caught");
        assert!(!snap.file.exists(), "and the snapshot is gone");
        write_snapshot(&snap, b"state bytes");
        let bytes = fs::read(&snap.file).expect("read");
        fs::write(&snap.file, &bytes[5..]).expect("truncate");
        assert!(snap.check().is_err(), "a truncated file is caught");
        fs::create_dir_all(snap.file.parent().expect("dir")).expect("mkdir");
        fs::write(&snap.file, b"no record at all").expect("write");
        assert!(snap.check().is_err(), "a file without a record is caught");
        let other = Snapshot::for_vm(dir.path(), Path::new("/bin/sh"), Path::new("/k"), Path::new("/i"), &["-m".into(), "2048".into()]);
        assert_ne!(other.file, snap.file, "another VM shape, another snapshot");
        assert!(!other.failed_recently());
        other.mark_failed();
        assert!(other.failed_recently());
    }
}
