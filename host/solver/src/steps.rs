//! The steps that make layers: RUN (in the guest), COPY/ADD and WORKDIR's directory (on the
//! host). Each names its cache key first, from inputs alone, and does the work only on a miss.

use std::io::{self, Seek, Write};

use kiln_frontend::command::{add_source_kind, values, AddSourceKind, CopyLike, Located, Run, Source};
use kiln_frontend::config::created_by;
use kiln_frontend::dockerignore::Dockerignore;
use kiln_frontend::graph::Scope;
use kiln_store::LayerInfo;
use kiln_store::digest::HashingWriter;

use crate::copy::{self, ContextFs, CopySpec, Dest, SourceFs, Src};
use crate::guest::{GuestBind, RunRequest};
use crate::stage::{first_line, lock, Build, ImageState, StageState};
use crate::{add, mounts, users, BuildError, Reporter};

/// Where RUN --mount=type=cache directories are kept between builds, below the store root.
pub const CACHE_MOUNTS: &str = "cache-mounts";

/// Joins strings with NUL, which none of them can contain, for cache key parts.
fn join_nul(parts: &[String]) -> String {
    parts.join("\0")
}


/// Where COPY and bind mounts read from.
pub(crate) enum Origin {
    Context,
    /// A stage's or image's result, with its cache key as the content identity.
    Image(Box<ImageState>),
}

impl Build<'_> {
    /// Ingests a layer tar written by `write` (through a temp file: layers can be large).
    fn ingest_with(&self, write: impl FnOnce(std::fs::File) -> io::Result<std::fs::File>) -> Result<LayerInfo, BuildError> {
        let file = tempfile::tempfile().map_err(|e| BuildError::Invalid(format!("creating a temp file: {e}")))?;
        let mut file = write(file).map_err(|e| BuildError::Invalid(e.to_string()))?;
        file.flush().and_then(|_| file.rewind()).map_err(|e| BuildError::Invalid(format!("temp layer file: {e}")))?;
        Ok(self.staging()?.store().ingest_layer(io::BufReader::new(file))?)
    }

    pub(crate) fn run(&self, st: &mut StageState, scope: &Scope, cmd: &Located, run: &Run, out: &Reporter) -> Result<(), BuildError> {
        let config = &st.config.config;
        let prepared = mounts::prepare(run, config, &self.opts.secrets, &self.opts.ssh)?;
        let binds = self.resolve_binds(&prepared.binds, &st.platform, st.target, out)?;
        let bind_part = binds.iter().map(|b| b.identity.as_str()).collect::<Vec<_>>().join("\0");
        let argv = prepared.argv.clone();
        let env_pairs = config.env_pairs();
        let env = scope.run_env(&env_pairs);
        let cwd = config.working_dir.clone().unwrap_or_else(|| "/".into());
        let user = config.user.clone().unwrap_or_default();
        let clamp = self.clamp.map(|c| c.to_string()).unwrap_or_default();
        let (argv_part, env_part) = (join_nul(&argv), join_nul(&env));
        let mut parts = vec!["RUN", &argv_part, &env_part, &cwd, &user, &clamp, &prepared.key];
        // `--network=host` is the guest's network too (the VM is the sandbox), as is default.
        let network = match run.network {
            kiln_frontend::command::Network::None => kiln_sandbox::agent::Network::None,
            kiln_frontend::command::Network::Default if self.opts.network_none => kiln_sandbox::agent::Network::None,
            kiln_frontend::command::Network::Default | kiln_frontend::command::Network::Host => kiln_sandbox::agent::Network::Guest,
        };
        if network == kiln_sandbox::agent::Network::None {
            parts.push("network=none");
        }
        // What bind mounts hold (their options are in `prepared.key`).
        if !binds.is_empty() {
            parts.push(&bind_part);
        }
        let key = st.key.child(&parts);
        let history = created_by(&cmd.command, config, &cmd.text, &scope.history_args(&env_pairs));
        let clamp_mtime = self.clamp;
        self.layer_step(st, key, &cmd.text, history, out, |b, st, out| {
            let (uid, gid, groups) = if user.is_empty() {
                (0, 0, vec![])
            } else {
                let view = lock(&b.indexes).view(staged(&b.staging)?, &st.layers)?;
                users::run_user(&view, &user)?
            };
            b.check_binds(&binds)?;
            let session = b.guest_for(&st.platform, out)?;
            b.ensure_emulator(&session, &st.platform, out)?;
            let mut guest_binds = Vec::new();
            for rb in &binds {
                let dir = session.bind_source(&rb.identity, || b.bind_tar(rb))?;
                guest_binds.push(GuestBind { dir, target: rb.bind.target.clone(), readonly: rb.bind.readonly });
            }
            let mut env = env;
            env.extend(prepared.secret_env);
            let req = RunRequest {
                argv: &argv,
                env,
                cwd,
                uid,
                gid,
                groups,
                clamp_mtime,
                files: prepared.files,
                mounts: prepared.mounts,
                caches: prepared.caches.into_iter().map(|c| (c.id, c.target)).collect(),
                binds: guest_binds,
                ssh: prepared.ssh,
                network,
            };
            let staging = staged(&b.staging)?;
            session.run_step(staging, &st.layers, &req, out)
        })
    }

    /// WORKDIR: the config changed already; the directory is created (owned by USER) when the
    /// stage lacks it, as BuildKit does.
    pub(crate) fn workdir(&self, st: &mut StageState, cmd: &Located, out: &Reporter) -> Result<(), BuildError> {
        let dir = st.config.config.working_dir.clone().unwrap_or_else(|| "/".into());
        let history = created_by(&cmd.command, &st.config.config, &cmd.text, &[]);
        if dir == "/" {
            self.instant_step(st, &cmd.text, out);
            st.key = st.key.child(&["CONFIG", &history]);
            let h = self.history(history, true);
            st.history.push(h);
            return Ok(());
        }
        let user = st.config.config.user.clone().unwrap_or_default();
        let key = st.key.child(&["WORKDIR", &dir, &user]);
        let (now, clamp) = (self.now(), self.clamp);
        self.layer_step(st, key, &cmd.text, history, out, |b, st, _| {
            let view = lock(&b.indexes).view(staged(&b.staging)?, &st.layers)?;
            let owner = if user.is_empty() { None } else { Some(users::chown(&view, &user)?) };
            let (resolved, _) = view.resolve(&dir, true)?;
            let mut missing: Vec<&std::path::Path> =
                resolved.ancestors().filter(|a| !a.as_os_str().is_empty() && view.lookup(a).is_none()).collect();
            missing.reverse();
            let missing: Vec<std::path::PathBuf> = missing.into_iter().map(|p| p.to_path_buf()).collect();
            b.ingest_with(|file| {
                let mut tar = tar::Builder::new(file);
                for p in &missing {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_uid(owner.map_or(0, |o| u64::from(o.uid)));
                    h.set_gid(owner.map_or(0, |o| u64::from(o.gid)));
                    h.set_mtime(clamp.map_or(now, |c| now.min(u64::try_from(c).unwrap_or(0))));
                    h.set_size(0);
                    tar.append_data(&mut h, p, io::empty())?;
                }
                tar.into_inner()
            })
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.created).unwrap_or(0)
    }

    /// The stage or image `COPY --from` names.
    pub(crate) fn origin(&self, from: &str, platform: &kiln_frontend::graph::Platform, target: usize, out: &Reporter) -> Result<ImageState, BuildError> {
        let df = &self.opts.dockerfile;
        let lower = from.to_ascii_lowercase();
        let index = match lower.parse::<usize>() {
            Ok(n) if n < df.stages.len() => Some(n),
            Ok(_) => None,
            Err(_) => df.stage(&lower).map(|s| s.index),
        };
        match index {
            Some(i) => lock(&self.done).get(&(target, i)).cloned().ok_or_else(|| BuildError::Invalid(format!("internal: stage {from} has not run"))),
            None => self.image(from, platform, out),
        }
    }

    pub(crate) fn copy(&self, st: &mut StageState, cmd: &Located, c: &CopyLike, add: bool, out: &Reporter) -> Result<(), BuildError> {
        let origin = match &c.from {
            Some(from) => Origin::Image(Box::new(self.origin(from, &st.platform, st.target, out)?)),
            None => Origin::Context,
        };
        let exclude = if c.exclude.is_empty() {
            None
        } else {
            Some(Dockerignore::parse(&c.exclude.join("\n")).map_err(|(_, why)| BuildError::Invalid(format!("--exclude: {why}")))?)
        };
        let chmod = c.chmod.as_deref().map(values::parse_chmod).transpose().map_err(BuildError::Invalid)?;
        let workdir = st.config.config.working_dir.clone().unwrap_or_else(|| "/".into());
        let trailing = c.dst.ends_with('/') || c.dst == "." || c.dst.ends_with("/.");
        if c.srcs.len() > 1 && !trailing {
            return Err(BuildError::Invalid(format!(
                "when using {} with more than one source file, the destination must be a directory and end with a /: {}",
                if add { "ADD" } else { "COPY" },
                c.dst
            )));
        }
        // ADD: URLs are fetched now (their digests go into the key); local archives are found.
        let mut downloads = Vec::new();
        let mut archives = Vec::new();
        let mut gits = Vec::new();
        if add {
            for s in &c.srcs {
                let Source::Path(p) = s else { continue };
                match add_source_kind(p) {
                    AddSourceKind::Url => {
                        out.info(&format!("downloading {p}"));
                        downloads.push(add::download(self.opts.fetch.as_deref(), p, c.checksum.as_deref())?);
                    }
                    AddSourceKind::Git => {
                        let source = crate::git::GitSource::parse(p)?;
                        let commit = source.resolve(p)?;
                        out.info(&format!("{p}: commit {commit}"));
                        gits.push((p.clone(), source, commit));
                    }
                    AddSourceKind::Local if matches!(origin, Origin::Context) => {
                        if let Some(path) = add::local_file(&self.opts.context, p) {
                            if let Some(tar) = add::as_archive(&path)? {
                                archives.push((p.clone(), tar));
                            }
                        }
                    }
                    AddSourceKind::Local => {}
                }
            }
        }
        let is_special = |p: &str| add_source_kind(p) != AddSourceKind::Local || archives.iter().any(|(a, _)| a == p);
        let inline: Vec<(String, Vec<u8>)> = c
            .srcs
            .iter()
            .filter_map(|s| match s {
                Source::Inline(f) => Some((f.name.clone(), f.data.clone().into_bytes())),
                Source::Path(_) => None,
            })
            .collect();
        let mut inline_iter = inline.iter();
        let mut plain: Vec<Src<'_>> = Vec::new();
        let mut keyed: Vec<Src<'_>> = Vec::new();
        for s in &c.srcs {
            match s {
                Source::Path(p) if add && add_source_kind(p) != AddSourceKind::Local => {}
                Source::Path(p) => {
                    keyed.push(Src::Path(p.as_str()));
                    if !(add && is_special(p)) {
                        plain.push(Src::Path(p.as_str()));
                    }
                }
                Source::Inline(_) => {
                    if let Some((n, d)) = inline_iter.next() {
                        keyed.push(Src::Inline { name: n, data: d });
                        plain.push(Src::Inline { name: n, data: d });
                    }
                }
            }
        }
        let (clamp, now) = (self.clamp, u64::try_from(self.created).unwrap_or(0));
        let spec = |srcs| make_spec(srcs, &c.dst, &workdir, chmod.as_ref(), exclude.as_ref(), c.parents, clamp, now);
        // The key: what the sources hold (the context's bytes, downloads' digests, or the
        // source stage's key), and every option that changes the layer.
        let mut content = match &origin {
            Origin::Context if keyed.is_empty() => String::new(),
            Origin::Context => {
                let ctx = ContextFs::new(&self.opts.context, self.opts.ignore.as_ref()).map_err(|e| copy_error(cmd, e))?;
                let sink = HashingWriter::new(io::sink());
                // Dated entries the copy creates would make every key new: the key pass dates them 0.
                let key_spec = CopySpec { now: 0, ..spec(keyed) };
                let sink = copy::write_copy(&ctx, &key_spec, Dest::Literal, sink).map_err(|e| copy_error(cmd, e))?;
                let (digest, len, _) = sink.finish();
                out.info(&format!("transferring context: {}", kiln_store::human_size(len)));
                digest.to_string()
            }
            Origin::Image(img) => img.key.as_str().to_string(),
        };
        for d in &downloads {
            content.push_str(&d.digest);
        }
        for (_, g, commit) in &gits {
            content.push_str(&format!("git:{commit}:{}:keep={}", g.subdir.as_deref().unwrap_or(""), c.keep_git_dir));
        }
        let flags = format!("parents={} link={} exclude={:?} archives={}", c.parents, c.link, c.exclude, archives.len());
        let srcs_text = c.srcs.iter().map(|s| match s {
            Source::Path(p) => p.clone(),
            Source::Inline(f) => format!("<<{}", f.name),
        });
        // COPY --link: the layer does not depend on the stage below it (its destination is
        // resolved in an empty tree), so neither does its cache key — a changed base reuses it
        // (BuildKit's layer rebasing). Names in --chown are looked up in the stage, so then
        // the key stays chained.
        let numeric_owner = c.chown.as_deref().is_none_or(|o| o.split(':').all(|p| p.parse::<u32>().is_ok()));
        let linked = c.link && numeric_owner;
        let parent = st.key.clone();
        let key_base = if linked { crate::CacheKey::base("link") } else { st.key.clone() };
        let key = key_base.child(&[
            if add { "ADD" } else { "COPY" },
            &content,
            &srcs_text.collect::<Vec<_>>().join("\0"),
            &c.dst,
            &workdir,
            c.chown.as_deref().unwrap_or(""),
            c.chmod.as_deref().unwrap_or(""),
            &flags,
            &self.clamp.map(|c| c.to_string()).unwrap_or_default(),
        ]);
        let history = created_by(&cmd.command, &st.config.config, &cmd.text, &[]);
        let base_spec = spec(plain);
        let dir_dst = if trailing { c.dst.clone() } else { format!("{}/", c.dst) };
        let stepped = self.layer_step(st, key, &cmd.text, history, out, |b, st, _| {
            let staging = staged(&b.staging)?;
            let view = lock(&b.indexes).view(staging, if c.link { &[] } else { &st.layers })?;
            let owner = match &c.chown {
                Some(spec) => Some(users::chown(&lock(&b.indexes).view(staging, &st.layers)?, spec)?),
                None => None,
            };
            let base_spec = CopySpec { owner, ..base_spec };
            let stage_src = match &origin {
                Origin::Image(img) => {
                    let digests: Vec<_> = img.layers.iter().map(|l| l.digest.clone()).collect();
                    Some(copy::StageFs::new(staging, &digests)?)
                }
                Origin::Context => None,
            };
            let ctx = ContextFs::new(&b.opts.context, b.opts.ignore.as_ref()).map_err(|e| copy_error(cmd, e))?;
            let mut archive_views = Vec::new();
            for (name, tar) in archives {
                archive_views.push(copy::StageFs::from_tar(tar, std::path::Path::new(&name))?);
            }
            let checkouts = gits.iter().map(|(p, g, commit)| g.checkout(p, commit, c.keep_git_dir)).collect::<Result<Vec<_>, _>>()?;
            b.ingest_with(|file| {
                let mut tar = tar::Builder::new(file);
                if !base_spec.srcs.is_empty() {
                    let src: &dyn SourceFs = match &stage_src {
                        Some(s) => s,
                        None => &ctx,
                    };
                    copy::copy_into(src, &base_spec, Dest::In(&view), &mut tar)?;
                }
                for d in &downloads {
                    let dl = ContextFs::new(d.dir.path(), None)?;
                    let one = CopySpec { srcs: vec![Src::Path(&d.name)], ..base_spec.clone_with_srcs() };
                    copy::copy_into(&dl, &one, Dest::In(&view), &mut tar)?;
                }
                for a in &archive_views {
                    let one = CopySpec { srcs: vec![Src::Path("/")], dst: &dir_dst, ..base_spec.clone_with_srcs() };
                    copy::copy_into(a, &one, Dest::In(&view), &mut tar)?;
                }
                for (co, (_, g, _)) in checkouts.iter().zip(&gits) {
                    let repo = ContextFs::new(&co.root, None)?;
                    let from = g.subdir.as_deref().unwrap_or(".");
                    let one = CopySpec { srcs: vec![Src::Path(from)], dst: &dir_dst, ..base_spec.clone_with_srcs() };
                    copy::copy_into(&repo, &one, Dest::In(&view), &mut tar)?;
                }
                tar.into_inner()
            })
            .map_err(|e| reword(cmd, e))
        });
        stepped?;
        if linked {
            // What follows still depends on everything below.
            st.key = parent.child(&["LINK", st.key.as_str()]);
        }
        Ok(())
    }
}

/// The build's staging area (borrowed apart from the rest of the build).
pub(crate) fn staged(staging: &Option<kiln_store::Staging>) -> Result<&kiln_store::Staging, BuildError> {
    staging.as_ref().ok_or_else(|| BuildError::Invalid("internal: the build was already committed".into()))
}

#[allow(clippy::too_many_arguments)]
fn make_spec<'a>(
    srcs: Vec<Src<'a>>,
    dst: &'a str,
    workdir: &'a str,
    chmod: Option<&'a kiln_frontend::command::Chmod>,
    exclude: Option<&'a Dockerignore>,
    parents: bool,
    clamp_mtime: Option<i64>,
    now: u64,
) -> CopySpec<'a> {
    CopySpec { srcs, dst, workdir, chmod, owner: None, clamp_mtime, parents, exclude, now }
}

fn copy_error(cmd: &Located, e: io::Error) -> BuildError {
    BuildError::Copy { line: cmd.line, text: first_line(&cmd.text), cause: e }
}

fn reword(cmd: &Located, e: BuildError) -> BuildError {
    match e {
        BuildError::Invalid(m) => BuildError::Copy { line: cmd.line, text: first_line(&cmd.text), cause: io::Error::other(m) },
        other => other,
    }
}

