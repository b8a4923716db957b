//! `RUN --mount=type=bind` with BuildKit's semantics: `source` (default: the root) is read from
//! `from` — a stage (name or index) or an image — or, without `from`, from the build context
//! (honouring `.dockerignore`); the process sees it at `target`, read-only unless `rw`, in
//! which case its writes are discarded after the step (see [`crate::guest`]).
//!
//! The cache key holds what is mounted: for the context, a hash of the entries under `source`
//! (paths, modes, sizes, contents and link targets; not mtimes, as BuildKit's content hash);
//! for a stage or image, its cache key (which names its content) and the source path.
//!
//! The source is read through [`crate::copy`]'s [`SourceFs`]es, so it resolves inside its tree
//! (the context's symlinks never lead out of it, a stage's resolve inside the stage's root) and
//! becomes a tar whose single top entry is [`ENTRY`] — the source directory with its contents,
//! or the source file. The guest extracts it once per build per content
//! ([`crate::guest::GuestSession::bind_source`]) and mounts `<dir>/`[`ENTRY`].

use std::io::{self, Seek};

use kiln_frontend::dockerignore::has_wildcards;
use kiln_store::digest::HashingWriter;

use crate::copy::{self, ContextFs, CopySpec, Dest, SourceFs, Src, StageFs};
use crate::mounts::BindUse;
use crate::stage::{lock, Build};
use crate::steps::Origin;
use crate::{BuildError, Reporter};

/// Name of the source in the tar uploaded for a bind mount.
pub const ENTRY: &str = "mnt";

/// A bind mount whose origin is known and whose content is named.
pub struct ResolvedBind {
    pub bind: BindUse,
    origin: Origin,
    /// What is mounted: part of the cache key, and how the guest knows it has it already.
    pub identity: String,
}

fn bind_error(b: &BindUse, cause: impl std::fmt::Display) -> BuildError {
    BuildError::Invalid(format!("bind mount on {}: {cause}", b.target))
}

/// The copy that puts `source` at [`ENTRY`] (a directory keeps its own metadata).
fn spec(source: &str, clamp_mtime: Option<i64>, now: u64) -> CopySpec<'_> {
    CopySpec {
        srcs: vec![Src::Path(source)],
        dst: "/mnt",
        workdir: "/",
        chmod: None,
        owner: None,
        clamp_mtime,
        parents: false,
        exclude: None,
        now,
    }
}

/// The identity of a context source: a hash of the tar [`ENTRY`] would be, with every mtime 0
/// (touching a file does not change what the RUN reads).
fn context_identity(ctx: &ContextFs<'_>, source: &str) -> io::Result<String> {
    let sink = copy::write_copy(ctx, &spec(source, Some(0), 0), Dest::Literal, HashingWriter::new(io::sink()))?;
    Ok(format!("context {}", sink.finish().0))
}

impl Build<'_> {
    /// Finds each bind's origin and names its content (reading the context's files: a missing
    /// or excluded context source fails here). A stage's source is checked by
    /// [`Self::check_binds`], only when the step runs: a cache hit proves it was there.
    pub(crate) fn resolve_binds(&self, binds: &[BindUse], platform: &kiln_frontend::graph::Platform, target: usize, out: &Reporter) -> Result<Vec<ResolvedBind>, BuildError> {
        let mut resolved = Vec::new();
        for b in binds {
            // BuildKit takes the source as a path; COPY's wildcard matching would not.
            if has_wildcards(&b.source) {
                return Err(bind_error(b, format!("source {:?}: wildcards are not supported", b.source)));
            }
            let (origin, identity) = match &b.from {
                None => {
                    let ctx = ContextFs::new(&self.opts.context, self.opts.ignore.as_ref()).map_err(|e| bind_error(b, e))?;
                    (Origin::Context, context_identity(&ctx, &b.source).map_err(|e| bind_error(b, e))?)
                }
                Some(from) => {
                    let img = self.origin(from, platform, target, out).map_err(|e| match e {
                        BuildError::Invalid(m) => bind_error(b, m),
                        other => other,
                    })?;
                    let identity = format!("stage {} /{}", img.key.as_str(), copy::clean_rooted(&b.source).display());
                    (Origin::Image(Box::new(img)), identity)
                }
            };
            resolved.push(ResolvedBind { bind: b.clone(), origin, identity });
        }
        Ok(resolved)
    }

    /// Fails unless the source of every bind from a stage or image exists (reads only the
    /// layer indexes; the context's sources were checked by [`Self::resolve_binds`]).
    pub(crate) fn check_binds(&self, binds: &[ResolvedBind]) -> Result<(), BuildError> {
        for rb in binds {
            let Origin::Image(img) = &rb.origin else { continue };
            let view = lock(&self.indexes).view(self.staging()?, &img.layers)?;
            let (_, meta) = view.resolve(&rb.bind.source, true)?;
            if meta.is_none() {
                let from = rb.bind.from.as_deref().unwrap_or_default();
                return Err(bind_error(&rb.bind, format!("{}: not found in {from}", rb.bind.source)));
            }
        }
        Ok(())
    }

    /// The tar to upload for a bind (its source at [`ENTRY`]), in a rewound temp file.
    pub(crate) fn bind_tar(&self, rb: &ResolvedBind) -> Result<std::fs::File, BuildError> {
        let b = &rb.bind;
        let file = tempfile::tempfile().map_err(|e| bind_error(b, format!("creating a temp file: {e}")))?;
        let spec = spec(&b.source, self.clamp, u64::try_from(self.created).unwrap_or(0));
        let written = match &rb.origin {
            Origin::Context => {
                let ctx = ContextFs::new(&self.opts.context, self.opts.ignore.as_ref()).map_err(|e| bind_error(b, e))?;
                copy::write_copy(&ctx, &spec, Dest::Literal, file)
            }
            Origin::Image(img) => {
                let digests: Vec<_> = img.layers.iter().map(|l| l.digest.clone()).collect();
                let stage = StageFs::new(self.staging()?, &digests)?;
                copy::write_copy(&stage as &dyn SourceFs, &spec, Dest::Literal, file)
            }
        };
        let mut file = written.map_err(|e| bind_error(b, e))?;
        file.rewind().map_err(|e| bind_error(b, format!("temp file: {e}")))?;
        Ok(file)
    }
}

// Unix only: the tests make symlinks and check modes, which Windows files do not have.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::fs;

    fn entries(ctx: &ContextFs<'_>, source: &str) -> Vec<(String, tar::EntryType, u64)> {
        let tar = copy::write_copy(ctx, &spec(source, None, 0), Dest::Literal, Vec::new()).expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut out = Vec::new();
        for e in archive.entries().expect("entries") {
            let e = e.expect("entry");
            out.push((e.path().expect("path").display().to_string(), e.header().entry_type(), e.header().uid().expect("uid")));
        }
        out
    }

    #[test]
    fn the_source_becomes_the_entry_and_its_content_the_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("src/sub")).expect("mkdir");
        fs::write(root.join("src/a"), "A").expect("a");
        fs::write(root.join("src/sub/b"), "B").expect("b");
        fs::write(root.join("src/skip.log"), "L").expect("log");
        fs::write(root.join("other"), "O").expect("other");
        std::os::unix::fs::symlink("src/a", root.join("link")).expect("symlink");
        std::os::unix::fs::symlink("/etc", root.join("escape")).expect("symlink");
        let ignore = kiln_frontend::dockerignore::Dockerignore::parse("**/*.log").expect("ignore");
        let ctx = ContextFs::new(root, Some(&ignore)).expect("ctx");

        // A directory: its contents below ENTRY, owned by root, .dockerignore honoured.
        let dir_entries = entries(&ctx, "src");
        let names: Vec<&str> = dir_entries.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(names, ["mnt", "mnt/a", "mnt/sub", "mnt/sub/b"]);
        assert!(dir_entries.iter().all(|(_, _, uid)| *uid == 0));
        // A file (also through a symlink): ENTRY is the file.
        assert_eq!(entries(&ctx, "/src/a"), [("mnt".to_string(), tar::EntryType::Regular, 0)]);
        assert_eq!(entries(&ctx, "link"), [("mnt".to_string(), tar::EntryType::Regular, 0)]);
        // The root: everything not ignored.
        assert!(entries(&ctx, "/").iter().any(|(p, _, _)| p == "mnt/other"));

        let id = |source: &str| context_identity(&ctx, source).expect(source);
        let before = id("src");
        fs::write(root.join("other"), "changed").expect("other");
        fs::write(root.join("src/skip.log"), "changed").expect("log");
        let touched = fs::File::options().write(true).open(root.join("src/a")).expect("open");
        touched.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345)).expect("touch");
        assert_eq!(id("src"), before, "files outside the source, ignored files and mtimes do not count");
        fs::write(root.join("src/sub/b"), "B2").expect("b");
        assert_ne!(id("src"), before, "content under the source counts");
        assert_eq!(id("src/a"), id("link"), "a symlink's target is what is mounted");
        let missing = context_identity(&ctx, "nope").expect_err("missing");
        assert!(missing.to_string().contains("nope: not found in the build context"), "{missing}");
        assert!(context_identity(&ctx, "src/skip.log").is_err(), "an ignored source is not there");
        // Nothing outside the context is read, through a symlink or `..`.
        let outside = context_identity(&ctx, "escape").expect_err("escape");
        assert!(outside.to_string().contains("outside the build context"), "{outside}");
        assert!(context_identity(&ctx, "../../etc").is_err());
    }
}
