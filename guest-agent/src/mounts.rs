//! `MakeDirs`, `MountOverlay` and `Unmount`: the filesystem plumbing around a build step.
//!
//! The overlay is mounted with `index=off,redirect_dir=off,metacopy=off` so the upper dir stays
//! a plain diff that [`crate::diff`] can turn into a layer without understanding overlay
//! metadata beyond whiteouts and opaque directories.

use std::fs;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Context, Error, Result};

/// The lower dir used when a step has no lower layers (`FROM scratch`).
pub const EMPTY_LOWER: &str = "/run/kiln/empty";

/// `mkdir -p` for each path.
pub fn make_dirs(paths: &[String]) -> Result<()> {
    for p in paths {
        fs::create_dir_all(p).ctx(|| format!("mkdir -p {p}"))?;
    }
    Ok(())
}

/// Mounts the host directory shared under `tag` at `target` (virtiofs, or virtio-9p 9P2000.L
/// with no client cache so host and container see each other's writes at once), first
/// filling it as `copy_up` asks (see [`crate::copyup`]; only on a writable share).
pub fn mount_share(tag: &str, target: &str, readonly: bool, copy_up: Option<&kiln_protocol::CopyUp>, virtiofs: bool) -> Result<()> {
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Error::msg(format!("mount share: bad tag {tag:?}")));
    }
    fs::create_dir_all(target).ctx(|| format!("mkdir -p {target}"))?;
    let data = "trans=virtio,version=9p2000.L,msize=262144,cache=none,access=any";
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    if virtiofs {
        mount(Some(tag), target, Some("virtiofs"), flags, None::<&str>).ctx(|| format!("mount virtiofs share {tag} at {target}"))?;
    } else {
        mount(Some(tag), target, Some("9p"), flags, Some(data)).ctx(|| format!("mount 9p share {tag} at {target}"))?;
    }
    match copy_up {
        Some(c) if !readonly => crate::copyup::populate(&c.root, &c.path, target),
        _ => Ok(()),
    }
}

/// Builds the overlay mount data string. Pure, for testing.
pub fn overlay_options(lowers: &[String], upper: &str, work: &str) -> Result<String> {
    for p in lowers.iter().map(String::as_str).chain([upper, work]) {
        // overlayfs splits its options at ',' and lowerdir at ':'; escaping is not supported
        // by every kernel we may meet, so such paths are refused with a clear message.
        if p.contains([',', ':']) || p.is_empty() {
            return Err(Error::msg(format!(
                "overlay path {p:?} is empty or contains ',' or ':'"
            )));
        }
    }
    let lowerdir = if lowers.is_empty() {
        EMPTY_LOWER.to_string()
    } else {
        lowers.join(":")
    };
    Ok(format!("lowerdir={lowerdir},upperdir={upper},workdir={work},index=off,redirect_dir=off,metacopy=off"))
}

/// Mounts an overlay at `target`, creating `upper`, `work` and `target` as needed.
pub fn mount_overlay(lowers: &[String], upper: &str, work: &str, target: &str) -> Result<()> {
    let data = overlay_options(lowers, upper, work)?;
    let mut dirs = vec![upper, work, target];
    if lowers.is_empty() {
        dirs.push(EMPTY_LOWER);
    }
    for d in dirs {
        fs::create_dir_all(d).ctx(|| format!("mkdir -p {d}"))?;
    }
    for l in lowers {
        if !Path::new(l).is_dir() {
            return Err(Error::msg(format!(
                "mount overlay on {target}: lower dir {l} is not a directory"
            )));
        }
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .ctx(|| format!("mount overlay on {target} ({data})"))
}

/// Unmounts `target` and everything below it (lazily: busy mounts go away when released).
pub fn unmount(target: &str) -> Result<()> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").ctx(|| "read /proc/self/mounts".to_string())?;
    let mut below: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(unescape_mount_path)
        .filter(|m| m == target || m.starts_with(&format!("{}/", target.trim_end_matches('/'))))
        .collect();
    if below.is_empty() {
        return Err(Error::msg(format!("unmount {target}: not a mount point")));
    }
    // Deepest first; MNT_DETACH also covers anything a racing process still holds.
    below.sort_by_key(|m| std::cmp::Reverse(m.len()));
    below.dedup();
    for m in below {
        match umount2(m.as_str(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::io(
                    format!("umount {m}"),
                    std::io::Error::from_raw_os_error(e as i32),
                ))
            }
        }
    }
    Ok(())
}

/// `/proc/self/mounts` escapes space, tab, newline and backslash as octal `\NNN`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_order_and_empty_lowers() {
        let o = overlay_options(&["/l/2".into(), "/l/1".into()], "/u", "/w").expect("ok");
        assert_eq!(
            o,
            "lowerdir=/l/2:/l/1,upperdir=/u,workdir=/w,index=off,redirect_dir=off,metacopy=off"
        );
        let o = overlay_options(&[], "/u", "/w").expect("ok");
        assert!(o.starts_with("lowerdir=/run/kiln/empty,"));
        assert!(overlay_options(&["/a:b".into()], "/u", "/w").is_err());
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
