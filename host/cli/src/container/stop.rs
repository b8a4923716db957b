//! `kiln stop [-t N]`, `kiln kill [-s SIG]`, `kiln restart` and `kiln wait`: through the
//! running container's control socket ([`kiln_runtime::container::control`]).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use kiln_runtime::container::control::{request, ControlRequest};
use kiln_runtime::container::create::signal_number;
use kiln_runtime::container::Containers;

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait for the stop signal to end the container before SIGKILL (default: the
    /// container's --stop-timeout, else 10)
    #[arg(short = 't', long = "time", visible_alias = "timeout")]
    time: Option<u64>,
    /// Containers (names or ids)
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send (name or number)
    #[arg(short = 's', long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Runs `each` for every named container, printing the name on success as Docker does; the
/// failures are reported one line each and make the command fail.
fn for_each(names: &[String], mut each: impl FnMut(&str) -> Result<()>) -> Result<()> {
    let mut failed = 0;
    for name in names {
        match each(name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                failed += 1;
                if failed > 1 || names.len() > 1 {
                    eprintln!("kiln: error: {e:#}");
                } else {
                    return Err(e);
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} containers failed", names.len());
    }
    Ok(())
}

fn stop_one(containers: &Containers, name: &str, time: Option<u64>) -> Result<()> {
    let c = containers.get(name)?;
    if c.is_running() {
        request(&c.dir, &ControlRequest::Stop { timeout: time.unwrap_or(c.config.stop_timeout) })?;
    }
    Ok(())
}

pub fn stop(root: &Path, args: StopArgs) -> Result<()> {
    let containers = Containers::new(root);
    for_each(&args.containers, |name| stop_one(&containers, name, args.time))
}

pub fn kill(root: &Path, args: KillArgs) -> Result<()> {
    let signal = signal_number(&args.signal)?;
    let containers = Containers::new(root);
    for_each(&args.containers, |name| {
        let c = containers.get(name)?;
        if !c.is_running() {
            bail!("cannot kill container {name}: container {} is not running", c.config.id);
        }
        Ok(request(&c.dir, &ControlRequest::Kill { signal })?)
    })
}

pub fn restart(root: &Path, args: StopArgs) -> Result<()> {
    let containers = Containers::new(root);
    for_each(&args.containers, |name| {
        stop_one(&containers, name, args.time)?;
        let c = containers.get(name)?;
        super::start::start_detached(root, &containers, &c)
    })
}

pub fn wait(root: &Path, args: WaitArgs) -> Result<()> {
    let containers = Containers::new(root);
    let mut failed = false;
    for name in &args.containers {
        loop {
            match containers.get(name) {
                Ok(c) if c.is_running() => std::thread::sleep(Duration::from_millis(100)),
                Ok(c) => {
                    println!("{}", c.state.exit_code.unwrap_or(0));
                    break;
                }
                Err(e) => {
                    eprintln!("kiln: error: {e}");
                    failed = true;
                    break;
                }
            }
        }
    }
    if failed {
        bail!("some containers could not be waited for");
    }
    Ok(())
}
