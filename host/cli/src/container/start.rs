//! `kiln start [-a] [-i] CONTAINER...`: a stopped container runs again in a new VM, over its
//! saved writable layer. Detached (a supervisor) unless `-a` attaches kiln to its output.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runtime::container::host::{run_container, Attach};
use kiln_runtime::container::names::exit_code;
use kiln_runtime::container::{Container, Containers};
use kiln_store::Store;

use super::{backend, spawn_supervisor, vm_config, VmFlags};

#[derive(Args)]
pub struct StartArgs {
    /// Attach to the container's output and exit with its exit code
    #[arg(short = 'a', long)]
    attach: bool,
    /// Forward stdin to the container
    #[arg(short = 'i', long)]
    interactive: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Starts `c` under a supervisor, as `kiln run -d` does.
pub fn start_detached(root: &Path, containers: &Containers, c: &Container) -> Result<()> {
    if c.is_running() {
        return Ok(());
    }
    let flags = VmFlags { memory: Some(format!("{}m", c.config.memory_mib)), cpus: Some(c.config.cpus.to_string()), backend: std::env::var("KILN_BACKEND").unwrap_or_else(|_| "auto".into()), debug: false };
    spawn_supervisor(root, containers, c, &flags)
}

pub fn run(root: &Path, args: StartArgs) -> ExitCode {
    super::exit_with(start(root, args), 1)
}

fn start(root: &Path, args: StartArgs) -> Result<i32> {
    let containers = Containers::new(root);
    if !(args.attach || args.interactive) {
        for name in &args.containers {
            let c = containers.get(name)?;
            start_detached(root, &containers, &c)?;
            println!("{name}");
        }
        return Ok(0);
    }
    let [name] = args.containers.as_slice() else { bail!("you cannot attach to more than one container at a time") };
    let c = containers.get(name)?;
    if c.is_running() {
        bail!("container {name} is already running");
    }
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let flags = VmFlags { memory: Some(format!("{}m", c.config.memory_mib)), cpus: Some(c.config.cpus.to_string()), backend: std::env::var("KILN_BACKEND").unwrap_or_else(|_| "auto".into()), debug: false };
    let vm = vm_config(&flags)?;
    let backend = backend(&flags, &vm)?;
    let attach = Attach {
        stdin: args.interactive.then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>),
        stdout: Some(Box::new(std::io::stdout())),
        stderr: Some(Box::new(std::io::stderr())),
        ..Default::default()
    };
    let status = run_container(&store, &containers, &c, &*backend, &vm, attach)?;
    Ok(exit_code(&status))
}
