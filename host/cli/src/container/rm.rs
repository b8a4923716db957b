//! `kiln rm [-f] CONTAINER...` and `kiln container prune [-f]`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use kiln_runtime::container::control::{request, ControlRequest};
use kiln_runtime::container::Containers;

#[derive(Args)]
pub struct RmArgs {
    /// Stop (kill) a running container first
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove the container's anonymous volumes too
    #[arg(short = 'v', long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

fn remove(containers: &Containers, name: &str, force: bool, volumes: bool) -> Result<()> {
    let c = containers.get(name)?;
    if c.is_running() {
        if !force {
            bail!("cannot remove container {name}: container is running: stop the container before removing or force remove (-f)");
        }
        let owner = (c.state.owner_pid, c.state.owner_start);
        let stopped = request(&c.dir, &ControlRequest::Stop { timeout: 0 });
        // The answer can be lost when the owner exits at once; what counts is the state.
        if containers.get(name)?.is_running() {
            stopped?;
            bail!("cannot remove container {name}: it did not stop");
        }
        // The owner records the exit before it has closed the published ports and ended:
        // wait (bounded) until it is gone, so nothing of the container outlives `rm -f`.
        if let (Some(pid), Some(start)) = owner {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while kiln_runtime::container::record::process_start(pid) == Some(start) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    containers.remove(&c.config.id, volumes)?;
    Ok(())
}

pub fn run(root: &Path, args: RmArgs) -> Result<()> {
    let containers = Containers::new(root);
    let mut failed = 0;
    for name in &args.containers {
        match remove(&containers, name, args.force, args.volumes) {
            Ok(()) => println!("{name}"),
            Err(e) if args.containers.len() == 1 => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("kiln: error: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} containers could not be removed", args.containers.len());
    }
    Ok(())
}

pub fn prune(root: &Path, args: PruneArgs) -> Result<()> {
    if !args.force {
        if !std::io::stdin().is_terminal() {
            bail!("kiln container prune asks for confirmation: give -f to prune without a terminal");
        }
        print!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let containers = Containers::new(root);
    println!("Deleted Containers:");
    for c in containers.list()? {
        if !c.is_running() {
            containers.remove(&c.config.id, false)?;
            println!("{}", c.config.id);
        }
    }
    Ok(())
}
