//! One build: the state shared by its stages (store, staging area, cache, guest, layer
//! indexes, finished stages) and the walk of each stage's instructions with BuildKit's
//! semantics: base image (ONBUILD triggers first), ARG scope, expansion, metadata
//! instructions applied to the config, history lines, and the cache key chain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use kiln_frontend::command::{parse_onbuild_triggers, Command, Located};
use kiln_frontend::config::{created_by, ImageConfig, StageConfig};
use kiln_frontend::graph::{Platform, ResolvedStage, Scope, StageBase};
use kiln_frontend::shell::Lexer;
use kiln_sandbox::Backend;
use kiln_store::image::History;
use kiln_store::{Digest, LayerInfo, NewImage, Staging, Store, StoreError};
use serde_json::{Map, Value};

use crate::cache::{CacheIndex, CacheKey, Cached};
use crate::fsview::Indexes;
use crate::guest::GuestSession;
use crate::{convert, time, BuildError, BuildOptions, BuildOutcome, PlatformImage, Puller, Reporter, DEFAULT_PATH};

/// An image or stage result: what a stage starts from and what it produces.
#[derive(Clone)]
pub struct ImageState {
    pub key: CacheKey,
    pub layers: Vec<LayerInfo>,
    pub config: ImageConfig,
    /// Config fields kiln does not model, carried over from the base image.
    pub extra: Map<String, Value>,
    pub history: Vec<History>,
    pub platform: Platform,
}

/// A stage being executed.
pub struct StageState {
    pub key: CacheKey,
    pub layers: Vec<LayerInfo>,
    pub config: StageConfig,
    pub extra: Map<String, Value>,
    pub history: Vec<History>,
    /// `[name k/n]` for progress lines.
    pub label: String,
    pub step: usize,
    pub steps: usize,
    /// `--no-cache`, or `--no-cache-filter` names this stage: every step runs.
    pub no_cache: bool,
    /// What the stage's binaries are built for (RUN emulates it when it is not the host's).
    pub platform: Platform,
    /// Which of the build's target platforms this stage is built for (an index into
    /// [`Build::targets`]); stages of one target see only each other.
    pub target: usize,
}

/// A stage of one of the build's target platforms, as the scheduler runs it.
#[derive(Clone, Copy)]
pub struct PlannedStage<'g> {
    pub target: usize,
    pub stage: &'g ResolvedStage,
}

/// Shared by the stages of a build, which may run on several threads at once (see
/// [`crate::schedule`]): everything that changes is behind a lock or atomic.
pub struct Build<'a> {
    pub store: &'a Store,
    pub staging: Option<Staging>,
    pub backend: &'a dyn Backend,
    pub opts: &'a BuildOptions,
    pub cache: CacheIndex,
    /// One frontend configuration per target platform (`--platform a,b`): the build args,
    /// target stage and `TARGETPLATFORM` its stages see.
    pub targets: Vec<kiln_frontend::graph::BuildOptions>,
    /// Layer steps of this build by cache key: running (`None`) or done. Identical steps of
    /// different targets' stages (a `FROM --platform=$BUILDPLATFORM` stage that does not use
    /// the target) run once, as BuildKit merges identical vertices.
    steps: Mutex<HashMap<CacheKey, StepState>>,
    step_done: Condvar,
    /// The build's guests by architecture, each started by the first RUN that needs it (its
    /// slot's lock is held while starting it): the build's own, and the other architecture's
    /// for stages of that architecture when its image is there ([`Build::guest_for`]).
    guests: Mutex<HashMap<GuestArch, GuestSlot>>,
    /// Which guest runs each architecture's RUN steps, decided once per build.
    guest_of_arch: Mutex<HashMap<String, GuestArch>>,
    pub indexes: Mutex<Indexes>,
    pub created: i64,
    pub created_text: String,
    pub clamp: Option<i64>,
    /// Step results to record in the cache once the build is committed.
    results: Mutex<Vec<(CacheKey, Cached)>>,
    cached_steps: AtomicUsize,
    /// Finished stages by target and Dockerfile index.
    pub done: Mutex<HashMap<(usize, usize), ImageState>>,
    /// Signalled whenever a stage finishes or fails.
    pub stage_done: Condvar,
    /// Images used by name (FROM, COPY --from), fetched once (the lock is held while fetching).
    images: Mutex<HashMap<String, ImageState>>,
    /// Progress numbering: `#N`.
    counter: AtomicUsize,
    /// Set when a stage failed: the others stop at their next step.
    pub cancelled: AtomicBool,
    /// Architectures whose emulator the guest has registered ([`crate::emulate`]).
    pub emulators: Mutex<std::collections::HashSet<String>>,
    /// The state before the first RUN that failed (kept by [`Build::commit_failed_state`]).
    failed_state: Mutex<Option<ImageState>>,
    /// Keeps the blobs this build uses from a racing prune.
    pin: crate::pin::BuildPin,
}

use kiln_runtime::emulate::{image_platform, same_platform};
use kiln_sandbox::GuestArch;

/// A layer step of this build, by cache key ([`Build::claim_step`]).
#[derive(Clone)]
enum StepState {
    Running,
    Done(Cached),
    /// It failed: the build is failing, identical steps give up rather than run it again.
    Failed,
}

/// A claimed step: released as failed unless [`StepClaim::done`] records its result, so a step
/// that errors or panics never leaves identical steps waiting.
struct StepClaim<'b, 'a> {
    build: &'b Build<'a>,
    key: CacheKey,
    result: Option<Cached>,
}

impl StepClaim<'_, '_> {
    fn done(mut self, result: &Cached) {
        self.result = Some(result.clone());
    }
}

impl Drop for StepClaim<'_, '_> {
    fn drop(&mut self) {
        let state = match self.result.take() {
            Some(r) => StepState::Done(r),
            None => StepState::Failed,
        };
        lock(&self.build.steps).insert(self.key.clone(), state);
        self.build.step_done.notify_all();
    }
}

/// One architecture's guest, empty until first used.
type GuestSlot = Arc<Mutex<Option<Arc<GuestSession>>>>;

/// Locks, ignoring poisoning (a panicking stage thread fails the build anyway).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A base image for `platform`: the local one when it matches, else pulled for that platform.
fn base_image(store: &Store, name: &str, platform: &Platform, pull: Option<&Puller>, out: &Reporter) -> Result<kiln_store::ImageRecord, BuildError> {
    // A multi-platform image offers the manifest for `platform`, if it has one.
    let wanted = kiln_store::Platform::parse(&platform.to_string())?;
    let local = match store.resolve(name).and_then(|(_, digest)| store.image_for(&digest, Some(&wanted))) {
        Ok(img) if same_platform(&image_platform(&img), platform) => return Ok(img),
        Ok(img) => Some(image_platform(&img).to_string()),
        Err(StoreError::NoSuchImage(_)) => None,
        Err(StoreError::NoPlatform { available, .. }) => Some(available),
        Err(other) => return Err(other.into()),
    };
    let Some(pull) = pull else {
        return Err(match local {
            Some(have) => BuildError::Invalid(format!("{name} is a {have} image, but {platform} is wanted (pull it with `kiln pull --platform {platform} {name}`)")),
            None => BuildError::BaseMissing(name.to_string()),
        });
    };
    out.info(&format!("pulling {name} ({platform})"));
    let digest = pull(name, &platform.to_string()).map_err(|why| BuildError::PullFailed { name: name.to_string(), why })?;
    let img = store.image(&digest)?;
    let have = image_platform(&img);
    if !same_platform(&have, platform) {
        return Err(BuildError::Invalid(format!("{name}: the registry gave a {have} image, but {platform} is wanted")));
    }
    Ok(img)
}

/// The frontend options of each target platform (one, unless `opts.platforms` lists several).
fn targets_of(opts: &BuildOptions) -> Vec<kiln_frontend::graph::BuildOptions> {
    if opts.platforms.is_empty() {
        return vec![opts.frontend.clone()];
    }
    opts.platforms
        .iter()
        .map(|p| kiln_frontend::graph::BuildOptions { target_platform: p.clone(), ..opts.frontend.clone() })
        .collect()
}

impl<'a> Build<'a> {
    pub fn new(store: &'a Store, backend: &'a dyn Backend, opts: &'a BuildOptions) -> Result<Self, BuildError> {
        let created = time::created_seconds().map_err(BuildError::Invalid)?;
        // With SOURCE_DATE_EPOCH, layer entries are clamped to it too, so the same inputs give
        // the same image digest (BuildKit's rewrite-timestamp).
        let clamp = time::source_date_epoch().map_err(BuildError::Invalid)?;
        Ok(Self {
            store,
            staging: Some(store.staging()?),
            backend,
            opts,
            cache: CacheIndex::new(store),
            targets: targets_of(opts),
            steps: Mutex::new(HashMap::new()),
            step_done: Condvar::new(),
            guests: Mutex::new(HashMap::new()),
            guest_of_arch: Mutex::new(HashMap::new()),
            indexes: Mutex::new(Indexes::default()),
            created,
            created_text: time::rfc3339(created),
            clamp,
            results: Mutex::new(Vec::new()),
            cached_steps: AtomicUsize::new(0),
            done: Mutex::new(HashMap::new()),
            stage_done: Condvar::new(),
            images: Mutex::new(HashMap::new()),
            counter: AtomicUsize::new(0),
            cancelled: AtomicBool::new(false),
            emulators: Mutex::new(Default::default()),
            failed_state: Mutex::new(None),
            pin: crate::pin::BuildPin::new(store)?,
        })
    }

    pub fn staging(&self) -> Result<&Staging, BuildError> {
        crate::steps::staged(&self.staging)
    }

    /// The guest that runs RUN steps of `platform`, started at first use: the build's own
    /// guest, or the guest of `platform`'s architecture when there is one and
    /// `KILN_CROSS_GUEST` allows (then the step runs natively rather than emulated).
    pub fn guest_for(&self, platform: &Platform, out: &Reporter) -> Result<Arc<GuestSession>, BuildError> {
        let arch = {
            let mut chosen = lock(&self.guest_of_arch);
            match chosen.get(&platform.arch) {
                Some(a) => *a,
                None => {
                    let own = GuestArch::wanted()?;
                    let arch = match GuestArch::parse(&platform.arch) {
                        Some(a) if a != own && GuestArch::cross_guests_allowed()? && kiln_sandbox::GuestImage::available(a).is_some() => a,
                        _ => own,
                    };
                    chosen.insert(platform.arch.clone(), arch);
                    arch
                }
            }
        };
        let slot = lock(&self.guests).entry(arch).or_default().clone();
        let mut slot = lock(&slot);
        if let Some(g) = slot.as_ref() {
            return Ok(g.clone());
        }
        let g = Arc::new(GuestSession::start(self.backend, arch, &self.opts.vm, &self.store.root().join(crate::steps::CACHE_MOUNTS), out)?);
        *slot = Some(g.clone());
        Ok(g)
    }

    /// The guests started so far (leaving their slots empty).
    fn take_guests(&self) -> Vec<Arc<GuestSession>> {
        let slots: Vec<GuestSlot> = lock(&self.guests).drain().map(|(_, s)| s).collect();
        slots.iter().filter_map(|s| lock(s).take()).collect()
    }

    /// Cuts the guests' connections, so RUN steps still running in other stages end now
    /// (with an error nobody reports: the build already failed). The guests are not used again.
    pub fn abort_running_steps(&self) {
        let slots: Vec<GuestSlot> = lock(&self.guests).values().cloned().collect();
        for slot in slots {
            // A slot being filled is skipped: its guest is closed when the build drops it.
            if let Ok(g) = slot.try_lock() {
                if let Some(g) = g.as_ref() {
                    g.agent().close();
                }
            }
        }
    }

    /// An image by name for `platform`, from the store or pulled, once per build.
    pub fn image(&self, name: &str, platform: &Platform, out: &Reporter) -> Result<ImageState, BuildError> {
        let mut images = lock(&self.images);
        let id = format!("{name} {platform}");
        if let Some(s) = images.get(&id) {
            return Ok(s.clone());
        }
        let img = base_image(self.store, name, platform, self.opts.pull.as_deref(), out)?;
        if !self.pin.add(self.store, [&img.manifest_digest, &img.config_digest].into_iter().chain(&img.layers))? {
            return Err(BuildError::Invalid(format!(
                "{name}: its blobs were removed by a prune that ran while this build started; run the build again"
            )));
        }
        let layers = img.layer_infos();
        let (config, extra) = convert::from_store(&img.config.config);
        let state = ImageState {
            key: CacheKey::base(&img.manifest_digest.to_string()),
            layers,
            config,
            extra,
            history: img.config.history.clone(),
            platform: image_platform(&img),
        };
        images.insert(id, state.clone());
        Ok(state)
    }

    /// Prints a step line (`#N [stage k/n] TEXT`); returns N for [`Reporter::done`].
    pub fn announce(&self, st: &mut StageState, text: &str, cached: bool, out: &Reporter) -> usize {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        st.step += 1;
        let label = format!("{}{}/{}", st.label, st.step, st.steps);
        out.step(n, &label, &first_line(text), cached);
        n
    }

    /// A step that does its work at once (FROM, metadata instructions).
    pub fn instant_step(&self, st: &mut StageState, text: &str, out: &Reporter) {
        let n = self.announce(st, text, false, out);
        out.done(n);
    }

    pub fn history(&self, created_by: String, empty: bool) -> History {
        History { created: Some(self.created_text.clone()), created_by: Some(created_by), comment: Some("buildkit.dockerfile.v0".into()), empty_layer: empty }
    }

    pub fn run_stage(&self, planned: PlannedStage<'_>, multi: bool, out: &Reporter) -> Result<(), BuildError> {
        let PlannedStage { target, stage } = planned;
        let frontend = &self.targets[target];
        // FROM --platform, else the build's target platform (--platform, default the host's).
        let platform = match &stage.platform {
            Some(p) => Platform::parse(p).map_err(|m| kiln_frontend::ParseError::new(stage.line, m))?,
            None => frontend.target_platform.clone(),
        };
        let base = match &stage.base {
            StageBase::Scratch => ImageState {
                // Same key as before platforms existed for the host's own platform.
                key: if platform == Platform::linux_amd64() { CacheKey::base("scratch") } else { CacheKey::base(&format!("scratch {platform}")) },
                layers: vec![],
                config: ImageConfig::default(),
                extra: Map::new(),
                history: vec![],
                platform: platform.clone(),
            },
            StageBase::Stage(j) => lock(&self.done).get(&(target, *j)).cloned().ok_or_else(|| BuildError::Invalid(format!("internal: stage {j} has not run")))?,
            StageBase::Image(name) => self.image(name, &platform, out).map_err(|e| step_error(stage.line, &format!("FROM {name}"), e))?,
        };
        // A stage built on another stage is for that stage's platform.
        let platform = base.platform.clone();
        let mut config = base.config;
        if config.env_value("PATH").is_none() {
            config.env.insert(0, DEFAULT_PATH.to_string());
        }
        // The base's ONBUILD triggers run first; the new image does not inherit them.
        let triggers = parse_onbuild_triggers(&std::mem::take(&mut config.on_build), stage.line)?;
        let mut label = match (&stage.name, multi) {
            (Some(n), _) => format!("{n} "),
            (None, true) => format!("stage-{} ", stage.index),
            (None, false) => String::new(),
        };
        if self.targets.len() > 1 {
            // BuildKit's `[linux/arm64 builder 2/4]`.
            label = format!("{} {label}", frontend.target_platform);
        }
        let mut st = StageState {
            key: base.key,
            layers: base.layers,
            config: StageConfig::from_base(config),
            extra: base.extra,
            history: base.history,
            label,
            step: 0,
            no_cache: self.opts.no_cache || self.opts.no_cache_filter.iter().any(|f| {
                stage.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(f)) || f.parse::<usize>().ok() == Some(stage.index)
            }),
            steps: 1 + triggers.len() + stage.commands.iter().filter(|c| !matches!(c.command, Command::Arg(_))).count(),
            platform,
            target,
        };
        let from_text = match &stage.base {
            StageBase::Scratch => "FROM scratch".to_string(),
            StageBase::Stage(j) => format!("FROM {}", self.done_name(*j)),
            StageBase::Image(n) => format!("FROM {n}"),
        };
        self.instant_step(&mut st, &from_text, out);
        let lexer = Lexer::new(self.opts.dockerfile.escape);
        let mut scope = Scope::new(stage, frontend);
        for located in triggers.iter().chain(&stage.commands) {
            if kiln_sandbox::children::interrupted() {
                return Err(BuildError::Interrupted);
            }
            if self.cancelled.load(Ordering::Relaxed) {
                return Err(BuildError::Cancelled);
            }
            if let Err(e) = self.command(&mut st, &mut scope, &lexer, located, out) {
                if matches!(e, BuildError::StepFailed { .. }) {
                    lock(&self.failed_state).get_or_insert_with(|| ImageState {
                        key: st.key.clone(),
                        layers: st.layers.clone(),
                        config: st.config.config.clone(),
                        extra: st.extra.clone(),
                        history: st.history.clone(),
                        platform: st.platform.clone(),
                    });
                }
                return Err(e);
            }
        }
        let state = ImageState { key: st.key, layers: st.layers, config: st.config.config, extra: st.extra, history: st.history, platform: st.platform };
        lock(&self.done).insert((target, stage.index), state);
        self.stage_done.notify_all();
        Ok(())
    }

    fn done_name(&self, j: usize) -> String {
        self.opts.dockerfile.stages.get(j).and_then(|s| s.name.clone()).unwrap_or_else(|| j.to_string())
    }

    /// One instruction of a stage.
    fn command(&self, st: &mut StageState, scope: &mut Scope, lexer: &Lexer, located: &Located, out: &Reporter) -> Result<(), BuildError> {
        if let Command::Arg(defs) = &located.command {
            let env = st.config.config.env_pairs();
            return scope.declare(defs, lexer, &env).map_err(|m| kiln_frontend::ParseError::new(located.line, m).into());
        }
        let env = st.config.config.env_pairs();
        let expanded = located.expand(lexer, &scope.expansion_env(&env))?;
        let wrap = |e: BuildError| step_error(located.line, &located.text, e);
        match &expanded.command {
            Command::Run(run) => self.run(st, scope, &expanded, run, out).map_err(|e| match e {
                BuildError::StepFailed { argv, status, tail, state, .. } => {
                    BuildError::StepFailed { line: located.line, text: first_line(&located.text), argv, status, tail, state }
                }
                other => wrap(other),
            }),
            Command::Copy(c) => self.copy(st, &expanded, c, false, out).map_err(wrap),
            Command::Add(c) => self.copy(st, &expanded, c, true, out).map_err(wrap),
            Command::Workdir(_) => {
                st.config.apply(&expanded.command).map_err(|m| kiln_frontend::ParseError::new(located.line, m))?;
                self.workdir(st, &expanded, out).map_err(wrap)
            }
            other => {
                self.instant_step(st, &located.text, out);
                st.config.apply(other).map_err(|m| kiln_frontend::ParseError::new(located.line, m))?;
                if matches!(other, Command::Cmd(_)) {
                    // BuildKit marks every CMD so (kept for Docker's image spec).
                    st.extra.insert("ArgsEscaped".into(), Value::Bool(true));
                }
                let text = created_by(other, &st.config.config, &located.text, &[]);
                st.key = st.key.child(&["CONFIG", &text]);
                let h = self.history(text, true);
                st.history.push(h);
                Ok(())
            }
        }
    }

    /// Looks a layer step up in the cache; on a miss runs `make`. Records the result and
    /// extends the stage.
    pub fn layer_step(
        &self,
        st: &mut StageState,
        key: CacheKey,
        text: &str,
        created_by: String,
        out: &Reporter,
        make: impl FnOnce(&Self, &mut StageState, &Reporter) -> Result<LayerInfo, BuildError>,
    ) -> Result<(), BuildError> {
        let hit = if st.no_cache { None } else { self.cache.get(&key) };
        let (hit, claim, merged) = match hit {
            Some(h) => (Some(h), None, false),
            None => match self.claim_step(&key)? {
                Ok(claim) => (None, Some(claim), false),
                Err(done) => (Some(done), None, true),
            },
        };
        let result = self.step_result(st, hit, text, out, make)?;
        if let Some(claim) = claim {
            claim.done(&result);
        }
        match &result {
            Cached::Layer(layer) => {
                st.layers.push(layer.clone());
                let h = self.history(created_by, false);
                st.history.push(h);
            }
            Cached::Empty => {
                let h = self.history(created_by, true);
                st.history.push(h);
            }
        }
        // The chain goes on from what the step produced, not only from what it was asked to
        // do: a step rerun with different output (`--no-cache-filter`, a non-deterministic
        // RUN) must not let later steps, or stages built on this one, reuse results made
        // from the old output.
        let produced = match &result {
            Cached::Layer(l) => l.diff_id.to_string(),
            Cached::Empty => String::new(),
        };
        st.key = key.child(&["RESULT", &produced]);
        // A step merged with an identical one of this build is recorded once, by that one.
        if !merged {
            lock(&self.results).push((key, result));
        }
        Ok(())
    }

    /// A cache hit's result, else what `make` produces (announcing the step either way).
    fn step_result(
        &self,
        st: &mut StageState,
        hit: Option<Cached>,
        text: &str,
        out: &Reporter,
        make: impl FnOnce(&Self, &mut StageState, &Reporter) -> Result<LayerInfo, BuildError>,
    ) -> Result<Cached, BuildError> {
        // A cached layer that a concurrent prune removed before it was pinned is a miss (one
        // this build made is in its staging area, which no prune touches).
        let hit = match hit {
            Some(Cached::Layer(l)) => {
                let present = self.pin.add(self.store, [&l.digest])? || self.staging()?.store().has_blob(&l.digest);
                present.then_some(Cached::Layer(l))
            }
            other => other,
        };
        Ok(match hit {
            Some(hit) => {
                self.announce(st, text, true, out);
                self.cached_steps.fetch_add(1, Ordering::Relaxed);
                hit
            }
            None => {
                let n = self.announce(st, text, false, out);
                let layer = make(self, st, out)?;
                out.done(n);
                if crate::is_empty_layer(&layer) {
                    Cached::Empty
                } else {
                    Cached::Layer(layer)
                }
            }
        })
    }

    /// Claims a layer step for the caller (`Ok`: run it; the claim records the result), or
    /// yields the result of the identical step of this build (`Err`), waiting while another
    /// stage runs it. A step that failed elsewhere is not run again: the build is failing.
    fn claim_step(&self, key: &CacheKey) -> Result<Result<StepClaim<'_, 'a>, Cached>, BuildError> {
        let mut steps = lock(&self.steps);
        loop {
            if self.cancelled.load(Ordering::Relaxed) {
                return Err(BuildError::Cancelled);
            }
            match steps.get(key) {
                None => {
                    steps.insert(key.clone(), StepState::Running);
                    return Ok(Ok(StepClaim { build: self, key: key.clone(), result: None }));
                }
                Some(StepState::Done(done)) => return Ok(Err(done.clone())),
                Some(StepState::Failed) => return Err(BuildError::Cancelled),
                Some(StepState::Running) => steps = self.step_done.wait(steps).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Wakes steps waiting for an identical one (the build was cancelled: they give up).
    pub fn wake_step_waiters(&self) {
        drop(lock(&self.steps));
        self.step_done.notify_all();
    }

    /// The image a stage's final state makes, dated with the build.
    fn new_image(&self, state: ImageState) -> NewImage {
        NewImage {
            config: convert::to_store(&state.config, &state.extra),
            created: self.created_text.clone(),
            architecture: state.platform.arch,
            os: state.platform.os,
            author: state.config.author,
            variant: state.platform.variant,
            layers: state.layers,
            history: state.history,
        }
    }

    /// After a failed RUN: stores the state before it as an untagged image and returns its id
    /// (`None` when there is none or it cannot be stored: the build's own error matters more).
    /// No cache entry is recorded and no cache mount saved.
    pub fn commit_failed_state(mut self) -> Option<Digest> {
        // A multi-platform build that fails stores nothing (which platform's state would it be?).
        if self.targets.len() > 1 {
            return None;
        }
        let state = lock(&self.failed_state).take()?;
        drop(self.take_guests());
        let image = self.new_image(state);
        let manifest = self.staging.take()?.commit(image, &[]).ok()?;
        self.store.image(&manifest).ok().map(|i| i.config_digest)
    }

    /// Commits the target stage as the build's image.
    pub fn finish(mut self, targets: &[usize], out: &Reporter) -> Result<BuildOutcome, BuildError> {
        let guests = self.take_guests();
        for g in &guests {
            g.save_caches(&self.store.root().join(crate::steps::CACHE_MOUNTS))?;
        }
        let mut descriptions = Vec::new();
        for g in guests {
            let g = Arc::try_unwrap(g).map_err(|_| BuildError::Invalid("internal: the guest is still in use".into()))?;
            let arch = g.arch;
            let desc = g.finish(out);
            descriptions.push(if arch == GuestArch::wanted()? { desc } else { format!("{} guest: {desc}", arch.name()) });
        }
        let guest_desc = (!descriptions.is_empty()).then(|| descriptions.join("; "));
        let results = std::mem::take(&mut *lock(&self.results));
        let mut images = Vec::new();
        let mut layers = 0;
        for (t, stage) in targets.iter().enumerate() {
            let mut state = lock(&self.done).remove(&(t, *stage)).ok_or_else(|| BuildError::Invalid("internal: the target stage did not run".into()))?;
            for (k, v) in &self.opts.labels {
                state.config.labels.insert(k.clone(), v.clone());
            }
            layers += state.layers.len();
            let platform = state.platform.clone();
            images.push((platform, self.new_image(state)));
        }
        // Layers of the other stages stay in the store while cache entries name them.
        let keep: Vec<Digest> = results.iter().filter_map(|(_, r)| match r {
            Cached::Layer(l) => Some(l.digest.clone()),
            Cached::Empty => None,
        }).collect();
        let staging = self.staging.take().ok_or_else(|| BuildError::Invalid("internal: committed twice".into()))?;
        let cache = &self.cache;
        let mut warnings = Vec::new();
        let record_cache = |_: &Store| {
            for (key, result) in &results {
                if let Err(e) = cache.put(key, result) {
                    warnings.push(format!("warning: could not record a cache entry: {e}"));
                }
            }
            Ok(())
        };
        let (manifest, config, platforms) = if self.targets.len() > 1 {
            let shown: Vec<String> = images.iter().map(|(p, _)| p.to_string()).collect();
            let images = images
                .into_iter()
                .map(|(p, image)| Ok((kiln_store::Platform::parse(&p.to_string())?, image)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            let (index, manifests) = staging.commit_index_with(images, &self.opts.tags, &keep, record_cache)?;
            let mut platforms = Vec::new();
            for (platform, manifest) in shown.into_iter().zip(manifests) {
                let config = self.store.image(&manifest)?.config_digest;
                platforms.push(PlatformImage { platform, manifest, config });
            }
            (index.clone(), index, platforms)
        } else {
            let (_, image) = images.pop().ok_or_else(|| BuildError::Invalid("internal: no target".into()))?;
            let manifest = staging.commit_with(image, &self.opts.tags, &keep, record_cache)?;
            let config = self.store.image(&manifest)?.config_digest;
            (manifest, config, Vec::new())
        };
        for w in warnings {
            out.info(&w);
        }
        let cache_keys = results.iter().map(|(k, _)| k.clone()).collect();
        let cached_steps = self.cached_steps.load(Ordering::Relaxed);
        Ok(BuildOutcome { manifest, config, layers, cached_steps, guest: guest_desc, cache_keys, platforms })
    }
}

pub fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// Names the instruction an error came from (unless it already does).
pub fn step_error(line: usize, text: &str, e: BuildError) -> BuildError {
    match e {
        e @ (BuildError::StepFailed { .. } | BuildError::Step { .. } | BuildError::Copy { .. } | BuildError::Parse(_) | BuildError::Interrupted) => e,
        other => BuildError::Step { line, text: first_line(text), cause: Box::new(other) },
    }
}
