//! What a container mounts besides its image: host directories (`-v /host/dir:/dir[:ro]`),
//! named volumes (`-v NAME:/dir`, kept under `$KILN_ROOT/volumes/NAME/_data`, surviving the
//! container), anonymous volumes (`-v /dir` and the image's `VOLUME`s: a volume with a
//! random name that `rm -v` and `--rm` remove with the container) and tmpfs (`--tmpfs /dir`).
//! A volume that is empty when the container starts takes the image's content at its mount
//! point (Docker's copy-up; host directories never do).
//!
//! Volumes keep the guest's owners and modes in extended attributes of their host files
//! (9p's `mapped-xattr`): a container may `chown` its data, as with Docker's volumes. A host
//! directory stays the user's plain files.
//!
//! Host directories reach the guest over virtiofs when a `virtiofsd` is found (measured and
//! chosen in [`kiln_sandbox::virtiofs`]), else over virtio-9p (QEMU's own `-fsdev local`);
//! either way files stay the user's on the host. The share is mounted in the guest once and
//! bind-mounted into the container.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::container::names::{random_hex, valid_name};
use crate::RuntimeError;

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum VolumeMount {
    /// A host directory.
    Bind { source: PathBuf, target: String, readonly: bool },
    /// A named volume (its data directory under the store); `anonymous` when kiln named it.
    Volume {
        name: String,
        source: PathBuf,
        target: String,
        readonly: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        anonymous: bool,
    },
    Tmpfs { target: String },
}

impl VolumeMount {
    pub fn target(&self) -> &str {
        match self {
            Self::Bind { target, .. } | Self::Volume { target, .. } | Self::Tmpfs { target } => target,
        }
    }

    /// The host directory shared with the guest, and whether read-only.
    pub fn host_dir(&self) -> Option<(&Path, bool)> {
        match self {
            Self::Bind { source, readonly, .. } | Self::Volume { source, readonly, .. } => Some((source, *readonly)),
            Self::Tmpfs { .. } => None,
        }
    }
}

/// The data directory of named volume `name` under store root `root`.
pub fn volume_dir(root: &Path, name: &str) -> PathBuf {
    root.join("volumes").join(name).join("_data")
}

fn bad(spec: &str, why: &str) -> RuntimeError {
    RuntimeError::Invalid(format!("invalid -v {spec:?}: {why}"))
}

fn check_target(spec: &str, target: &str) -> Result<(), RuntimeError> {
    if !target.starts_with('/') || target == "/" || target.split('/').any(|c| c == "..") {
        return Err(bad(spec, "the container path must be absolute, not / and without .."));
    }
    Ok(())
}

/// Makes a new anonymous volume for `target` (a random 64-hex-digit name, as Docker).
pub fn anonymous(root: &Path, target: &str) -> Result<VolumeMount, RuntimeError> {
    let name = random_hex(32)?;
    let dir = volume_dir(root, &name);
    fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("creating an anonymous volume", e))?;
    Ok(VolumeMount::Volume { name, source: dir, target: target.into(), readonly: false, anonymous: true })
}

/// Removes the anonymous volumes among `mounts` (`kiln rm -v`, `--rm`); named volumes and
/// host directories stay.
pub fn remove_anonymous(root: &Path, mounts: &[VolumeMount]) -> Result<(), RuntimeError> {
    for m in mounts {
        if let VolumeMount::Volume { name, anonymous: true, .. } = m {
            if valid_name(name) {
                let dir = root.join("volumes").join(name);
                match fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(RuntimeError::io(format!("removing volume {name}"), e)),
                }
            }
        }
    }
    Ok(())
}

/// The image's `VOLUME`s that no `-v` or `--tmpfs` covers, as new anonymous volumes.
pub fn image_volumes(root: &Path, declared: &[String], mounts: &[VolumeMount]) -> Result<Vec<VolumeMount>, RuntimeError> {
    let mut out: Vec<VolumeMount> = Vec::new();
    for path in declared {
        let target = clean_target(path);
        if target.is_empty() || target == "/" || target.split('/').any(|c| c == "..") {
            continue; // Docker refuses these at build time; an image carrying one gets none.
        }
        if mounts.iter().chain(out.iter()).any(|m| m.target() == target) {
            continue;
        }
        match anonymous(root, &target) {
            Ok(m) => out.push(m),
            Err(e) => {
                let _ = remove_anonymous(root, &out);
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// `/data/` and `data` as `/data`.
fn clean_target(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    format!("/{}", parts.join("/"))
}

/// `spec`'s colon-separated fields; on a Windows host (`windows`) a leading drive (`C:\src`,
/// `C:/src`) keeps its colon, as Docker on Windows reads `-v C:\src:/data`.
fn fields(spec: &str, windows: bool) -> Vec<&str> {
    let b = spec.as_bytes();
    let drive = windows && b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && matches!(b[2], b'\\' | b'/');
    if !drive {
        return spec.split(':').collect();
    }
    let mut parts: Vec<&str> = spec[2..].split(':').collect();
    parts[0] = &spec[..2 + parts[0].len()];
    parts
}

/// Parses `-v SOURCE:TARGET[:ro|rw]` or `-v TARGET` (an anonymous volume); a named volume is
/// made if it does not exist, a host directory must exist.
pub fn parse_volume(root: &Path, spec: &str) -> Result<VolumeMount, RuntimeError> {
    let parts = fields(spec, cfg!(windows));
    let (source, target, readonly) = match parts.as_slice() {
        [t] => {
            check_target(spec, t)?;
            return anonymous(root, t);
        }
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        [_, _, mode] => return Err(bad(spec, &format!("unknown mode {mode:?} (ro or rw)"))),
        _ => return Err(bad(spec, "expected SOURCE:TARGET[:ro|rw] or TARGET")),
    };
    check_target(spec, target)?;
    if source.starts_with('/') || Path::new(source).is_absolute() {
        let path = fs::canonicalize(source).map_err(|e| bad(spec, &format!("{source}: {e}")))?;
        if !path.is_dir() {
            return Err(bad(spec, &format!("{source} is not a directory (only directories can be shared)")));
        }
        return Ok(VolumeMount::Bind { source: path, target: target.into(), readonly });
    }
    if !valid_name(source) {
        return Err(bad(spec, "a volume name is [a-zA-Z0-9][a-zA-Z0-9_.-]+, a host directory an absolute path"));
    }
    let dir = volume_dir(root, source);
    fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(format!("creating volume {source}"), e))?;
    Ok(VolumeMount::Volume { name: source.into(), source: dir, target: target.into(), readonly, anonymous: false })
}

/// Parses `--tmpfs TARGET[:OPTIONS]` (options are accepted and ignored: the guest's tmpfs
/// defaults apply).
pub fn parse_tmpfs(spec: &str) -> Result<VolumeMount, RuntimeError> {
    let target = spec.split(':').next().unwrap_or_default();
    if !target.starts_with('/') || target == "/" || target.split('/').any(|c| c == "..") {
        return Err(RuntimeError::Invalid(format!("invalid --tmpfs {spec:?}: the path must be absolute, not / and without ..")));
    }
    Ok(VolumeMount::Tmpfs { target: target.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_windows_drive_keeps_its_colon_only_on_windows() {
        assert_eq!(fields("C:\\src:/data:ro", true), ["C:\\src", "/data", "ro"]);
        assert_eq!(fields("d:/src:/data", true), ["d:/src", "/data"]);
        assert_eq!(fields("c:/data", false), ["c", "/data"]);
        assert_eq!(fields("cache:/var/cache", true), ["cache", "/var/cache"]);
        assert_eq!(fields("/data", true), ["/data"]);
    }

    #[test]
    fn volume_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = dir.path().join("src");
        fs::create_dir(&host).expect("mkdir");
        let spec = format!("{}:/data:ro", host.display());
        assert_eq!(parse_volume(dir.path(), &spec).expect("bind"), VolumeMount::Bind { source: fs::canonicalize(&host).expect("canon"), target: "/data".into(), readonly: true });
        let named = parse_volume(dir.path(), "cache:/var/cache").expect("named");
        assert!(matches!(named, VolumeMount::Volume { ref name, readonly: false, .. } if name == "cache"));
        assert!(volume_dir(dir.path(), "cache").is_dir(), "a named volume is made on first use");
        let anon = parse_volume(dir.path(), "/var/lib/data").expect("anonymous");
        let VolumeMount::Volume { name, anonymous: true, .. } = &anon else { panic!("{anon:?}") };
        assert!(volume_dir(dir.path(), name).is_dir() && name.len() == 64);
        remove_anonymous(dir.path(), &[anon.clone(), named.clone()]).expect("remove");
        assert!(!volume_dir(dir.path(), name).exists() && volume_dir(dir.path(), "cache").is_dir(), "only the anonymous volume goes");
        let declared = ["/var/cache/".to_string(), "/data".into(), "/data".into(), "rel".into()];
        let from_image = image_volumes(dir.path(), &declared, &[named]).expect("image volumes");
        let targets: Vec<&str> = from_image.iter().map(VolumeMount::target).collect();
        assert_eq!(targets, ["/data", "/rel"], "a -v over a VOLUME wins, duplicates count once");
        for bad in ["/nope/not/here:/x", "rel/dir:/x", "cache:relative", "cache:/", "cache:/a/../b", "cache:/x:rx", "only", "/", "a:b:c:d"] {
            assert!(parse_volume(dir.path(), bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(parse_tmpfs("/run/x:size=64m").expect("tmpfs"), VolumeMount::Tmpfs { target: "/run/x".into() });
        assert!(parse_tmpfs("x").is_err() && parse_tmpfs("/").is_err());
    }
}
