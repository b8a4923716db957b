//! VM snapshots for the QEMU backend: the first VM of a kind boots as always and, once its
//! agent answers (before anything build- or container-specific: no layer, no mount), its
//! whole state is migrated to a file under the cache dir; later VMs of that kind start with
//! `-incoming` from the file instead of booting. Many VMs may be restored from one file at
//! once (each QEMU reads it; nothing writes it after creation).
//!
//! A snapshot is only valid for exactly the VM it came from, so its name is a hash of
//! everything that shapes the VM: QEMU's binary (path, size, mtime), the kernel's and the
//! initramfs's (path, size, mtime), and QEMU's whole command line with the per-VM paths
//! replaced (memory, CPUs, accelerator, devices, shares' options). Next to it, a small
//! record holds its length and CRC-32, checked before every restore: a truncated or
//! corrupt file is discarded and a boot makes a new one, never trusted. Files are written
//! under temporary names and renamed, so two kiln processes making the same snapshot at once
//! do not collide (the last rename wins; both are whole).
//!
//! `KILN_SNAPSHOT=0` turns snapshots off. This module must never hand QEMU a file whose
//! record does not match it.

use std::fs::{self, File};
use std::io::{Read, Write};
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

fn snapshot_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("vm-snapshots")
}

/// For `kiln doctor`: the snapshots saved under `cache_dir`, each with its size and the time
/// it took to make.
pub fn survey(cache_dir: &Path) -> Vec<(u64, Duration)> {
    let Ok(entries) = fs::read_dir(snapshot_dir(cache_dir)) else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let stem = path.file_stem()?.to_str()?.to_string();
            (path.extension()? == "json").then(|| Snapshot { file: path.with_file_name(format!("{stem}.state")), record: path.clone() })
        })
        .filter_map(|s| s.describe())
        .collect()
}

/// Removes all but the [`KEEP`] most recently made snapshots in `dir`.
fn prune(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut states: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "state"))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    states.sort();
    let excess = states.len().saturating_sub(KEEP);
    for (_, p) in states.into_iter().take(excess) {
        let _ = fs::remove_file(p.with_extension("json"));
        let _ = fs::remove_file(&p);
    }
}

/// The record kept next to a snapshot.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    len: u64,
    crc32: u32,
    /// Seconds it took to make, for `kiln doctor`.
    #[serde(default)]
    made_in_ms: u64,
}

/// Where a snapshot of one kind of VM lives.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub file: PathBuf,
    record: PathBuf,
}

fn file_stamp(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(m) => format!("{}:{}:{}:{}", path.display(), m.len(), m.mtime(), m.mtime_nsec()),
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
        let dir = snapshot_dir(cache_dir);
        Self { file: dir.join(format!("{key}.state")), record: dir.join(format!("{key}.json")) }
    }

    /// Whether the snapshot is there and whole (length and CRC-32 as recorded). A snapshot
    /// that is there but does not match is removed.
    pub fn check(&self) -> Result<bool, SandboxError> {
        let Ok(text) = fs::read(&self.record) else { return Ok(false) };
        let whole = match serde_json::from_slice::<Record>(&text) {
            Ok(rec) => crc_of(&self.file).is_ok_and(|(len, crc)| len == rec.len && crc == rec.crc32),
            Err(_) => false,
        };
        if !whole {
            self.discard();
            return Err(SandboxError::Snapshot(format!("{} is damaged (length or checksum differ from its record)", self.file.display())));
        }
        Ok(true)
    }

    /// Removes the snapshot and its record.
    pub fn discard(&self) {
        let _ = fs::remove_file(&self.record);
        let _ = fs::remove_file(&self.file);
    }

    /// `-incoming` for QEMU: the snapshot streamed in by `cat` (QEMU 7.2 has no `file:`).
    pub fn incoming_uri(&self) -> Result<String, SandboxError> {
        let path = self.file.to_str().filter(|p| !p.contains('\'')).ok_or_else(|| SandboxError::BadPath(self.file.clone(), "a snapshot path must be UTF-8 without '".into()))?;
        Ok(format!("exec:cat '{path}'"))
    }

    /// Saves the state of the running VM whose QMP socket is `qmp` and lets it run on.
    pub fn save(&self, qmp: &Path) -> Result<Duration, SandboxError> {
        let started = Instant::now();
        let dir = self.file.parent().ok_or_else(|| SandboxError::Snapshot("no snapshot directory".into()))?;
        fs::create_dir_all(dir).map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
        let tmp = tempfile::Builder::new().prefix(".state-").tempfile_in(dir).map_err(|e| SandboxError::io("creating the snapshot file", e))?;
        let tmp_path = tmp.path().to_str().filter(|p| !p.contains('\'')).ok_or_else(|| SandboxError::Snapshot("the cache path must be UTF-8 without '".into()))?.to_string();
        let mut monitor = Qmp::connect(qmp, started + Duration::from_secs(10))?;
        let migrated = monitor.migrate(&format!("exec:cat > '{tmp_path}'"), started + Duration::from_secs(60));
        // The VM goes on either way (a migration leaves it paused).
        let resumed = monitor.execute("cont", serde_json::json!({}));
        migrated?;
        resumed?;
        let (len, crc32) = crc_of(tmp.path()).map_err(|e| SandboxError::io("reading back the snapshot", e))?;
        if len == 0 {
            return Err(SandboxError::Snapshot("QEMU wrote an empty state".into()));
        }
        let made_in = started.elapsed();
        let record = serde_json::to_vec(&Record { len, crc32, made_in_ms: made_in.as_millis() as u64 }).map_err(|e| SandboxError::Snapshot(e.to_string()))?;
        let mut rec_tmp = tempfile::Builder::new().prefix(".record-").tempfile_in(dir).map_err(|e| SandboxError::io("creating the snapshot record", e))?;
        rec_tmp.write_all(&record).map_err(|e| SandboxError::io("writing the snapshot record", e))?;
        tmp.persist(&self.file).map_err(|e| SandboxError::io("saving the snapshot", e.error))?;
        rec_tmp.persist(&self.record).map_err(|e| SandboxError::io("saving the snapshot record", e.error))?;
        prune(dir);
        Ok(made_in)
    }

    /// The snapshot's size and how long it took to make, if it is there.
    pub fn describe(&self) -> Option<(u64, Duration)> {
        let rec: Record = serde_json::from_slice(&fs::read(&self.record).ok()?).ok()?;
        Some((rec.len, Duration::from_millis(rec.made_in_ms)))
    }
}

/// Length and CRC-32 of a file.
fn crc_of(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((len, h.finalize()));
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_snapshot_is_refused_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = Snapshot::for_vm(dir.path(), Path::new("/bin/sh"), Path::new("/k"), Path::new("/i"), &["-m".into(), "1024".into()]);
        assert!(!snap.check().expect("absent"), "no snapshot yet");
        fs::create_dir_all(snap.file.parent().expect("dir")).expect("mkdir");
        fs::write(&snap.file, b"state bytes").expect("write");
        let (len, crc32) = crc_of(&snap.file).expect("crc");
        fs::write(&snap.record, serde_json::to_vec(&Record { len, crc32, made_in_ms: 1 }).expect("json")).expect("record");
        assert!(snap.check().expect("whole"));
        fs::write(&snap.file, b"state bytez").expect("corrupt");
        assert!(snap.check().is_err(), "a flipped byte is caught");
        assert!(!snap.file.exists() && !snap.record.exists(), "and the snapshot is gone");
        let other = Snapshot::for_vm(dir.path(), Path::new("/bin/sh"), Path::new("/k"), Path::new("/i"), &["-m".into(), "2048".into()]);
        assert_ne!(other.file, snap.file, "another VM shape, another snapshot");
    }
}
