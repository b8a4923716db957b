//! One guest for the whole build: each layer is uploaded at most once (to its own directory),
//! and each RUN is an overlay over the layers of its stage whose upper dir then serves as that
//! new layer's directory, for later steps of any stage. Stages running at the same time share
//! the session.
//!
//! Guest layout: `/run/kiln/layers/<n>` holds one layer (uploaded, or the upper dir of the RUN
//! that made it), `/run/kiln/work/<n>` and `/run/kiln/root/<n>` are per-RUN overlay work dir
//! and mount point. `/run/kiln/bind/<n>` holds the source of a bind mount (uploaded once per
//! build per content, see [`crate::bind`]); a read-write bind gets an overlay of its own over
//! it in `/run/kiln/bindrw/<n>/`, unmounted after the RUN, so its writes reach neither the
//! source, other steps nor the layer. An ssh mount is a socket `/run/kiln/ssh/<n>/agent.sock`
//! that the agent forwards to the host's SSH agent for the duration of the RUN.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use std::sync::Mutex;

use kiln_sandbox::agent::{AgentClient, Forward, Process, RunFile, RunMount};
use kiln_sandbox::{Backend, GuestArch, GuestImage, SandboxError, Vm, VmConfig};
use kiln_runtime::layers::GuestLayers;
use kiln_store::{Digest, LayerInfo, Staging};

use crate::{is_empty_layer, BuildError, Reporter};

/// `sha256:0123456789ab`: enough of a digest to tell layers apart in progress lines.
fn short_digest(d: &Digest) -> String {
    let text = d.to_string();
    text.chars().take("sha256:".len() + 12).collect()
}

/// Where cache mount `id` is kept between builds.
pub fn cache_file(store_dir: &Path, id: &str) -> PathBuf {
    store_dir.join(format!("{}.tar", kiln_store::Digest::of(id.as_bytes()).hex()))
}

/// Shared by the stages of a build, which may run RUNs at the same time: the bookkeeping is
/// behind a lock, the agent calls (each answered under its own id) are not.
pub struct GuestSession {
    /// What the guest runs natively.
    pub arch: GuestArch,
    /// Only for the description and the shutdown (a Mutex: `Vm` is `Send`, not `Sync`).
    vm: Mutex<Box<dyn Vm>>,
    agent: AgentClient,
    state: Mutex<State>,
    /// Where cache mounts are kept between builds.
    cache_store: PathBuf,
    /// What the guest may still write to the host (layers, cache mounts).
    budget: kiln_runtime::budget::WriteBudget,
}

#[derive(Default)]
struct State {
    /// Guest directory of each layer present in the guest (shared with containers' code).
    layers: GuestLayers,
    runs: usize,
    /// Cache mount ids in use, with their guest directories.
    caches: HashMap<String, String>,
    /// Bind mount sources present in the guest, by identity, with their directories.
    binds: HashMap<String, String>,
    /// Read-write bind overlays made so far.
    rw_binds: usize,
    /// Forwarded sockets made so far.
    forwards: usize,
}

/// What a RUN executes, beyond its layers.
pub struct RunRequest<'a> {
    pub argv: &'a [String],
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub clamp_mtime: Option<i64>,
    pub files: Vec<RunFile>,
    pub mounts: Vec<RunMount>,
    /// Cache mounts: (id, target).
    pub caches: Vec<(String, String)>,
    pub binds: Vec<GuestBind>,
    /// Sockets forwarded to the host's (`RUN --mount=type=ssh`).
    pub ssh: Vec<crate::mounts::SshUse>,
    pub network: kiln_sandbox::agent::Network,
}

/// A bind mount whose source is in the guest ([`GuestSession::bind_source`]).
#[derive(Debug, Clone)]
pub struct GuestBind {
    /// The guest directory holding the source as [`crate::bind::ENTRY`].
    pub dir: String,
    pub target: String,
    pub readonly: bool,
}

impl GuestSession {
    /// Starts a guest of `arch` (the build's own guest, or the other architecture's).
    pub fn start(backend: &dyn Backend, arch: GuestArch, config: &VmConfig, cache_store: &Path, out: &Reporter) -> Result<Self, BuildError> {
        let image = GuestImage::locate_arch(arch)?;
        if arch == GuestArch::wanted()? {
            out.info("starting the build VM");
        } else {
            out.info(&format!("starting the {} build VM for the linux/{} stages", arch.name(), arch.oci()));
        }
        let vm = backend.start(&image, config)?;
        out.info(&format!("VM ready: {}", vm.describe()));
        let agent = vm.agent().clone();
        agent.apply_host_access()?;
        let budget = kiln_runtime::budget::WriteBudget::for_store(cache_store)?;
        Ok(Self { arch, vm: Mutex::new(vm), agent, state: Mutex::new(State::default()), cache_store: cache_store.to_path_buf(), budget })
    }

    /// The agent, for calls beyond layers and RUNs (e.g. registering an emulator).
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guest directories of `layers`, uploading those the guest lacks. Holds the lock
    /// while uploading, so two stages never upload the same layer twice.
    fn upload(&self, staging: &Staging, layers: &[LayerInfo], out: &Reporter) -> Result<Vec<String>, BuildError> {
        let mut state = self.state();
        let open = |d: &Digest| staging.open_blob(d);
        let mut announce = |layer: &LayerInfo| {
            out.info(&format!("transferring layer {} ({}) to the guest", short_digest(&layer.digest), kiln_store::human_size(layer.size)));
        };
        Ok(state.layers.upload(&self.agent, &open, layers, &mut announce)?)
    }

    /// The guest directory of cache mount `id`, filled from `saved` (a tar) at first use.
    fn cache_dir(&self, id: &str, saved: &Path) -> Result<String, BuildError> {
        let mut state = self.state();
        if let Some(d) = state.caches.get(id) {
            return Ok(d.clone());
        }
        let dir = format!("/run/kiln/cache/{}", state.caches.len() + 1);
        match std::fs::File::open(saved) {
            Ok(f) => {
                self.agent.receive_tar(&dir, &mut std::io::BufReader::new(f) as &mut dyn Read)?;
            }
            Err(_) => self.agent.make_dirs(&[&dir])?,
        }
        state.caches.insert(id.to_string(), dir.clone());
        Ok(dir)
    }

    /// The guest directory of the bind source named `identity`, uploading the tar `make`
    /// gives at first use. Holds the lock while uploading, so no source is uploaded twice.
    pub fn bind_source(&self, identity: &str, make: impl FnOnce() -> Result<std::fs::File, BuildError>) -> Result<String, BuildError> {
        let mut state = self.state();
        if let Some(d) = state.binds.get(identity) {
            return Ok(d.clone());
        }
        let dir = format!("/run/kiln/bind/{}", state.binds.len() + 1);
        let tar = make()?;
        self.agent.receive_tar(&dir, &mut std::io::BufReader::new(tar) as &mut dyn Read)?;
        state.binds.insert(identity.to_string(), dir.clone());
        Ok(dir)
    }

    /// The mounts of `binds`: a read-only bind mounts its source; a read-write one an overlay
    /// of its own over it, whose mount point is returned with the mounts so the caller
    /// unmounts it after the RUN (also when this fails half-way).
    fn bind_mounts(&self, binds: &[GuestBind], overlays: &mut Vec<String>) -> Result<Vec<RunMount>, BuildError> {
        let mut mounts = Vec::new();
        for b in binds {
            let top = if b.readonly {
                b.dir.clone()
            } else {
                let n = {
                    let mut state = self.state();
                    state.rw_binds += 1;
                    state.rw_binds
                };
                let base = format!("/run/kiln/bindrw/{n}");
                let root = format!("{base}/root");
                self.agent.mount_overlay(vec![b.dir.clone()], &format!("{base}/upper"), &format!("{base}/work"), &root)?;
                overlays.push(root.clone());
                root
            };
            let source = format!("{top}/{}", crate::bind::ENTRY);
            mounts.push(RunMount::Bind { target: b.target.clone(), source, readonly: b.readonly });
        }
        Ok(mounts)
    }

    /// The mounts of `ssh`: each a guest socket forwarded to its host socket, bound at its
    /// target. The forwards are returned for the caller to close after the RUN (also when
    /// this fails half-way).
    fn ssh_mounts(&self, ssh: &[crate::mounts::SshUse], forwards: &mut Vec<Forward>) -> Result<Vec<RunMount>, BuildError> {
        let mut mounts = Vec::new();
        for s in ssh {
            let n = {
                let mut state = self.state();
                state.forwards += 1;
                state.forwards
            };
            let socket = format!("/run/kiln/ssh/{n}/agent.sock");
            forwards.push(self.agent.forward_unix(&socket, &s.host_socket, s.mode, s.uid, s.gid)?);
            mounts.push(RunMount::Bind { target: s.target.clone(), source: socket, readonly: false });
        }
        Ok(mounts)
    }

    /// Writes every cache mount used back to `store_dir` (a tar per id, replaced atomically).
    pub fn save_caches(&self, store_dir: &Path) -> Result<(), BuildError> {
        let caches = self.state().caches.clone();
        for (id, dir) in &caches {
            std::fs::create_dir_all(store_dir).map_err(|e| BuildError::Invalid(format!("creating {}: {e}", store_dir.display())))?;
            let target = cache_file(store_dir, id);
            let mut tmp = tempfile::NamedTempFile::new_in(store_dir).map_err(|e| BuildError::Invalid(format!("cache mount {id}: {e}")))?;
            self.agent.diff(dir, &[], None, |stream| std::io::copy(&mut self.budget.reader(stream), tmp.as_file_mut()).map_err(|e| SandboxError::Agent(format!("cache mount {id}: {e}"))))?;
            tmp.persist(&target).map_err(|e| BuildError::Invalid(format!("cache mount {id}: {}", e.error)))?;
        }
        Ok(())
    }

    /// Runs a process over `layers` and returns the new layer (possibly empty).
    pub fn run_step(&self, staging: &Staging, layers: &[LayerInfo], req: &RunRequest<'_>, out: &Reporter) -> Result<LayerInfo, BuildError> {
        let lower_dirs = self.upload(staging, layers, out)?;
        let mut mounts = req.mounts.clone();
        for (id, target) in &req.caches {
            let source = self.cache_dir(id, &cache_file(&self.cache_store, id))?;
            mounts.push(RunMount::Bind { target: target.clone(), source, readonly: false });
        }
        let mut overlays = Vec::new();
        let mut forwards = Vec::new();
        let result = self.bind_mounts(&req.binds, &mut overlays).and_then(|binds| {
            mounts.extend(binds);
            mounts.extend(self.ssh_mounts(&req.ssh, &mut forwards)?);
            // Parents before what is mounted below them, whatever the Dockerfile's order (as
            // BuildKit sorts its mounts by destination).
            mounts.sort_by(|a, b| a.target().cmp(b.target()));
            self.run_in_overlay(staging, lower_dirs, mounts, req, out)
        });
        let mut unmounted = Ok(());
        for f in forwards {
            unmounted = unmounted.and(f.close());
        }
        for o in overlays {
            unmounted = unmounted.and(self.agent.unmount(&o));
        }
        let layer = result?;
        unmounted?;
        Ok(layer)
    }

    /// Runs the process over an overlay of `lower_dirs` (bottom first) and returns the diff.
    fn run_in_overlay(
        &self,
        staging: &Staging,
        lower_dirs: Vec<String>,
        mounts: Vec<RunMount>,
        req: &RunRequest<'_>,
        out: &Reporter,
    ) -> Result<LayerInfo, BuildError> {
        let (upper, work, root) = {
            let mut state = self.state();
            state.runs += 1;
            let runs = state.runs;
            (state.layers.new_dir(), format!("/run/kiln/work/{runs}"), format!("/run/kiln/root/{runs}"))
        };
        let agent = &self.agent;
        let lowers: Vec<String> = lower_dirs.into_iter().rev().collect();
        agent.mount_overlay(lowers.clone(), &upper, &work, &root)?;
        let process = Process {
            rootfs: root.clone(),
            argv: req.argv.to_vec(),
            env: req.env.clone(),
            cwd: req.cwd.clone(),
            uid: req.uid,
            gid: req.gid,
            additional_gids: req.groups.clone(),
            files: req.files.clone(),
            mounts,
            network: req.network,
            hostname: String::new(),
            join: None,
            readonly_root: false,
            init: false,
        };
        let (stdout, stderr, tail) = out.process_output();
        let status = agent.run(&process, stdout, stderr);
        let unmounted = agent.unmount(&root);
        let status = status?;
        unmounted?;
        if !status.success() {
            return Err(BuildError::StepFailed { line: 0, text: String::new(), argv: req.argv.to_vec(), status, tail: tail.render(), state: None });
        }
        let layer = agent.diff(&upper, &lowers, req.clamp_mtime, |stream| {
            staging.store().ingest_layer(self.budget.reader(stream)).map_err(|e| SandboxError::Agent(format!("layer from the guest rejected: {e}")))
        })?;
        if !is_empty_layer(&layer) {
            // The upper dir already is this layer in the guest: no need to upload it again.
            self.state().layers.adopt(layer.digest.clone(), upper);
        }
        Ok(layer)
    }

    /// Powers the guest off; returns its description for the summary.
    pub fn finish(self, out: &Reporter) -> String {
        let vm = self.vm.into_inner().unwrap_or_else(|e| e.into_inner());
        let desc = vm.describe();
        if let Err(e) = vm.shutdown() {
            out.info(&format!("warning: guest did not power off cleanly: {e}"));
        }
        desc
    }
}
