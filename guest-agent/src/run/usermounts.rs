//! `RUN --mount`s and per-process files ([`RunMount`], [`RunFile`]), checked and turned into
//! the byte strings the child needs.
//!
//! Pure apart from allocation, like [`super::plan`]: target paths are only cleaned lexically
//! here. [`super::mountpoints::prepare_targets`] later resolves them inside the rootfs and fills
//! in [`UserMount::path`], the symlink-free path the child walks (see [`super::child_mounts`]).

use std::ffi::CString;

use kiln_protocol::{RunFile, RunMount};

use crate::error::{Error, Result};

/// Name of the private tmpfs that holds secrets while they are bind-mounted, inside the
/// child's `/dev` tmpfs. It is detached and removed before the process starts.
pub const SECRET_STAGE: &str = ".kiln-secrets";

/// What to mount on a target.
pub enum MountKind {
    /// `data` is the tmpfs option string (`size=N`), `None` for the kernel defaults.
    Tmpfs {
        data: Option<CString>,
    },
    Bind {
        source: CString,
        readonly: bool,
    },
    /// `name` is the secret's file name in the stage tmpfs, `staged` its full path.
    Secret {
        name: CString,
        staged: CString,
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// One prepared `RUN --mount`.
pub struct UserMount {
    /// The target as given, for error messages.
    pub shown: String,
    /// The target's components after lexical cleaning (`.` dropped, `..` applied).
    pub lexical: Vec<Vec<u8>>,
    /// Symlink-free components from the rootfs, set by `prepare_targets`.
    pub path: Vec<CString>,
    /// The child creates missing components from this index on: they lie inside an earlier
    /// mount, which hides whatever the overlay has there. Set by `prepare_targets`.
    pub create_from: usize,
    /// Whether the target is a directory (else a file). For binds, set by `prepare_targets`
    /// from the source's type.
    pub dir: bool,
    pub kind: MountKind,
}

/// Where a [`UserFile`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileBase {
    /// The child's `/dev` tmpfs.
    Dev,
    /// The tmpfs of mount number `i`.
    Mount(usize),
}

/// One prepared [`RunFile`].
pub struct UserFile {
    pub base: FileBase,
    /// Directories between the base and the file, created if missing.
    pub dirs: Vec<CString>,
    pub name: CString,
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

fn cstr(what: &str, s: impl Into<Vec<u8>>) -> Result<CString> {
    CString::new(s).map_err(|_| Error::msg(format!("run: {what} contains a NUL byte")))
}

/// Cleans an absolute path lexically: `["a", "b"]` for `/a/./x/../b/`. `..` never climbs
/// above `/`, as inside a chroot.
pub fn clean_absolute(what: &str, path: &str) -> Result<Vec<Vec<u8>>> {
    if !path.starts_with('/') {
        return Err(Error::msg(format!(
            "run: {what} {path:?} is not an absolute path"
        )));
    }
    if path.contains('\0') {
        return Err(Error::msg(format!(
            "run: {what} {path:?} contains a NUL byte"
        )));
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.as_bytes().to_vec()),
        }
    }
    Ok(out)
}

/// Prepares the mounts; `dev_dir` is `ROOTFS/dev`, where the secret stage lives.
pub fn mounts(specs: &[RunMount], dev_dir: &str) -> Result<Vec<UserMount>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let shown = m.target().to_string();
            let lexical = clean_absolute("mount target", &shown)?;
            if lexical.is_empty() {
                return Err(Error::msg(format!(
                    "run: cannot mount on the root ({shown:?})"
                )));
            }
            let (dir, kind) = match m {
                RunMount::Tmpfs { size_bytes, .. } => {
                    let data = match size_bytes {
                        Some(n) if *n > 0 => Some(cstr("tmpfs size", format!("size={n}"))?),
                        _ => None,
                    };
                    (true, MountKind::Tmpfs { data })
                }
                RunMount::Bind {
                    source, readonly, ..
                } => {
                    if !source.starts_with('/') {
                        return Err(Error::msg(format!(
                            "run: bind source {source:?} is not an absolute path"
                        )));
                    }
                    let source = cstr("bind source", source.as_str())?;
                    (
                        true,
                        MountKind::Bind {
                            source,
                            readonly: *readonly,
                        },
                    )
                }
                RunMount::Secret {
                    data,
                    mode,
                    uid,
                    gid,
                    ..
                } => (
                    false,
                    MountKind::Secret {
                        name: cstr("secret", i.to_string())?,
                        staged: cstr("rootfs", format!("{dev_dir}/{SECRET_STAGE}/{i}"))?,
                        data: data.clone(),
                        mode: mode & 0o7777,
                        uid: *uid,
                        gid: *gid,
                    },
                ),
            };
            Ok(UserMount {
                shown,
                lexical,
                path: Vec::new(),
                create_from: 0,
                dir,
                kind,
            })
        })
        .collect()
}

/// Prepares the files: each must lie strictly below `/dev/` or below a tmpfs target (the
/// deepest mount target above it decides, and it must be a tmpfs).
pub fn files(specs: &[RunFile], mounts: &[UserMount]) -> Result<Vec<UserFile>> {
    specs
        .iter()
        .map(|f| {
            let comps = clean_absolute("file path", &f.path)?;
            let under = |base: &[Vec<u8>]| comps.len() > base.len() && comps.starts_with(base);
            let deepest = mounts
                .iter()
                .enumerate()
                .filter(|(_, m)| under(&m.lexical))
                .max_by_key(|(i, m)| (m.lexical.len(), *i));
            let (base, skip) = match deepest {
                Some((i, m)) if matches!(m.kind, MountKind::Tmpfs { .. }) => {
                    (FileBase::Mount(i), m.lexical.len())
                }
                Some((_, m)) => {
                    return Err(Error::msg(format!(
                        "run: file {:?} lies under mount {:?}, which is not a tmpfs",
                        f.path, m.shown
                    )))
                }
                None if under(&[b"dev".to_vec()]) && comps[1] != SECRET_STAGE.as_bytes() => {
                    (FileBase::Dev, 1)
                }
                None => {
                    return Err(Error::msg(format!(
                        "run: file {:?} must lie below /dev/ or below a tmpfs mount",
                        f.path
                    )))
                }
            };
            let rest = &comps[skip..];
            let (name, dirs) = rest
                .split_last()
                .ok_or_else(|| Error::msg(format!("run: file {:?} has no name", f.path)))?;
            Ok(UserFile {
                base,
                dirs: dirs
                    .iter()
                    .map(|d| cstr("file path", d.as_slice()))
                    .collect::<Result<_>>()?,
                name: cstr("file path", name.as_slice())?,
                data: f.data.clone(),
                mode: f.mode & 0o7777,
                uid: f.uid,
                gid: f.gid,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpfs(target: &str) -> RunMount {
        RunMount::Tmpfs {
            target: target.into(),
            size_bytes: Some(4096),
        }
    }

    fn file(path: &str) -> RunFile {
        RunFile {
            path: path.into(),
            data: b"x".to_vec(),
            mode: 0o100755,
            uid: 1,
            gid: 2,
        }
    }

    #[test]
    fn clean_applies_dot_dot_lexically_and_wants_absolute_paths() {
        let c = clean_absolute("t", "/a/./b/../c//").expect("clean");
        assert_eq!(c, vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(clean_absolute("t", "/../..").expect("clean").is_empty());
        assert!(clean_absolute("t", "a/b").is_err());
        assert!(clean_absolute("t", "/a\0").is_err());
    }

    #[test]
    fn mounts_refuse_root_and_relative_sources() {
        assert!(mounts(&[tmpfs("/x/..")], "/r/dev").is_err());
        let bind = RunMount::Bind {
            target: "/c".into(),
            source: "rel".into(),
            readonly: false,
        };
        assert!(mounts(&[bind], "/r/dev").is_err());
        let secret = RunMount::Secret {
            target: "/run/secrets/x".into(),
            data: b"s".to_vec(),
            mode: 0o100400,
            uid: 0,
            gid: 0,
        };
        let m = mounts(&[tmpfs("/t"), secret], "/r/dev").expect("mounts");
        assert!(m[0].dir && !m[1].dir);
        match &m[0].kind {
            MountKind::Tmpfs { data } => assert_eq!(data.as_deref(), Some(c"size=4096")),
            _ => panic!("not a tmpfs"),
        }
        match &m[1].kind {
            MountKind::Secret { staged, mode, .. } => {
                assert_eq!(staged.as_c_str(), c"/r/dev/.kiln-secrets/1");
                assert_eq!(*mode, 0o400);
            }
            _ => panic!("not a secret"),
        }
    }

    #[test]
    fn files_go_to_dev_or_the_deepest_tmpfs() {
        let bind = RunMount::Bind {
            target: "/t/b".into(),
            source: "/src".into(),
            readonly: true,
        };
        let m = mounts(&[tmpfs("/t"), bind, tmpfs("/t/b/c")], "/r/dev").expect("mounts");
        let f = files(
            &[file("/dev/pipes/EOF"), file("/t/x/y"), file("/t/b/c/z")],
            &m,
        )
        .expect("files");
        assert_eq!(f[0].base, FileBase::Dev);
        assert_eq!(f[0].dirs, vec![c"pipes".to_owned()]);
        assert_eq!(f[0].name.as_c_str(), c"EOF");
        assert_eq!(f[0].mode, 0o755);
        assert_eq!(f[1].base, FileBase::Mount(0));
        assert_eq!(f[1].dirs.len(), 1);
        assert_eq!(f[2].base, FileBase::Mount(2));
        assert!(f[2].dirs.is_empty());
        for bad in [
            "/t/b/x",
            "/etc/x",
            "/dev",
            "/t",
            "/dev/.kiln-secrets/0",
            "dev/x",
        ] {
            assert!(files(&[file(bad)], &m).is_err(), "{bad}");
        }
    }
}
