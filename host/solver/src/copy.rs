//! COPY from the build context, done on the host: the sources become a layer tar directly,
//! without booting a guest.
//!
//! Sources are confined to the context: paths are cleaned as if rooted at the context (so `..`
//! cannot climb out, as in BuildKit), and a source that resolves through a symlink to outside
//! the context is refused. Symlinks inside copied directories are copied as symlinks, never
//! followed. Files are owned by root, keep their mode (or `--chmod`) and mtime.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use kiln_frontend::dockerignore::Dockerignore;

/// Cleans `p` as a path rooted at `/`: no `..` above the root, no `.`, no empty parts.
pub fn clean_rooted(p: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Where a COPY writes: the destination joined to the working directory, as a relative path
/// inside the image, plus whether it names a directory (trailing slash).
pub fn destination(dst: &str, workdir: &str) -> (PathBuf, bool) {
    let is_dir = dst.ends_with('/') || dst == "." || dst.ends_with("/.");
    let joined = if dst.starts_with('/') { dst.to_string() } else { format!("{workdir}/{dst}") };
    (clean_rooted(&joined), is_dir)
}

fn err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// What one COPY copies, and how.
pub struct CopySpec<'a> {
    pub srcs: &'a [String],
    pub dst: &'a str,
    pub workdir: &'a str,
    pub chmod: Option<u32>,
    /// No entry is dated later than this (SOURCE_DATE_EPOCH), when set.
    pub clamp_mtime: Option<i64>,
    /// The context's `.dockerignore`: excluded paths are invisible to COPY.
    pub ignore: Option<&'a Dockerignore>,
}

/// Writes the layer tar for `COPY srcs dst` to `out`.
pub fn copy_layer<W: Write>(context: &Path, spec: &CopySpec<'_>, out: W) -> io::Result<W> {
    let CopySpec { srcs, dst, workdir, chmod, clamp_mtime, ignore } = *spec;
    let context = fs::canonicalize(context).map_err(|e| io::Error::new(e.kind(), format!("build context {}: {e}", context.display())))?;
    let (dest, dest_is_dir) = destination(dst, workdir);
    if srcs.len() > 1 && !dest_is_dir {
        return Err(err(format!("when using COPY with more than one source file, the destination must be a directory and end with a /: {dst}")));
    }
    let mut tar = Clamped { tar: tar::Builder::new(out), clamp_mtime };
    tar.tar.follow_symlinks(false);
    for src in srcs {
        if src.contains(['*', '?', '[']) {
            return Err(err(format!("COPY {src}: wildcards are not supported by kiln yet")));
        }
        let rel = clean_rooted(src);
        let resolved = fs::canonicalize(context.join(&rel))
            .map_err(|e| io::Error::new(e.kind(), format!("COPY {src}: not found in the build context ({e})")))?;
        if !resolved.starts_with(&context) {
            return Err(err(format!("COPY {src}: resolves to a path outside the build context")));
        }
        let walker = Walker { context: &context, ignore, chmod };
        let excluded = walker.excluded(&resolved);
        let meta = fs::metadata(&resolved)?;
        if excluded && !(meta.is_dir() && ignore.is_some_and(Dockerignore::has_exceptions)) {
            return Err(err(format!("COPY {src}: not found in the build context (excluded by .dockerignore)")));
        }
        if meta.is_dir() {
            // A directory's contents are copied into the destination directory.
            append_dir_entry(&mut tar, &dest, &meta, None)?;
            walker.copy_tree(&mut tar, &resolved, &dest, &mut Vec::new())?;
        } else {
            let name = match (dest_is_dir, resolved.file_name()) {
                (true, Some(n)) => dest.join(n),
                (true, None) => return Err(err(format!("COPY {src}: source has no file name"))),
                (false, _) => dest.clone(),
            };
            if name.as_os_str().is_empty() {
                return Err(err(format!("COPY {src} {dst}: cannot replace the root directory with a file")));
            }
            append_file(&mut tar, &resolved, &name, &meta, chmod)?;
        }
    }
    tar.tar.into_inner()
}

/// A tar builder that dates no entry later than `clamp_mtime`.
struct Clamped<W: Write> {
    tar: tar::Builder<W>,
    clamp_mtime: Option<i64>,
}

impl<W: Write> Clamped<W> {
    fn clamp(&self, h: &mut tar::Header) {
        if let (Some(c), Ok(m)) = (self.clamp_mtime, h.mtime()) {
            h.set_mtime(m.min(u64::try_from(c).unwrap_or(0)));
        }
    }

    fn append_data(&mut self, h: &mut tar::Header, path: &Path, data: impl io::Read) -> io::Result<()> {
        self.clamp(h);
        self.tar.append_data(h, path, data)
    }

    fn append_link(&mut self, h: &mut tar::Header, path: &Path, target: PathBuf) -> io::Result<()> {
        self.clamp(h);
        self.tar.append_link(h, path, target)
    }
}

fn base_header(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_mode(meta.permissions().mode() & 0o7777);
    h.set_size(0);
    h
}

fn append_dir_entry<W: Write>(tar: &mut Clamped<W>, path: &Path, meta: &fs::Metadata, chmod: Option<u32>) -> io::Result<()> {
    if path.as_os_str().is_empty() {
        return Ok(()); // The root directory itself is never an entry.
    }
    let mut h = base_header(meta, tar::EntryType::Directory);
    h.set_mode(chmod.unwrap_or(0o755));
    tar.append_data(&mut h, path, io::empty())
}

fn append_file<W: Write>(tar: &mut Clamped<W>, src: &Path, path: &Path, meta: &fs::Metadata, chmod: Option<u32>) -> io::Result<()> {
    let mut h = base_header(meta, tar::EntryType::Regular);
    if let Some(m) = chmod {
        h.set_mode(m);
    }
    h.set_size(meta.len());
    let f = fs::File::open(src)?;
    tar.append_data(&mut h, path, f)
}

/// Walks a source directory, honouring `.dockerignore`.
struct Walker<'a> {
    context: &'a Path,
    ignore: Option<&'a Dockerignore>,
    chmod: Option<u32>,
}

impl Walker<'_> {
    fn excluded(&self, path: &Path) -> bool {
        match (self.ignore, path.strip_prefix(self.context)) {
            (Some(ig), Ok(rel)) if !rel.as_os_str().is_empty() => ig.excludes(&rel.to_string_lossy()),
            _ => false,
        }
    }

    /// Copies `dir`'s entries to `dest`. `pending` holds directory entries not written yet
    /// because `.dockerignore` excluded them: they are written only if something below them is
    /// re-included by an exception, so a wholly excluded directory leaves no trace.
    fn copy_tree<W: Write>(
        &self,
        tar: &mut Clamped<W>,
        dir: &Path,
        dest: &Path,
        pending: &mut Vec<(PathBuf, tar::Header)>,
    ) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        let may_reinclude = self.ignore.is_some_and(Dockerignore::has_exceptions);
        for entry in entries {
            let path = entry.path();
            let target = dest.join(entry.file_name());
            let meta = fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            let excluded = self.excluded(&path);
            if excluded && !(ft.is_dir() && may_reinclude) {
                continue;
            }
            if !excluded {
                // Something is written below these directories: write them first.
                for (p, mut h) in pending.drain(..) {
                    tar.append_data(&mut h, &p, io::empty())?;
                }
            }
            if ft.is_symlink() {
                let mut h = base_header(&meta, tar::EntryType::Symlink);
                h.set_mode(0o777);
                let link = fs::read_link(&path)?;
                tar.append_link(&mut h, &target, link)?;
            } else if ft.is_dir() {
                let mut h = base_header(&meta, tar::EntryType::Directory);
                if let Some(m) = self.chmod {
                    h.set_mode(m);
                }
                let depth = pending.len();
                if excluded {
                    pending.push((target.clone(), h));
                } else {
                    tar.append_data(&mut h, &target, io::empty())?;
                }
                self.copy_tree(tar, &path, &target, pending)?;
                pending.truncate(depth);
            } else if ft.is_file() {
                append_file(tar, &path, &target, &meta, self.chmod)?;
            } else {
                return Err(err(format!("COPY: {} is not a regular file, directory or symlink", path.display())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn copy(ctx: &Path, srcs: &[&str], dst: &str, workdir: &str, chmod: Option<u32>) -> io::Result<Vec<u8>> {
        let srcs: Vec<String> = srcs.iter().map(|s| s.to_string()).collect();
        copy_layer(ctx, &CopySpec { srcs: &srcs, dst, workdir, chmod, clamp_mtime: None, ignore: None }, Vec::new())
    }

    fn entries(tar: &[u8]) -> Vec<(String, u32)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                (e.path().expect("path").display().to_string(), e.header().mode().expect("mode"))
            })
            .collect()
    }

    #[test]
    fn destination_rules() {
        assert_eq!(destination("/app/", "/"), (PathBuf::from("app"), true));
        assert_eq!(destination("x", "/work"), (PathBuf::from("work/x"), false));
        assert_eq!(destination(".", "/work"), (PathBuf::from("work"), true));
        assert_eq!(clean_rooted("../../etc/passwd"), PathBuf::from("etc/passwd"));
    }

    #[test]
    fn files_dirs_and_symlinks() {
        let ctx = tempfile::tempdir().expect("tempdir");
        fs::write(ctx.path().join("a"), "A").expect("write");
        fs::create_dir(ctx.path().join("d")).expect("mkdir");
        fs::write(ctx.path().join("d/f"), "F").expect("write");
        symlink("/etc/passwd", ctx.path().join("d/l")).expect("symlink");
        let tar = copy(ctx.path(), &["a"], "/bin/", "/", None).expect("copy");
        assert_eq!(entries(&tar), vec![("bin/a".into(), 0o644)]);
        let tar = copy(ctx.path(), &["d"], "/srv", "/", Some(0o700)).expect("copy");
        let got: Vec<String> = entries(&tar).into_iter().map(|e| e.0).collect();
        assert_eq!(got, vec!["srv", "srv/f", "srv/l"]);
        let tar = copy(ctx.path(), &["a"], "renamed", "/w", Some(0o750)).expect("copy");
        assert_eq!(entries(&tar), vec![("w/renamed".into(), 0o750)]);
    }

    #[test]
    fn dockerignore_hides_paths_and_exceptions_reinclude() {
        let ctx = tempfile::tempdir().expect("tempdir");
        for f in ["app/main.c", "app/notes.md", "app/README.md", "app/build/out.o", "app/logs/x.log", "secret.key"] {
            let p = ctx.path().join(f);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, "x").expect("write");
        }
        let ig = Dockerignore::parse("*.key\napp/**/*.md\n!app/README.md\napp/build\napp/logs\n!app/logs/x.log\n").expect("ignore");
        let srcs = vec!["app".to_string()];
        let spec = CopySpec { srcs: &srcs, dst: "/src", workdir: "/", chmod: None, clamp_mtime: None, ignore: Some(&ig) };
        let tar = copy_layer(ctx.path(), &spec, Vec::new()).expect("copy");
        let got: Vec<String> = entries(&tar).into_iter().map(|e| e.0).collect();
        assert_eq!(got, vec!["src", "src/README.md", "src/logs", "src/logs/x.log", "src/main.c"]);
        let srcs = vec!["secret.key".to_string()];
        let spec = CopySpec { srcs: &srcs, dst: "/", workdir: "/", chmod: None, clamp_mtime: None, ignore: Some(&ig) };
        let e = copy_layer(ctx.path(), &spec, Vec::new()).expect_err("excluded");
        assert!(e.to_string().contains("excluded by .dockerignore"), "{e}");
    }

    #[test]
    fn escapes_and_bad_sources_are_refused() {
        let outer = tempfile::tempdir().expect("tempdir");
        let ctx = outer.path().join("ctx");
        fs::create_dir(&ctx).expect("mkdir");
        fs::write(outer.path().join("secret"), "s").expect("write");
        symlink("../secret", ctx.join("link")).expect("symlink");
        fs::write(ctx.join("a"), "A").expect("write");
        assert!(copy(&ctx, &["link"], "/x", "/", None).is_err());
        // `..` is clamped at the context root: ../secret means <context>/secret, which is absent.
        assert!(copy(&ctx, &["../secret"], "/x", "/", None).is_err());
        assert!(copy(&ctx, &["missing"], "/x", "/", None).is_err());
        assert!(copy(&ctx, &["a", "a"], "/x", "/", None).is_err());
        // SOURCE_DATE_EPOCH: entries are dated no later than the clamp.
        let srcs = vec!["a".to_string()];
        let spec = CopySpec { srcs: &srcs, dst: "/x", workdir: "/", chmod: None, clamp_mtime: Some(1000), ignore: None };
        let tar = copy_layer(&ctx, &spec, Vec::new()).expect("copy");
        let mut a = tar::Archive::new(tar.as_slice());
        let mtimes: Vec<u64> = a.entries().expect("entries").map(|e| e.expect("entry").header().mtime().expect("mtime")).collect();
        assert_eq!(mtimes, vec![1000]);
        assert!(copy(&ctx, &["*.txt"], "/x/", "/", None).is_err());
    }
}
