//! Running one container in its own microVM, from the process that owns it (`kiln run` in
//! the foreground, or the supervisor of a detached container): boot the guest, unpack the
//! image's layers once, lay the container's writable layer (`rw.tar`, from earlier runs) into
//! a fresh upper dir, mount the overlay, run the main process with the caller's stdin, tty and
//! output (every byte also goes to the json-file log), serve `kiln stop`/`kill` on the control
//! socket, and when the process ends save the upper dir back as `rw.tar` (verified by the
//! store's one layer rule: the guest is not trusted), record the exit, power the guest off.
//!
//! The VM dies with the process that runs this (the sandbox ties QEMU to it). This module never
//! touches the host terminal; the CLI does (raw mode, SIGWINCH) through [`Attach::on_start`].

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use kiln_sandbox::agent::{Network, Process, RunMount};
use kiln_sandbox::{AgentClient, Backend, ExitStatus, GuestImage, ProcessControl, ProcessIo, VmConfig};
use kiln_store::{Digest, LayerInfo, Store};

use super::attach::Attached;
use super::control::{self, Finished};
use super::names::exit_code;
use super::logs::{JsonLog, Tee};
use super::record::{Container, Containers, Status};
use crate::layers::GuestLayers;
use crate::RuntimeError;

const UPPER: &str = "/run/kiln/ctr/upper";
const WORK: &str = "/run/kiln/ctr/work";
const ROOT: &str = "/run/kiln/ctr/root";

/// How the owner talks to the container's main process.
#[derive(Default)]
pub struct Attach {
    pub stdin: Option<Box<dyn Read + Send>>,
    /// The terminal's size when the container has a tty.
    pub tty_size: Option<(u16, u16)>,
    /// Live destinations besides the log (`None`: the log only, as a detached container).
    pub stdout: Option<Box<dyn Write + Send>>,
    pub stderr: Option<Box<dyn Write + Send>>,
    /// Called once the process runs, with its control (to forward signals and resizes).
    pub on_start: Option<Box<dyn FnOnce(ProcessControl) + Send>>,
}

/// Runs container `c` to its end; returns how its main process ended.
pub fn run_container(store: &Store, containers: &Containers, c: &Container, backend: &dyn Backend, vm: &VmConfig, attach: Attach) -> Result<ExitStatus, RuntimeError> {
    let id = c.config.id.clone();
    let me = std::process::id();
    containers.claim(&id, me)?;
    let finished = Arc::new(Finished::default());
    let result = boot_and_run(store, containers, c, backend, vm, attach, &finished);
    let recorded = containers.release(&id, me, |s| {
        s.status = Status::Exited;
        s.ports.clear();
        s.finished_at = Some(kiln_store::time::now_rfc3339_nanos());
        match &result {
            Ok(status) => s.exit_code = Some(exit_code(status)),
            Err(e) => {
                s.exit_code = Some(255);
                s.error = Some(e.to_string());
            }
        }
    });
    finished.set();
    finished.drain();
    let status = result?;
    recorded?;
    Ok(status)
}

fn boot_and_run(store: &Store, containers: &Containers, c: &Container, backend: &dyn Backend, vm_config: &VmConfig, attach: Attach, finished: &Arc<Finished>) -> Result<ExitStatus, RuntimeError> {
    // Ports first: one already taken fails the start before a guest boots.
    let bound = super::ports::bind(&c.config.ports)?;
    let bound_ports: Vec<super::ports::PortMapping> = bound.iter().map(|(m, _)| m.clone()).collect();
    let image = GuestImage::locate()?;
    let mut vm_config = vm_config.clone();
    let shared: Vec<(usize, &super::volumes::VolumeMount)> = c.config.mounts.iter().filter(|m| m.host_dir().is_some()).enumerate().collect();
    // Host directories over virtiofs where virtiofsd is found (much faster on many files),
    // volumes over 9p (their owners are kept in xattrs).
    let virtiofsd = !shared.is_empty() && kiln_sandbox::virtiofs::find(&vm_config.cache_dir)?.is_some();
    for (i, m) in &shared {
        if let Some((dir, readonly)) = m.host_dir() {
            let keep_owners = matches!(m, super::volumes::VolumeMount::Volume { .. });
            let virtiofs = virtiofsd && !keep_owners;
            vm_config.shares.push(kiln_sandbox::Share { tag: format!("kiln{i}"), host_path: dir.to_path_buf(), readonly, keep_owners, virtiofs });
        }
    }
    // An image for another architecture: its emulator is known before a guest boots.
    let emulator = match c.config.platform.as_str() {
        "" => None,
        p => crate::emulate::find(&kiln_frontend::graph::Platform::parse(p).map_err(RuntimeError::Invalid)?)?,
    };
    let vm = backend.start(&image, &vm_config)?;
    let agent = vm.agent().clone();
    agent.apply_host_access()?;
    if let Some(emu) = &emulator {
        crate::emulate::install(&agent, emu)?;
    }
    let layers: Vec<LayerInfo> = c
        .config
        .layers
        .iter()
        .map(|l| Ok(LayerInfo { digest: l.digest.parse()?, diff_id: l.diff_id.parse()?, size: l.size }))
        .collect::<Result<_, kiln_store::StoreError>>()?;
    let open = |d: &Digest| store.open_blob(d);
    let lowers = GuestLayers::default().upload(&agent, &open, &layers, &mut |_| {})?;
    agent.make_dirs(&[UPPER, WORK, ROOT])?;
    let rw = c.rw_layer();
    if rw.is_file() {
        let mut f = File::open(&rw).map_err(|e| RuntimeError::io(format!("opening {}", rw.display()), e))?;
        agent.receive_tar(UPPER, &mut f)?;
    }
    agent.mount_overlay(lowers.iter().rev().cloned().collect(), UPPER, WORK, ROOT)?;

    let cfg = &c.config;
    let mut mounts = Vec::new();
    for ((i, m), share) in shared.iter().zip(&vm_config.shares) {
        let guest_dir = format!("/run/kiln/share/{i}");
        let readonly = share.readonly;
        // A volume (not a host directory) that is empty takes the image's content there.
        let copy_up = matches!(m, super::volumes::VolumeMount::Volume { .. }).then(|| kiln_protocol::CopyUp { root: ROOT.into(), path: m.target().to_string() });
        agent.mount_share(share, &guest_dir, copy_up)?;
        mounts.push(RunMount::Bind { target: m.target().to_string(), source: guest_dir, readonly });
    }
    for m in &cfg.mounts {
        if let super::volumes::VolumeMount::Tmpfs { target } = m {
            mounts.push(RunMount::Tmpfs { target: target.clone(), size_bytes: None });
        }
    }
    // Parents before what is mounted below them.
    mounts.sort_by(|a, b| a.target().cmp(b.target()));
    let process = Process {
        rootfs: ROOT.into(),
        argv: cfg.argv.clone(),
        env: cfg.env.clone(),
        cwd: cfg.cwd.clone(),
        uid: cfg.uid,
        gid: cfg.gid,
        additional_gids: cfg.groups.clone(),
        files: vec![],
        mounts,
        network: if cfg.network == "none" { Network::None } else { Network::Guest },
        hostname: cfg.hostname.clone(),
        join: None,
        readonly_root: cfg.read_only,
        init: cfg.init,
    };
    let log = JsonLog::open(&c.log_path()).map_err(|e| RuntimeError::io("opening the container's log", e))?;
    // A detached `-i` container reads its stdin from a pipe that `kiln attach` clients feed.
    let (stdin, attached) = match attach.stdin {
        Some(s) => (Some(s), Attached::new(None)),
        None if cfg.interactive => {
            let (r, w) = std::io::pipe().map_err(|e| RuntimeError::io("creating the stdin pipe", e))?;
            (Some(Box::new(r) as Box<dyn Read + Send>), Attached::new(Some(w)))
        }
        None => (None, Attached::new(None)),
    };
    let out_log = Tee::new(log.writer("stdout"), Some(attached.output(super::exec::STDOUT)));
    let err_log = Tee::new(log.writer("stderr"), Some(attached.output(super::exec::STDERR)));
    let stdout: Box<dyn Write + Send> = Box::new(Tee::new(out_log, attach.stdout));
    let stderr: Box<dyn Write + Send> = Box::new(Tee::new(err_log, attach.stderr));
    // A detached `-t` container gets a terminal too (attach resizes it to the client's).
    let tty = cfg.tty.then(|| attach.tty_size.unwrap_or((24, 80)));
    let io = ProcessIo { stdin, tty };
    let running = agent.start_process(&process, io, stdout, stderr)?;
    let save: control::Saver = {
        let (agent, lowers, dir) = (agent.clone(), lowers.clone(), c.dir.clone());
        Arc::new(move || save_rw_layer(&agent, &lowers, &dir))
    };
    let exec: control::ExecHandler = {
        let base = Arc::new(super::exec::ExecBase {
            agent: agent.clone(),
            main_run: running.control().run_id(),
            env: cfg.env.clone(),
            cwd: cfg.cwd.clone(),
            ids: (cfg.uid, cfg.gid, cfg.groups.clone()),
        });
        Arc::new(move |req, conn| super::exec::serve_exec(&base, req, conn))
    };
    let receive: control::Receiver = {
        let agent = agent.clone();
        Arc::new(move |tar: &mut dyn Read| Ok(agent.receive_tar(ROOT, tar).map(drop)?))
    };
    attached.set_control(running.control());
    let attach_handler: control::AttachHandler = {
        let attached = attached.clone();
        Arc::new(move |conn| attached.add(conn))
    };
    let handlers = control::Handlers { save, exec, receive, attach: attach_handler };
    let server = control::serve(&c.dir, running.control(), cfg.stop_signal, finished.clone(), handlers)?;
    super::ports::serve(&agent, bound);
    // Running from here on: the process runs and `kiln stop` can reach it.
    let me = std::process::id();
    containers.update(&c.config.id, |s| {
        s.status = Status::Running;
        s.owner_pid = Some(me);
        s.owner_start = super::record::process_start(me);
        s.started_at = Some(kiln_store::time::now_rfc3339_nanos());
        s.finished_at = None;
        s.exit_code = None;
        s.error = None;
        s.ports = bound_ports;
    })?;
    if let Some(f) = attach.on_start {
        f(running.control());
    }
    let status = running.wait();
    attached.finish(status.as_ref().map_or(255, exit_code));
    let unmounted = agent.unmount(ROOT);
    let status = status?;
    unmounted?;
    if !cfg.auto_remove {
        save_rw_layer(&agent, &lowers, &c.dir)?;
    }
    drop(server);
    if let Err(e) = vm.shutdown() {
        crate::container::warn(&format!("the container's VM did not power off cleanly: {e}"));
    }
    Ok(status)
}

/// Streams the upper dir's diff into `rw.tar`, verified before it replaces the old one.
fn save_rw_layer(agent: &AgentClient, lowers: &[String], dir: &Path) -> Result<(), RuntimeError> {
    let lowers_top_first: Vec<String> = lowers.iter().rev().cloned().collect();
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| RuntimeError::io("saving the container's writable layer", e))?;
    // At most what the disk can take while keeping its reserve (each save replaces the last).
    let budget = crate::budget::WriteBudget::for_store(dir)?;
    agent.diff(UPPER, &lowers_top_first, None, |stream| {
        std::io::copy(&mut budget.reader(stream), tmp.as_file_mut()).map_err(|e| kiln_sandbox::SandboxError::io("saving the container's writable layer", e))?;
        Ok(())
    })?;
    let file = File::open(tmp.path()).map_err(|e| RuntimeError::io("reading back the writable layer", e))?;
    kiln_store::layer_verify::check_layer(file).map_err(|e| RuntimeError::Invalid(format!("the container's writable layer from the guest was rejected: {e}")))?;
    tmp.as_file().sync_all().map_err(|e| RuntimeError::io("saving the container's writable layer", e))?;
    tmp.persist(dir.join("rw.tar")).map_err(|e| RuntimeError::io("saving the container's writable layer", e.error))?;
    Ok(())
}

/// Removes what a container's run left that a removal must not keep (its socket).
pub fn clean_run_files(dir: &Path) {
    let _ = fs::remove_file(dir.join(control::SOCKET));
}
