//! The build engine: runs a resolved Dockerfile ([`kiln_frontend::graph`]) and produces an
//! image in the store.
//!
//! Stages run in dependency order ([`stage`]); metadata instructions only change the config,
//! file steps (COPY/ADD, WORKDIR's directory) are done on the host and become layers without a
//! guest ([`copy`], [`fsview`]), and the guest is booted lazily at the first RUN that misses
//! the cache and kept for the rest of the build ([`guest`]). Each layer goes into a
//! build-private staging area ([`kiln_store::Staging`]); only a build that succeeds moves its
//! blobs into the store and moves the tags, so a failed, killed or interrupted build leaves
//! the store as it was, with one exception: when a RUN fails, the stage's state before it is
//! kept as an untagged image for the user to run and look around in (BuildKit needs a
//! separate debugger for this). This crate knows nothing of QEMU command lines or registries.

mod add;
mod bind;
pub mod cache;
pub mod cache_transfer;
pub mod convert;
mod emulate;
mod copy;
mod fsview;
mod git;
mod guest;
mod mounts;
mod output;
mod pin;
mod schedule;
mod stage;
mod steps;
pub mod time;
mod users;

use std::io;
use std::path::PathBuf;

use kiln_frontend::graph::Dockerfile;
use kiln_sandbox::{Backend, GuestImage, SandboxError, VmConfig};
use kiln_store::{Digest, LayerInfo, Reference, Store, StoreError};

pub use cache::CacheKey;

/// What `ADD` makes of a local file (hostile input: the build context may be anyone's): the
/// view of the archive it is (plain, gzip, bzip2, xz or zstd tar, its expansion bounded), or
/// `None` when it is not one, to be copied as a file. The fuzz target `add_archive` drives it.
pub fn open_add_archive(path: &std::path::Path) -> Result<Option<kiln_store::rootfs::RootFs>, BuildError> {
    match add::as_archive(path)? {
        Some(tar) => add::archive_view(tar, path).map(Some),
        None => Ok(None),
    }
}
pub use kiln_runtime::emulate::survey as emulator_survey;
pub use output::{ProgressMode, Reporter};

/// The PATH Docker and BuildKit give a Linux image that has none.
pub const DEFAULT_PATH: &str = kiln_frontend::config::DEFAULT_PATH;

/// What to build and how.
pub struct BuildOptions {
    pub context: PathBuf,
    pub dockerfile: Dockerfile,
    /// Build args, target stage, platforms.
    pub frontend: kiln_frontend::graph::BuildOptions,
    pub tags: Vec<Reference>,
    pub vm: VmConfig,
    /// Run every step even when the cache has its result.
    pub no_cache: bool,
    /// The context's `.dockerignore`, if it has one.
    pub ignore: Option<kiln_frontend::dockerignore::Dockerignore>,
    /// `--label KEY=VALUE`s set on the final image.
    pub labels: Vec<(String, String)>,
    /// Fetches an image the store lacks (from a registry) and returns its manifest digest.
    /// `None`: only local images can be used.
    pub pull: Option<Box<Puller>>,
    /// `--secret` values by id, for `RUN --mount=type=secret`.
    pub secrets: std::collections::BTreeMap<String, Vec<u8>>,
    /// `--ssh` sockets by id (`default`: `$SSH_AUTH_SOCK`), for `RUN --mount=type=ssh`.
    pub ssh: std::collections::BTreeMap<String, PathBuf>,
    /// Downloads an `ADD <url>` source into a file; returns it with its Last-Modified time.
    pub fetch: Option<Box<Fetcher>>,
    /// The network of RUN steps without `--network` (`kiln build --network`; BuildKit's
    /// default is the sandbox's network).
    pub network_none: bool,
    /// How many stages may run at once (`--jobs`; 0 or 1: one after another).
    pub jobs: usize,
    /// Stages (by name or index) whose steps ignore the cache (`--no-cache-filter`).
    pub no_cache_filter: Vec<String>,
    /// Target platforms of a multi-platform build (`--platform a,b`): the Dockerfile is built
    /// once per platform and the result is an image index. Empty or one: a single image for
    /// `frontend.target_platform`.
    pub platforms: Vec<kiln_frontend::graph::Platform>,
}

/// One platform's image of a multi-platform build.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub platform: String,
    pub manifest: Digest,
    pub config: Digest,
}

/// How the solver gets a missing base image, without knowing about registries.
/// Arguments: the image name and the platform wanted (`os/arch[/variant]`).
pub type Puller = dyn Fn(&str, &str) -> Result<Digest, String> + Sync;

/// How the solver downloads a URL, without knowing about HTTP.
pub type Fetcher = dyn Fn(&str) -> Result<(std::fs::File, Option<i64>), String> + Sync;

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
    /// The cache keys of every layer step of this build (hits and misses), in order: what
    /// `--cache-to` exports.
    pub cache_keys: Vec<CacheKey>,
    /// For a multi-platform build, each platform's image (then `manifest` and `config` are
    /// the index's digest); empty otherwise.
    pub platforms: Vec<PlatformImage>,
}

/// Why a build failed. The store is unchanged in every case but one: a failed RUN keeps the
/// state before it as an untagged image (see [`BuildError::StepFailed`]).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A RUN's process failed. `state` is the image id of the stage as it was before that
    /// step (kept in the store, untagged, so the user can `kiln run` it and look around).
    #[error("Dockerfile:{line}: {text}: process {argv:?} did not complete successfully: {status}{tail}")]
    StepFailed { line: usize, text: String, argv: Vec<String>, status: kiln_sandbox::ExitStatus, tail: String, state: Option<Digest> },
    #[error("Dockerfile:{line}: {text}: {cause}")]
    Copy { line: usize, text: String, cause: io::Error },
    #[error("Dockerfile:{line}: {text}: {cause}")]
    Step { line: usize, text: String, cause: Box<BuildError> },
    #[error(transparent)]
    Parse(#[from] kiln_frontend::ParseError),
    #[error("{0}: image not found in the local store and no registry to pull it from")]
    BaseMissing(String),
    #[error("pulling failed: {why}")]
    PullFailed { name: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("{0}")]
    Invalid(String),
    #[error("interrupted")]
    Interrupted,
    /// Another stage failed first (its error is the build's).
    #[error("cancelled: another stage failed")]
    Cancelled,
}

/// Whether a layer has no entries (BuildKit records such a step as an empty layer).
pub(crate) fn is_empty_layer(layer: &LayerInfo) -> bool {
    kiln_runtime::layers::is_empty_layer(layer)
}

impl From<kiln_runtime::RuntimeError> for BuildError {
    fn from(e: kiln_runtime::RuntimeError) -> Self {
        use kiln_runtime::RuntimeError as R;
        match e {
            R::Sandbox(e) => Self::Sandbox(e),
            R::Store(e) => Self::Store(e),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// Runs the whole build.
pub fn build(store: &Store, backend: &dyn Backend, opts: &BuildOptions, out: &Reporter) -> Result<BuildOutcome, BuildError> {
    let build = stage::Build::new(store, backend, opts)?;
    // One graph per target platform, resolved before anything runs (an error in any is the
    // build's); their stages run together, sharing the guest, the cache and identical steps.
    let graphs = build.targets.iter().map(|t| opts.dockerfile.resolve(t)).collect::<Result<Vec<_>, _>>()?;
    let mut warned = std::collections::BTreeSet::new();
    for w in opts.dockerfile.warnings.iter().chain(graphs.iter().flat_map(|g| &g.warnings)) {
        if warned.insert(w) {
            out.info(w);
        }
    }
    if graphs.len() > 1 {
        check_distinct_targets(&graphs, &build.targets)?;
    }
    let planned: Vec<stage::PlannedStage<'_>> =
        graphs.iter().enumerate().flat_map(|(target, g)| g.stages.iter().map(move |stage| stage::PlannedStage { target, stage })).collect();
    let targets: Vec<usize> = graphs.iter().map(|g| g.target).collect();
    match schedule::run_stages(&build, &planned, opts.jobs, out) {
        Ok(()) => build.finish(&targets, out),
        // The last good state of the failed stage is kept, to be looked at.
        Err(BuildError::StepFailed { line, text, argv, status, tail, .. }) => {
            let state = build.commit_failed_state();
            Err(BuildError::StepFailed { line, text, argv, status, tail, state })
        }
        Err(e) => Err(e),
    }
}

/// The platform a stage's image is for: a stage built on another stage is that stage's
/// platform; otherwise its `FROM --platform`, else the build's target.
fn stage_platform(graph: &kiln_frontend::graph::BuildGraph, index: usize, target: &kiln_frontend::graph::Platform) -> Result<kiln_frontend::graph::Platform, BuildError> {
    let stage = graph.stage(index).ok_or_else(|| BuildError::Invalid(format!("internal: no stage {index}")))?;
    match (&stage.base, &stage.platform) {
        (kiln_frontend::graph::StageBase::Stage(j), _) if *j < index => stage_platform(graph, *j, target),
        (_, Some(p)) => kiln_frontend::graph::Platform::parse(p).map_err(|m| kiln_frontend::ParseError::new(stage.line, m).into()),
        (_, None) => Ok(target.clone()),
    }
}

/// Before anything runs: each target of a multi-platform build must make an image of its own
/// platform (a final stage pinned with `FROM --platform=$BUILDPLATFORM` would make the same
/// platform's image for every target, which one index cannot hold).
fn check_distinct_targets(graphs: &[kiln_frontend::graph::BuildGraph], targets: &[kiln_frontend::graph::BuildOptions]) -> Result<(), BuildError> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (graph, target) in graphs.iter().zip(targets) {
        let made = stage_platform(graph, graph.target, &target.target_platform)?.to_string();
        if let Some((other, _)) = seen.iter().find(|(_, m)| *m == made) {
            return Err(BuildError::Invalid(format!(
                "--platform {other} and {}: the final stage makes a {made} image for both (is it pinned with FROM --platform?); each platform of a multi-platform build must make its own",
                target.target_platform
            )));
        }
        seen.push((target.target_platform.to_string(), made));
    }
    Ok(())
}

/// Locates the guest image; exposed so the CLI can report a missing guest before any work.
pub fn guest_image() -> Result<GuestImage, SandboxError> {
    GuestImage::locate()
}
