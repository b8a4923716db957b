//! Container commands (`kiln run`, `ps`, `stop`, `kill`, `start`, `rm`, `logs`, `wait`,
//! `commit`, `container prune`), one file per verb or per small family of verbs; the work is
//! in `kiln_runtime::container`. Also the hidden `__supervise` command: the process that owns
//! a detached container's VM.

pub mod attach;
pub mod commit;
pub mod cp;
pub mod exec;
pub mod inspect;
pub mod logs;
pub mod ps;
pub mod rm;
pub mod run;
pub mod start;
pub mod stop;
pub mod terminal;
pub mod volume;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_runtime::container::{Container, Containers, Status};
use kiln_sandbox::{BackendKind, ChosenLater, VmConfig};

/// The exit code of a command that passes on a process's: the code (255 when it does not
/// fit), or `on_error` after one `kiln: error:` line.
pub fn exit_with(result: Result<i32>, on_error: u8) -> std::process::ExitCode {
    match result {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("kiln: error: {e:#}");
            std::process::ExitCode::from(on_error)
        }
    }
}

/// How `run` and `exec` attach: `-d`, `-i`, `-t`.
#[derive(Args, Clone)]
pub struct StdioFlags {
    /// Run in the background (run: print the container's id)
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open and forward it
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the process a pseudo-terminal
    #[arg(short = 't', long)]
    pub tty: bool,
}

/// The VM a container gets.
#[derive(Args, Clone)]
pub struct VmFlags {
    /// Memory of the container's VM (e.g. 512m, 1g; default 1g)
    #[arg(short = 'm', long, value_name = "SIZE")]
    memory: Option<String>,
    /// CPUs of the container's VM (default 2)
    #[arg(long)]
    cpus: Option<String>,
    /// Where containers run: auto (QEMU or the built-in VMM), qemu, vm
    #[arg(long, env = "KILN_BACKEND", default_value = "auto")]
    backend: String,
    /// Show the guest's console
    #[arg(long, env = "KILN_DEBUG", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    debug: bool,
}

/// Docker's `-m` sizes (`512m`, `1g`, `1073741824`) in MiB (at least 64).
fn memory_mib(text: &str) -> Result<u32> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let bytes = num.parse::<f64>().ok().filter(|n| *n > 0.0).map(|n| (n * mult as f64) as u64).with_context(|| format!("invalid --memory {text:?}: expected a size such as 512m or 1g"))?;
    let mib = bytes >> 20;
    if mib < 64 {
        bail!("invalid --memory {text:?}: a container's VM needs at least 64m");
    }
    u32::try_from(mib).with_context(|| format!("invalid --memory {text:?}: too large"))
}

pub fn vm_config(flags: &VmFlags) -> Result<VmConfig> {
    let memory_mib = match &flags.memory {
        Some(m) => memory_mib(m)?,
        None => 1024,
    };
    let cpus = match &flags.cpus {
        Some(c) => c.parse::<f64>().ok().filter(|n| *n > 0.0 && *n <= 256.0).map(|n| n.ceil() as u32).with_context(|| format!("invalid --cpus {c:?}"))?,
        None => 2,
    };
    Ok(VmConfig { memory_mib, cpus, cache_dir: crate::paths::cache_dir()?, debug: flags.debug, shares: vec![] })
}

pub fn backend(flags: &VmFlags, vm: &VmConfig) -> Result<Box<dyn kiln_sandbox::Backend>> {
    Ok(Box::new(ChosenLater { kind: flags.backend.parse::<BackendKind>()?, cache_dir: vm.cache_dir.clone() }))
}

/// Starts the supervisor of `c` (kiln re-executed in its own session, so it outlives this
/// process and its terminal) and waits until the container runs.
pub fn spawn_supervisor(root: &Path, containers: &Containers, c: &Container, flags: &VmFlags) -> Result<()> {
    let exe = std::env::current_exe().context("finding kiln's own binary")?;
    let log = kiln_sys::fs::private(std::fs::File::options().write(true).create(true).truncate(true))
        .open(c.dir.join("supervisor.log"))
        .context("creating the supervisor's log")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__supervise").arg(&c.config.id).env("KILN_ROOT", root).env("KILN_BACKEND", &flags.backend);
    if let Some(m) = &flags.memory {
        cmd.args(["--memory", m]);
    }
    if let Some(n) = &flags.cpus {
        cmd.args(["--cpus", n]);
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone().context("supervisor log")?).stderr(log);
    kiln_sys::process::detach(&mut cmd);
    let last_start = c.state.started_at.clone();
    let mut child = cmd.spawn().context("starting the container's supervisor")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    // Started: our supervisor runs it, or already ran it (a quick command may have ended).
    let child_pid = child.id();
    let started = |now: &Container| {
        (now.state.status == Status::Running && now.state.owner_pid == Some(child_pid)) || (now.state.started_at.is_some() && now.state.started_at != last_start)
    };
    let give_up = |child: &mut std::process::Child, why: String| -> Result<()> {
        // Nothing may outlive a start that failed: its VM dies with the supervisor.
        let _ = child.kill();
        let _ = child.wait();
        bail!("container {} failed to start: {why}", c.short_id())
    };
    loop {
        let now = match containers.get(&c.config.id) {
            Ok(now) => now,
            Err(e) => return give_up(&mut child, e.to_string()),
        };
        if started(&now) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // It may have run and ended between the read above and now.
            if containers.get(&c.config.id).is_ok_and(|now| started(&now)) {
                return Ok(());
            }
            let log = std::fs::read_to_string(c.dir.join("supervisor.log")).unwrap_or_default();
            let last = log.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message").trim_start_matches("kiln: error: ").to_string();
            bail!("container {} failed to start ({status}): {last}", c.short_id());
        }
        if Instant::now() > deadline {
            return give_up(&mut child, "it did not start within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Args)]
pub struct SuperviseArgs {
    id: String,
    #[command(flatten)]
    vm: VmFlags,
}

/// The supervisor: runs the container to its end with output to its log only.
pub fn supervise(root: &Path, args: SuperviseArgs) -> Result<()> {
    let store = kiln_store::Store::open(root)?;
    let containers = Containers::new(root);
    let c = containers.get(&args.id)?;
    let vm = vm_config(&args.vm)?;
    let backend = backend(&args.vm, &vm)?;
    let result = kiln_runtime::container::host::run_container(&store, &containers, &c, &*backend, &vm, Default::default());
    if c.config.auto_remove {
        containers.remove(&c.config.id, true)?;
    }
    result?;
    Ok(())
}

/// `kiln container ...`: the container commands under one name.
#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Run a command in a new container
    Run(Box<run::RunArgs>),
    /// List containers
    #[command(alias = "ps", alias = "list")]
    Ls(ps::PsArgs),
    /// Stop running containers (stop signal, then SIGKILL after the timeout)
    Stop(stop::StopArgs),
    /// Send a signal to running containers
    Kill(stop::KillArgs),
    /// Start stopped containers
    Start(start::StartArgs),
    /// Stop and start containers
    Restart(stop::StopArgs),
    /// Remove containers
    Rm(rm::RmArgs),
    /// Show a container's output
    Logs(logs::LogsArgs),
    /// Run a command in a running container
    Exec(exec::ExecArgs),
    /// List a container's published ports
    Port(ps::PortArgs),
    /// Attach kiln's terminal to a running container (Ctrl-P Ctrl-Q detaches)
    Attach(attach::AttachArgs),
    /// List a container's processes
    Top(exec::TopArgs),
    /// Show the files a container changed (A added, C changed, D deleted)
    Diff(inspect::DiffArgs),
    /// Rename a container
    Rename(inspect::RenameArgs),
    /// Copy files between a container and the host
    Cp(cp::CpArgs),
    /// Show details of containers as JSON
    Inspect(crate::inspect::InspectArgs),
    /// Wait for containers to stop and print their exit codes
    Wait(stop::WaitArgs),
    /// Create an image from a container's changes
    Commit(commit::CommitArgs),
    /// Remove all stopped containers
    Prune(rm::PruneArgs),
}

pub fn run_command(root: &Path, cmd: ContainerCommand) -> std::process::ExitCode {
    let result = match cmd {
        ContainerCommand::Run(args) => return run::run(root, *args),
        ContainerCommand::Ls(args) => ps::run(root, args),
        ContainerCommand::Stop(args) => stop::stop(root, args),
        ContainerCommand::Kill(args) => stop::kill(root, args),
        ContainerCommand::Start(args) => return start::run(root, args),
        ContainerCommand::Restart(args) => stop::restart(root, args),
        ContainerCommand::Rm(args) => rm::run(root, args),
        ContainerCommand::Logs(args) => logs::run(root, args),
        ContainerCommand::Exec(args) => return exec::run(root, args),
        ContainerCommand::Port(args) => ps::port(root, args),
        ContainerCommand::Attach(args) => return attach::run(root, args),
        ContainerCommand::Top(args) => return exec::top(root, args),
        ContainerCommand::Diff(args) => inspect::diff(root, args),
        ContainerCommand::Rename(args) => inspect::rename(root, args),
        ContainerCommand::Cp(args) => cp::run(root, args),
        ContainerCommand::Inspect(args) => crate::inspect::run(root, args),
        ContainerCommand::Wait(args) => stop::wait(root, args),
        ContainerCommand::Commit(args) => commit::run(root, args),
        ContainerCommand::Prune(args) => rm::prune(root, args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
