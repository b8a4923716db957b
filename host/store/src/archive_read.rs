//! Reading the members of an image archive (docker-archive or OCI layout in a tar, possibly
//! gzip- or zstd-compressed, possibly from a pipe) into a staging store.
//!
//! The archive is hostile input. Every regular member is streamed into the staging store as a
//! blob (so a pipe is read once, whatever order the members come in) and remembered by path;
//! symlinks and hardlinks between members are remembered and resolved later, and must stay
//! inside the archive. `..`, absolute paths, duplicate paths, devices, sparse files and other
//! exotic entries are rejected. Nothing here touches the main store.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Component, Path};

use tar::EntryType;

use crate::digest::Digest;
use crate::layer_verify::check_member_path;
use crate::layer_read::open_tar;
use crate::{Store, StoreError};

/// Most members an archive may have.
const MAX_MEMBERS: usize = 100_000;
/// Most links followed to reach one member.
const MAX_LINK_HOPS: usize = 16;

/// A regular member, stored in the staging store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub digest: Digest,
    pub size: u64,
}

/// What an archive held: files by normalised path, and links to other paths.
#[derive(Debug, Default)]
pub(crate) struct Members {
    files: BTreeMap<String, Member>,
    links: BTreeMap<String, String>,
}

fn bad(why: impl Into<String>) -> StoreError {
    StoreError::BadArchive(why.into())
}

/// `./a//b/` -> `a/b`, checking the path stays inside the archive.
fn normalise(path: &Path) -> Result<String, StoreError> {
    check_member_path(path).map_err(|why| bad(format!("member {why}")))?;
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_str().ok_or_else(|| bad(format!("member path {} is not UTF-8", path.display())))),
            _ => None,
        })
        .collect::<Result<_, _>>()?;
    Ok(parts.join("/"))
}

/// Resolves a symlink's target against the link's directory, refusing to leave the archive.
fn resolve_symlink(link: &str, target: &Path) -> Result<String, StoreError> {
    if target.is_absolute() {
        return Err(bad(format!("symlink {link} points at the absolute path {}", target.display())));
    }
    let mut parts: Vec<String> = link.split('/').map(String::from).collect();
    parts.pop();
    for c in target.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(bad(format!("symlink {link} points outside the archive ({})", target.display())));
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(bad(format!("symlink {link} has a bad target"))),
        }
    }
    Ok(parts.join("/"))
}

/// Reads every member of the archive into `stage`.
pub(crate) fn read_members(stage: &Store, reader: impl Read) -> Result<Members, StoreError> {
    let mut members = Members::default();
    let (plain, _) = open_tar(reader).map_err(|e| match e {
        StoreError::HostileLayer(why) => bad(why),
        other => other,
    })?;
    let mut archive = tar::Archive::new(plain);
    let entries = archive.entries().map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_MEMBERS {
            return Err(bad(format!("more than {MAX_MEMBERS} members")));
        }
        let mut entry = entry.map_err(|e| bad(format!("corrupt or truncated tar: {e}")))?;
        let raw_path = entry.path().map_err(|e| bad(format!("unreadable member path: {e}")))?.into_owned();
        let path = normalise(&raw_path)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if members.files.contains_key(&path) || members.links.contains_key(&path) {
            return Err(bad(format!("member {path} appears twice")));
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let mut ingest = stage.ingest()?;
                io::copy(&mut entry, &mut ingest).map_err(|e| bad(format!("reading member {path}: {e}")))?;
                let (digest, size) = ingest.commit(None)?;
                members.files.insert(path, Member { digest, size });
            }
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(format!("unreadable link target of {path}: {e}")))?
                    .ok_or_else(|| bad(format!("link {path} has no target")))?;
                let resolved = if kind == EntryType::Symlink {
                    resolve_symlink(&path, &target)?
                } else {
                    normalise(&target).map_err(|e| bad(format!("hardlink {path}: {e}")))?
                };
                members.links.insert(path, resolved);
            }
            other => return Err(bad(format!("member {path} has unsupported type {other:?}"))),
        }
    }
    Ok(members)
}

impl Members {
    pub(crate) fn has(&self, path: &str) -> bool {
        self.get(path).is_ok()
    }

    /// The member at `path`, following links inside the archive.
    pub(crate) fn get(&self, path: &str) -> Result<&Member, StoreError> {
        let mut current = normalise(Path::new(path))?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(m) = self.files.get(&current) {
                return Ok(m);
            }
            match self.links.get(&current) {
                Some(next) => current = next.clone(),
                None => return Err(bad(format!("{path} is missing from the archive"))),
            }
        }
        Err(bad(format!("{path}: too many levels of links")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data_or_link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            let data = if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name(data_or_link).expect("link");
                &b""[..]
            } else {
                data_or_link.as_bytes()
            };
            h.set_size(data.len() as u64);
            // Raw name bytes, so hostile paths get through the builder's own checks.
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn members_and_links_resolve_inside_the_archive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stage = Store::open(dir.path()).expect("open");
        let tar = tar_of(&[
            ("./a/layer.tar", EntryType::Regular, "data"),
            ("b/layer.tar", EntryType::Symlink, "../a/layer.tar"),
            ("c", EntryType::Link, "a/layer.tar"),
        ]);
        let m = read_members(&stage, tar.as_slice()).expect("read");
        let want = Digest::of(b"data");
        for p in ["a/layer.tar", "b/layer.tar", "c", "./b//layer.tar"] {
            assert_eq!(m.get(p).expect(p).digest, want);
        }
        assert!(m.get("d").is_err());
    }

    #[test]
    fn hostile_members_are_rejected() {
        let cases: &[(&str, Vec<u8>)] = &[
            ("dotdot", tar_of(&[("../x", EntryType::Regular, "x")])),
            ("absolute", tar_of(&[("/etc/x", EntryType::Regular, "x")])),
            ("symlink out", tar_of(&[("a/l", EntryType::Symlink, "../../etc/passwd")])),
            ("absolute symlink", tar_of(&[("l", EntryType::Symlink, "/etc/passwd")])),
            ("hardlink out", tar_of(&[("l", EntryType::Link, "../etc/passwd")])),
            ("device", tar_of(&[("dev", EntryType::Char, "")])),
            ("duplicate", tar_of(&[("x", EntryType::Regular, "1"), ("./x", EntryType::Regular, "2")])),
            ("empty", vec![]),
        ];
        for (what, tar) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let stage = Store::open(dir.path()).expect("open");
            let err = read_members(&stage, tar.as_slice()).expect_err(what);
            assert!(matches!(err, StoreError::BadArchive(_)), "{what}: {err}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let stage = Store::open(dir.path()).expect("open");
        let loop_tar = tar_of(&[("a", EntryType::Symlink, "b"), ("b", EntryType::Symlink, "a")]);
        let m = read_members(&stage, loop_tar.as_slice()).expect("links alone are fine");
        assert!(m.get("a").is_err(), "a link loop is an error, not a hang");
    }
}
