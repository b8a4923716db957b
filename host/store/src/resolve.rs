//! Resolving a path inside a root the way `openat2(RESOLVE_IN_ROOT)` does, over any index of
//! entries: the one implementation behind every view of layers (the flattened [`crate::rootfs`]
//! and the build engine's header-only layer views).
//!
//! `..` stops at the root, absolute symlink targets start again at the root, every
//! intermediate symlink is followed and the last component only if asked (a trailing `/`
//! asks), at most [`MAX_SYMLINK_HOPS`] times. Nothing here touches a filesystem: the index
//! answers each lookup.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Symlinks followed while resolving one path before giving up (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// What an index says of one clean relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    Symlink(PathBuf),
    /// Anything else that exists (a file, a hardlink, a device, a fifo).
    Other,
    Missing,
}

/// Where a path led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The clean relative path reached, symlinks followed (empty: the root).
    pub path: PathBuf,
    /// Every component before the last was a directory (or a symlink to one) and no empty
    /// symlink was met: the path is real up to its last component, which may be missing.
    pub parents_exist: bool,
}

/// More than [`MAX_SYMLINK_HOPS`] symlinks on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: more than {MAX_SYMLINK_HOPS} levels of symbolic links")]
pub struct TooManyLinks(pub String);

/// Resolves `path` with `look` answering for each clean relative path. A missing or
/// non-directory component on the way is walked through lexically (and recorded in
/// [`Resolved::parents_exist`]), so a destination that does not exist yet still resolves.
pub fn resolve_in_root(path: &str, follow_last: bool, look: impl Fn(&Path) -> Entry) -> Result<Resolved, TooManyLinks> {
    // Components still to walk, the next one last.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, Path::new(path));
    let mut cur = PathBuf::new();
    let mut hops = 0;
    let mut parents_exist = true;
    while let Some(name) = todo.pop() {
        match name.as_encoded_bytes() {
            b"" | b"." => continue,
            b".." => {
                cur.pop(); // At the root, stays there.
                continue;
            }
            _ => {}
        }
        let next = join_image_path(&cur, &name);
        let last = todo.is_empty();
        match look(&next) {
            Entry::Dir => cur = next,
            Entry::Symlink(target) if !last || follow_last => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(TooManyLinks(path.to_string()));
                }
                if target.as_os_str().is_empty() {
                    parents_exist = false;
                    cur = next;
                    continue;
                }
                if target.has_root() {
                    cur = PathBuf::new();
                }
                push_components(&mut todo, &target);
            }
            _ if last => cur = next,
            Entry::Symlink(_) | Entry::Other | Entry::Missing => {
                parents_exist = false;
                cur = next;
            }
        }
    }
    Ok(Resolved { path: cur, parents_exist })
}

/// `dir/name` for paths inside an image, which are `/`-separated on every host (`Path::join`
/// would use `\` on Windows; Windows paths accept `/` too, so the result still works as a
/// `Path` there).
pub(crate) fn join_image_path(dir: &Path, name: impl AsRef<std::ffi::OsStr>) -> PathBuf {
    if dir.as_os_str().is_empty() {
        return PathBuf::from(name.as_ref());
    }
    let mut joined = dir.as_os_str().to_os_string();
    if !dir.as_os_str().as_encoded_bytes().ends_with(b"/") {
        joined.push("/");
    }
    joined.push(name.as_ref());
    PathBuf::from(joined)
}

/// Pushes `path`'s components, last first; a trailing `/` adds a `.` so the last real
/// component is walked through (followed if a symlink).
fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.len() > 1 && bytes.ends_with(b"/") {
        todo.push(".".into());
    }
    for part in bytes.split(|b| *b == b'/').rev() {
        if !part.is_empty() {
            // SAFETY: `part` comes from `as_encoded_bytes` of an OsStr and is split only at
            // the ASCII byte '/', which the encoding allows (a boundary next to valid UTF-8).
            todo.push(unsafe { std::ffi::OsStr::from_encoded_bytes_unchecked(part) }.to_os_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn index(entries: &[(&str, Entry)]) -> HashMap<PathBuf, Entry> {
        entries.iter().map(|(p, e)| (PathBuf::from(p), e.clone())).collect()
    }

    fn run(idx: &HashMap<PathBuf, Entry>, path: &str, follow: bool) -> Result<Resolved, TooManyLinks> {
        resolve_in_root(path, follow, |p| idx.get(p).cloned().unwrap_or(Entry::Missing))
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let idx = index(&[
            ("etc", Entry::Dir),
            ("etc/passwd", Entry::Other),
            ("abs", Entry::Symlink("/etc".into())),
            ("up", Entry::Symlink("../../../etc".into())),
            ("file-link", Entry::Symlink("etc/passwd".into())),
            ("loop", Entry::Symlink("loop".into())),
        ]);
        let ok = |p: &str, follow: bool| run(&idx, p, follow).expect("resolve");
        assert_eq!(ok("/abs/passwd", false).path, PathBuf::from("etc/passwd"));
        assert_eq!(ok("up/passwd", false).path, PathBuf::from("etc/passwd"));
        assert_eq!(ok("/../../etc/./passwd", false).path, PathBuf::from("etc/passwd"));
        assert_eq!(ok("file-link", false).path, PathBuf::from("file-link"));
        assert_eq!(ok("file-link", true).path, PathBuf::from("etc/passwd"));
        assert_eq!(ok("abs/", false).path, PathBuf::from("etc"), "a trailing / follows the last link");
        assert_eq!(ok("/", false).path, PathBuf::new());
        assert!(run(&idx, "loop/x", false).is_err());
    }

    #[test]
    fn missing_parents_are_walked_lexically_and_reported() {
        let idx = index(&[("etc", Entry::Dir), ("etc/passwd", Entry::Other), ("empty", Entry::Symlink("".into()))]);
        let r = run(&idx, "/etc/new", false).expect("resolve");
        assert_eq!((r.path, r.parents_exist), (PathBuf::from("etc/new"), true));
        let r = run(&idx, "/no/such/file", false).expect("resolve");
        assert_eq!((r.path, r.parents_exist), (PathBuf::from("no/such/file"), false));
        let r = run(&idx, "/etc/passwd/x", false).expect("resolve");
        assert!(!r.parents_exist, "a file used as a directory");
        assert!(!run(&idx, "empty/x", false).expect("resolve").parents_exist);
    }
}
