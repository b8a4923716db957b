//! `kiln run [flags] IMAGE [CMD...]`: a container in its own microVM. In the foreground the
//! container's output is kiln's, stdin is forwarded with `-i`, `-t` gives it a terminal, and
//! kiln exits with the container's exit code (125 for kiln's own errors, as Docker). With
//! `-d` a supervisor (kiln re-executed, `__supervise`) owns the VM and kiln prints the id.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runtime::container::create::{create, CreateOptions};
use kiln_runtime::container::host::{run_container, Attach};
use kiln_runtime::container::names::exit_code;
use kiln_frontend::graph::Platform;
use kiln_runtime::container::{Container, Containers};
use kiln_runtime::emulate::{image_platform, same_platform};
use kiln_runtime::spec::RunOptions;
use kiln_sandbox::ProcessControl;
use kiln_store::{ImageRecord, Reference, Store};

use super::terminal::{self, RawMode};
use super::{backend, spawn_supervisor, vm_config, VmFlags};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    stdio: super::StdioFlags,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Name of the container
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from kiln's environment)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines; # comments)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User (name or id) and optional group: USER[:GROUP]
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Override the image's entrypoint ("" clears it)
    #[arg(long)]
    entrypoint: Option<String>,
    /// Hostname of the container (default: its short id)
    #[arg(long)]
    hostname: Option<String>,
    /// Network: default (the VM's NAT, host loopback at host.docker.internal) or none
    #[arg(long, default_value = "default")]
    network: String,
    /// Signal that `kiln stop` sends first (default: the image's STOPSIGNAL, else SIGTERM)
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds `kiln stop` waits before SIGKILL (default 10)
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Publish a container port on the host: [IP:][HOSTPORT:]PORT[/tcp|udp], ranges as 8000-8010:8000-8010
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// Mount a host directory, a named volume or a new anonymous volume: /host/dir:/dir[:ro], NAME:/dir[:ro] or /dir
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    volumes: Vec<String>,
    /// Mount the container's root filesystem read-only (mounts and --tmpfs stay writable)
    #[arg(long)]
    read_only: bool,
    /// Platform of the image (e.g. linux/arm64); another architecture runs under emulation
    #[arg(long)]
    platform: Option<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    init: bool,
    /// Mount a tmpfs at this path
    #[arg(long = "tmpfs", value_name = "DIR")]
    tmpfs: Vec<String>,
    /// Publish every EXPOSEd port on a free host port
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// When to pull the image: missing, always or never
    #[arg(long, default_value = "missing")]
    pull: String,
    #[command(flatten)]
    vm: VmFlags,
    /// Image to run
    image: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Docker's exit code for kiln's own errors.
const KILN_ERROR: u8 = 125;

pub fn run(root: &Path, args: RunArgs) -> ExitCode {
    super::exit_with(run_inner(root, args), KILN_ERROR)
}

/// `-e` and `--env-file` entries as `KEY=VALUE` (a bare `KEY` takes kiln's value, or is
/// dropped when kiln has none, as Docker does).
pub fn env_entries(env: &[String], files: &[String]) -> Result<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading the env file {f}"))?;
        for line in text.lines().map(str::trim_start) {
            if !line.is_empty() && !line.starts_with('#') {
                lines.push(line.to_string());
            }
        }
    }
    lines.extend(env.iter().cloned());
    let mut out = Vec::new();
    for e in lines {
        match e.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable: {e}"),
            Some(_) => out.push(e),
            None if e.is_empty() || e.contains(char::is_whitespace) => bail!("invalid environment variable: {e:?}"),
            None => {
                if let Ok(v) = std::env::var(&e) {
                    out.push(format!("{e}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// The image to run, pulled as `kiln pull` does when the policy says so. With `platform`, a
/// local image of another platform counts as missing (Docker's rule) and a pull asks for it.
pub fn image_for(store: &Store, name: &str, pull: &str, platform: Option<&Platform>) -> Result<ImageRecord> {
    let local = store.lookup(name);
    // A multi-platform image offers its manifest for the platform (default: this machine's).
    let wanted = platform.map(|p| kiln_store::Platform::parse(&p.to_string())).transpose()?;
    let (local, local_platform, wrong_platform) = match local {
        Ok((r, d)) => match store.image_for(&d, wanted.as_ref()) {
            Ok(img) => {
                let have = image_platform(&img);
                let wrong = platform.is_some_and(|want| !same_platform(&have, want));
                (Ok((r, img.manifest_digest)), Some(have.to_string()), wrong)
            }
            // The index has no image for the platform (asked for, or this machine's): pulled for
            // it, or (--pull never) an error.
            Err(kiln_store::StoreError::NoPlatform { available, .. }) => (Ok((r, d)), Some(available), true),
            Err(e) => return Err(e.into()),
        },
        Err(e) => (Err(e), None, false),
    };
    let want_pull = match (pull, &local) {
        ("always", _) => true,
        ("missing", Err(kiln_store::StoreError::NoSuchImage(_))) => true,
        ("missing", Ok(_)) => wrong_platform,
        ("missing" | "never", _) => false,
        (other, _) => bail!("invalid --pull {other:?}: expected missing, always or never"),
    };
    let digest = if want_pull {
        let reference: Reference = name.parse().with_context(|| format!("image name {name:?}"))?;
        if local.is_err() || wrong_platform {
            eprintln!("Unable to find image '{reference}' locally");
        }
        let platform = platform.map(|p| kiln_registry::Platform::parse(&p.to_string())).transpose().map_err(anyhow::Error::msg)?;
        let opts = kiln_registry::PullOptions { platform, ..Default::default() };
        let pulled = kiln_registry::pull_image(store, &reference, &opts, &|_| {}).with_context(|| format!("pulling {reference}"))?;
        pulled.image
    } else {
        if let (true, Some(have)) = (wrong_platform, &local_platform) {
            let want = platform.map_or_else(|| kiln_store::Platform::host().to_string(), |p| p.to_string());
            bail!("{name} is a {have} image, but {want} is wanted (pull it with `kiln pull --platform {want} {name}`)");
        }
        local.map(|(_, d)| d).with_context(|| format!("no such image: {name}"))?
    };
    let image = store.image(&digest)?;
    let have = image_platform(&image);
    match platform {
        Some(want) if !same_platform(&have, want) => bail!("{name}: the registry gave a {have} image, but {want} is wanted"),
        // Docker's warning for an image of another platform than the machine's.
        None if have.arch != kiln_runtime::emulate::host_arch() => {
            eprintln!("WARNING: The requested image's platform ({have}) does not match the detected host platform (linux/{}): it runs under emulation", kiln_runtime::emulate::host_arch());
        }
        _ => {}
    }
    Ok(image)
}

fn run_inner(root: &Path, args: RunArgs) -> Result<i32> {
    if !matches!(args.network.as_str(), "default" | "none") {
        bail!("invalid --network {:?}: expected default or none", args.network);
    }
    let stdin_tty = std::io::stdin().is_terminal();
    if args.stdio.tty && args.stdio.interactive && !args.stdio.detach && !stdin_tty {
        bail!("the input device is not a TTY: drop -t, or run kiln from a terminal");
    }
    let mut publish = Vec::new();
    for p in &args.publish {
        publish.extend(kiln_runtime::container::ports::parse_publish(p)?);
    }
    let mut mounts = Vec::new();
    let parsed = args
        .volumes
        .iter()
        .map(|v| kiln_runtime::container::volumes::parse_volume(root, v))
        .chain(args.tmpfs.iter().map(|t| kiln_runtime::container::volumes::parse_tmpfs(t)))
        .try_for_each(|m| m.map(|m| mounts.push(m)));
    if let Err(e) = parsed {
        // `-v /dir` before the bad one made an anonymous volume: it goes again.
        let _ = kiln_runtime::container::volumes::remove_anonymous(root, &mounts);
        return Err(e.into());
    }
    // An anonymous volume (`-v /dir`) made for a container that is never created goes again.
    let (vm, backend, store, containers, c) = prepare(root, &args, publish, mounts.clone()).inspect_err(|_| {
        let _ = kiln_runtime::container::volumes::remove_anonymous(root, &mounts);
    })?;
    if args.stdio.detach {
        if let Err(e) = spawn_supervisor(root, &containers, &c, &args.vm) {
            // It never ran: leave nothing behind (a taken port, a guest that would not boot).
            let _ = containers.remove(&c.config.id, true);
            return Err(e);
        }
        println!("{}", c.config.id);
        return Ok(0);
    }
    let status = foreground(&store, &containers, &c, &*backend, &vm, args.stdio.interactive, args.stdio.tty && stdin_tty);
    let never_ran = status.is_err() && containers.get(&c.config.id).is_ok_and(|c| c.state.started_at.is_none());
    if args.rm || never_ran {
        if let Err(e) = containers.remove(&c.config.id, true) {
            eprintln!("kiln: warning: removing container {}: {e}", c.short_id());
        }
    }
    Ok(exit_code(&status?))
}

type Prepared = (kiln_sandbox::VmConfig, Box<dyn kiln_sandbox::Backend>, Store, Containers, Container);

/// Everything up to the container's record: its VM's shape, the image (pulled if need be).
fn prepare(root: &Path, args: &RunArgs, publish: Vec<kiln_runtime::container::ports::PortMapping>, mounts: Vec<kiln_runtime::container::volumes::VolumeMount>) -> Result<Prepared> {
    let vm = vm_config(&args.vm)?;
    let backend = backend(&args.vm, &vm)?;
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let containers = Containers::new(root);
    let platform = args.platform.as_deref().map(Platform::parse).transpose().map_err(|e| anyhow::anyhow!("invalid --platform: {e}"))?;
    let image = image_for(&store, &args.image, &args.pull, platform.as_ref())?;
    let opts = CreateOptions {
        name: args.name.clone(),
        run: RunOptions {
            entrypoint: args.entrypoint.clone(),
            command: args.command.clone(),
            env: env_entries(&args.env, &args.env_file)?,
            workdir: args.workdir.clone(),
            user: args.user.clone(),
            hostname: args.hostname.clone(),
            tty: args.stdio.tty,
        },
        interactive: args.stdio.interactive,
        network: args.network.clone(),
        memory_mib: vm.memory_mib,
        cpus: vm.cpus,
        stop_signal: args.stop_signal.clone(),
        stop_timeout: args.stop_timeout,
        auto_remove: args.rm,
        publish,
        publish_all: args.publish_all,
        mounts,
        read_only: args.read_only,
        init: args.init,
    };
    let c = create(&store, &containers, &args.image, &image, &opts)?;
    Ok((vm, backend, store, containers, c))
}

/// Runs `c` attached to kiln's own stdio; signals kiln gets go to the container (a second
/// Ctrl-C or SIGTERM stops the VM at once).
fn foreground(store: &Store, containers: &Containers, c: &Container, backend: &dyn kiln_sandbox::Backend, vm: &kiln_sandbox::VmConfig, interactive: bool, raw: bool) -> Result<kiln_sandbox::ExitStatus> {
    let control: Arc<Mutex<Option<ProcessControl>>> = Arc::default();
    // On an abort (a second signal): the terminal back, and a --rm container's record gone.
    let abort: Box<dyn Fn() + Send> = {
        let (dir, id, auto_remove) = (containers.dir().to_path_buf(), c.config.id.clone(), c.config.auto_remove);
        Box::new(move || {
            terminal::restore_now();
            if auto_remove {
                if let Some(root) = dir.parent() {
                    let _ = Containers::new(root).remove(&id, true);
                }
            }
        })
    };
    forward_signals(control.clone(), c.config.tty, abort);
    let raw_mode = if raw { Some(RawMode::enable()?) } else { None };
    let attach = Attach {
        stdin: interactive.then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>),
        tty_size: c.config.tty.then(terminal::current_size),
        stdout: Some(Box::new(std::io::stdout())),
        stderr: Some(Box::new(std::io::stderr())),
        on_start: Some(Box::new(move |ctl| {
            *control.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctl);
        })),
    };
    let result = run_container(store, containers, c, backend, vm, attach);
    drop(raw_mode);
    Ok(result?)
}

/// SIGINT/SIGTERM/SIGHUP go to the container's process (Docker's --sig-proxy); the second one
/// stops the VM. With a terminal, SIGWINCH sends the new size.
fn forward_signals(control: Arc<Mutex<Option<ProcessControl>>>, tty: bool, abort: Box<dyn Fn() + Send>) {
    use kiln_sys::signals::Event;
    let Some(events) = kiln_sys::signals::watch(true, tty) else { return };
    std::thread::spawn(move || {
        let mut stops = 0;
        for event in events {
            let ctl = control.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Event::Stop(sig) = event else {
                if let Some(ctl) = ctl {
                    let (rows, cols) = terminal::current_size();
                    let _ = ctl.resize(rows, cols);
                }
                continue;
            };
            stops += 1;
            match ctl {
                Some(ctl) if stops == 1 => {
                    let _ = ctl.signal(sig);
                }
                _ => {
                    kiln_sandbox::children::kill_all();
                    std::thread::sleep(std::time::Duration::from_secs(3));
                    abort();
                    eprintln!("kiln: interrupted");
                    std::process::exit(130);
                }
            }
        }
    });
}
