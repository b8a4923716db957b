//! The build engine: walks a [`BuildPlan`] and produces an image in the store.
//!
//! File steps (COPY) are done on the host and become layers without a guest; the guest is
//! booted lazily at the first RUN and kept for the rest of the build. Each layer goes into a
//! build-private staging area ([`kiln_store::Staging`]); only a build that succeeds moves its
//! blobs into the store and moves the tags, so a failed, killed or interrupted build leaves
//! the store as it was. This crate knows nothing of Dockerfile text or of QEMU command lines.

pub mod cache;
mod copy;
mod guest;
mod output;
pub mod time;

use std::io;
use std::path::PathBuf;

use kiln_frontend::{Base, BuildPlan, Instruction, ShellOrExec, Step};
use kiln_sandbox::{Backend, GuestImage, SandboxError, VmConfig};
use kiln_store::image::{History, RunConfig};
use kiln_store::{Digest, LayerInfo, NewImage, Reference, Store, StoreError};

use cache::{CacheIndex, CacheKey, Cached};

pub use output::Reporter;

/// The PATH Docker and BuildKit give a Linux image that has none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The diff id of a layer with no entries (a tar of two zero blocks).
const EMPTY_LAYER_DIFF_ID: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// What to build and how.
pub struct BuildOptions {
    pub context: PathBuf,
    pub plan: BuildPlan,
    pub tags: Vec<Reference>,
    pub vm: VmConfig,
    /// Run every step even when the cache has its result.
    pub no_cache: bool,
    /// The context's `.dockerignore`, if it has one.
    pub ignore: Option<kiln_frontend::dockerignore::Dockerignore>,
    /// `--label KEY=VALUE`s set on the final image.
    pub labels: Vec<(String, String)>,
    /// Fetches a base image the store lacks (from a registry) and returns its manifest digest.
    /// `None`: only local images can be used as bases.
    pub pull: Option<Box<Puller>>,
}

/// How the solver gets a missing base image, without knowing about registries.
pub type Puller = dyn Fn(&str) -> Result<Digest, String> + Sync;

/// What a successful build produced.
#[derive(Debug)]
pub struct BuildOutcome {
    pub manifest: Digest,
    pub config: Digest,
    pub layers: usize,
    /// Steps whose result came from the cache.
    pub cached_steps: usize,
    /// How the guest ran, if one was needed.
    pub guest: Option<String>,
}

/// Why a build failed. The store is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("Dockerfile:{line}: {text}: process {argv:?} did not complete successfully: {status}{tail}")]
    StepFailed { line: usize, text: String, argv: Vec<String>, status: kiln_sandbox::ExitStatus, tail: String },
    #[error("Dockerfile:{line}: {text}: {source}")]
    Copy { line: usize, text: String, source: io::Error },
    #[error("Dockerfile:{line}: {text}: {source}")]
    Step { line: usize, text: String, source: Box<BuildError> },
    #[error("FROM {0}: image not found in the local store and no registry to pull it from")]
    BaseMissing(String),
    #[error("FROM {name}: pulling failed: {why}")]
    PullFailed { name: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("{0}")]
    Invalid(String),
    #[error("interrupted")]
    Interrupted,
}

/// Whether a layer has no entries (BuildKit records such a step as an empty layer).
pub(crate) fn is_empty_layer(layer: &LayerInfo) -> bool {
    layer.diff_id.to_string() == EMPTY_LAYER_DIFF_ID
}

struct ImageState {
    /// The cache key of the base, to start the key chain from.
    base_key: CacheKey,
    layers: Vec<LayerInfo>,
    config: RunConfig,
    history: Vec<History>,
}

/// The base image: from the store, else pulled (when a puller is given), as Docker's FROM does.
fn base_image(store: &Store, name: &str, pull: Option<&Puller>, out: &mut Reporter) -> Result<kiln_store::ImageRecord, BuildError> {
    match store.image_by_name(name) {
        Ok((_, img)) => Ok(img),
        Err(StoreError::NoSuchImage(_)) => {
            let pull = pull.ok_or_else(|| BuildError::BaseMissing(name.to_string()))?;
            out.info(&format!("pulling {name}"));
            let digest = pull(name).map_err(|why| BuildError::PullFailed { name: name.to_string(), why })?;
            Ok(store.image(&digest)?)
        }
        Err(other) => Err(other.into()),
    }
}

fn base_state(store: &Store, base: &Base, pull: Option<&Puller>, out: &mut Reporter) -> Result<ImageState, BuildError> {
    let mut state = match base {
        Base::Scratch => ImageState { base_key: CacheKey::base("scratch"), layers: vec![], config: RunConfig::default(), history: vec![] },
        Base::Image(name) => {
            let img = base_image(store, name, pull, out)?;
            let sizes = img.manifest.layers().iter().map(|d| d.size());
            let layers = img
                .layers
                .iter()
                .zip(&img.config.rootfs.diff_ids)
                .zip(sizes)
                .map(|((digest, diff_id), size)| LayerInfo { digest: digest.clone(), diff_id: diff_id.clone(), size })
                .collect();
            ImageState {
                base_key: CacheKey::base(&img.manifest_digest.to_string()),
                layers,
                config: img.config.config.clone(),
                history: img.config.history.clone(),
            }
        }
    };
    let env = state.config.env.get_or_insert_with(Vec::new);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    Ok(state)
}

fn shell_argv(cmd: &ShellOrExec) -> Vec<String> {
    cmd.argv(&["/bin/sh".to_string(), "-c".to_string()])
}

/// Runs the whole build.
pub fn build(store: &Store, backend: &dyn Backend, opts: &BuildOptions, out: &mut Reporter) -> Result<BuildOutcome, BuildError> {
    let created = time::created_seconds().map_err(BuildError::Invalid)?;
    // With SOURCE_DATE_EPOCH, layer entries are clamped to it too, so the same inputs give the
    // same image digest (BuildKit's rewrite-timestamp).
    let clamp_mtime = time::source_date_epoch().map_err(BuildError::Invalid)?;
    let created_text = time::rfc3339(created);
    let staging = store.staging()?;
    let mut state = base_state(store, &opts.plan.base, opts.pull.as_deref(), out)?;
    let total = opts.plan.steps.len() + 1;
    let mut cached_steps = 0;
    out.step(1, total, &format!("FROM {}", match &opts.plan.base { Base::Scratch => "scratch", Base::Image(n) => n }));
    let mut guest: Option<guest::GuestSession> = None;
    let cache = CacheIndex::new(store);
    let mut key = state.base_key.clone();
    let mut results: Vec<(CacheKey, Cached)> = Vec::new();
    for (i, step) in opts.plan.steps.iter().enumerate() {
        if kiln_sandbox::children::interrupted() {
            return Err(BuildError::Interrupted);
        }
        let history = |empty: bool| History {
            created: Some(created_text.clone()),
            created_by: Some(history_text(step)),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: empty,
        };
        // Layer steps first name their cache key and what a miss would have to do; one lookup
        // then decides between the cache and running the step.
        let pending = match &step.instruction {
            Instruction::Copy { srcs, dst, chmod } => {
                let workdir = state.config.working_dir.clone().unwrap_or_else(|| "/".into());
                let spec = copy::CopySpec { srcs, dst, workdir: &workdir, chmod: *chmod, clamp_mtime, ignore: opts.ignore.as_ref() };
                let tar = copy::copy_layer(&opts.context, &spec, Vec::new())
                    .map_err(|source| BuildError::Copy { line: step.line, text: step.text.clone(), source })?;
                key = key.child(&["COPY", &Digest::of(&tar).to_string()]);
                Some(Pending::Copy(tar))
            }
            Instruction::Run(cmd) => {
                let argv = shell_argv(cmd);
                let env = state.config.env.clone().unwrap_or_default();
                let workdir = state.config.working_dir.clone().unwrap_or_else(|| "/".into());
                // The clamp changes the layer's bytes, so it is part of the key.
                let clamp = clamp_mtime.map(|c| c.to_string()).unwrap_or_default();
                key = key.child(&["RUN", &join_nul(&argv), &join_nul(&env), &workdir, &clamp]);
                Some(Pending::Run(argv))
            }
            other => {
                out.step(i + 2, total, &step.text);
                key = key.child(&["CONFIG", &step.text]);
                apply_config(&mut state.config, other, step.line)?;
                state.history.push(history(true));
                None
            }
        };
        let result = match pending {
            None => None,
            Some(pending) => match if opts.no_cache { None } else { cache.get(&key) } {
                Some(hit) => {
                    out.step_cached(i + 2, total, &step.text);
                    Some((hit, true))
                }
                None => {
                    out.step(i + 2, total, &step.text);
                    let layer = match pending {
                        Pending::Copy(tar) => staging.store().ingest_layer(tar.as_slice())?,
                        Pending::Run(argv) => {
                            if guest.is_none() {
                                guest = Some(guest::GuestSession::start(backend, &opts.vm, out)?);
                            }
                            let session = guest.as_mut().ok_or_else(|| BuildError::Invalid("internal: no guest".into()))?;
                            session.run_step(&staging, &state.layers, &state.config, &argv, clamp_mtime, out).map_err(|e| match e {
                                BuildError::StepFailed { status, tail, .. } => {
                                    BuildError::StepFailed { line: step.line, text: step.text.clone(), argv: argv.clone(), status, tail }
                                }
                                other => BuildError::Step { line: step.line, text: step.text.clone(), source: Box::new(other) },
                            })?
                        }
                    };
                    Some((if is_empty_layer(&layer) { Cached::Empty } else { Cached::Layer(layer) }, false))
                }
            },
        };
        if let Some((result, hit)) = result {
            if hit {
                cached_steps += 1;
            }
            match &result {
                Cached::Layer(layer) => {
                    state.layers.push(layer.clone());
                    state.history.push(history(false));
                }
                Cached::Empty => state.history.push(history(true)),
            }
            results.push((key.clone(), result));
        }
    }
    let guest_desc = guest.take().map(|g| g.finish(out));
    if !opts.labels.is_empty() {
        let labels = state.config.labels.get_or_insert_with(Default::default);
        for (k, v) in &opts.labels {
            labels.insert(k.clone(), v.clone());
        }
    }
    let layers = state.layers.len();
    let image = NewImage {
        layers: state.layers,
        config: state.config,
        history: state.history,
        created: created_text,
        architecture: "amd64".into(),
        os: "linux".into(),
    };
    let manifest = staging.commit(image, &opts.tags)?;
    let config = store.image(&manifest)?.config_digest;
    // Only now are the layers in the store: record what each step produced.
    for (key, result) in &results {
        if let Err(e) = cache.put(key, result) {
            out.info(&format!("warning: could not record a cache entry: {e}"));
        }
    }
    Ok(BuildOutcome { manifest, config, layers, cached_steps, guest: guest_desc })
}

/// A layer step whose cache key is known, with what running it needs.
enum Pending {
    /// The layer tar the context yields.
    Copy(Vec<u8>),
    /// The argv to run in the guest.
    Run(Vec<String>),
}

/// Applies a metadata-only instruction to the image config.
fn apply_config(config: &mut RunConfig, instruction: &Instruction, line: usize) -> Result<(), BuildError> {
    match instruction {
        Instruction::Cmd(cmd) => config.cmd = Some(shell_argv(cmd)),
        Instruction::Entrypoint(cmd) => {
            config.entrypoint = Some(shell_argv(cmd));
            // As in Docker: a new ENTRYPOINT clears a CMD set before it.
            config.cmd = None;
        }
        Instruction::Workdir(dir) => {
            let base = config.working_dir.clone().unwrap_or_else(|| "/".into());
            let joined = if dir.starts_with('/') { dir.clone() } else { format!("{base}/{dir}") };
            config.working_dir = Some(format!("/{}", copy::clean_rooted(&joined).display()));
        }
        Instruction::Env(pairs) => {
            let env = config.env.get_or_insert_with(Vec::new);
            for (k, v) in pairs {
                env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
        }
        Instruction::From { .. } | Instruction::Run(_) | Instruction::Copy { .. } => {
            return Err(BuildError::Invalid(format!("Dockerfile:{line}: unexpected instruction here")))
        }
    }
    Ok(())
}

/// Joins strings with NUL, which none of them can contain, for cache key parts.
fn join_nul(parts: &[String]) -> String {
    parts.join("\0")
}

fn history_text(step: &Step) -> String {
    match &step.instruction {
        Instruction::Run(cmd) => format!("RUN {} # buildkit", shell_argv(cmd).join(" ")),
        Instruction::Copy { .. } => format!("{} # buildkit", step.text),
        _ => step.text.clone(),
    }
}

/// Locates the guest image; exposed so the CLI can report a missing guest before any work.
pub fn guest_image() -> Result<GuestImage, SandboxError> {
    GuestImage::locate()
}
