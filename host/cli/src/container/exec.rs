//! `kiln exec [-d] [-i] [-t] [-e K=V] [-u USER[:GROUP]] [-w DIR] CONTAINER CMD...`: a process
//! in a running container (same filesystem, same pid namespace as its main process), run by
//! the container's owner and relayed here. kiln exits with the process's exit code.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runtime::container::control::exec_connect;
use kiln_runtime::container::exec::{run_client, ExecClient, ExecRequest};
use kiln_runtime::container::Containers;
use kiln_store::Store;

use super::terminal::{self, RawMode};

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    stdio: super::StdioFlags,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from kiln's environment)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// User (name or id) and optional group, from the image's own passwd/group
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    container: String,
    /// Command and arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Where the exec's resize sender goes once the connection is up.
pub(super) type ResizeSlot = Arc<Mutex<Option<Box<dyn Fn(u16, u16) + Send + Sync>>>>;

pub fn run(root: &Path, args: ExecArgs) -> ExitCode {
    super::exit_with(exec(root, args), 1)
}

fn exec(root: &Path, args: ExecArgs) -> Result<i32> {
    let containers = Containers::new(root);
    let c = containers.get(&args.container)?;
    if !c.is_running() {
        bail!("container {} is not running", args.container);
    }
    let user = match &args.user {
        Some(u) => {
            let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
            let digest: kiln_store::Digest = c.config.image_digest.parse()?;
            let image = store.image(&digest).context("reading the container's image")?;
            Some(kiln_runtime::container::create::user_ids(&store, &image, u)?)
        }
        None => None,
    };
    let env = super::run::env_entries(&args.env, &[])?;
    let raw = args.stdio.tty && args.stdio.interactive && std::io::stdin().is_terminal();
    let req = ExecRequest {
        argv: args.command.clone(),
        env,
        cwd: args.workdir.clone(),
        user,
        tty: args.stdio.tty.then(terminal::current_size),
        interactive: args.stdio.interactive,
    };
    let conn = exec_connect(&c.dir, &req)?;
    if args.stdio.detach {
        return Ok(0);
    }
    let resizer: ResizeSlot = Arc::default();
    if args.stdio.tty {
        watch_resizes(resizer.clone());
    }
    let _raw = if raw { Some(RawMode::enable()?) } else { None };
    let client = ExecClient {
        stdin: args.stdio.interactive.then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>),
        stdout: Box::new(std::io::stdout()),
        stderr: Box::new(std::io::stderr()),
    };
    let slot = resizer.clone();
    Ok(run_client(conn, client, move |f| *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(f))?)
}

/// Sends the terminal's new size on every SIGWINCH.
pub(super) fn watch_resizes(resizer: ResizeSlot) {
    let Some(events) = kiln_sys::signals::watch(false, true) else { return };
    std::thread::spawn(move || {
        for _ in events {
            if let Some(f) = resizer.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let (rows, cols) = terminal::current_size();
                f(rows, cols);
            }
        }
    });
}

#[derive(Args)]
pub struct TopArgs {
    container: String,
    /// Options for ps (run inside the container, which must have a ps)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

/// `kiln top CONTAINER [ps options]`: the container's processes, as its own `ps` lists them
/// (it runs in the container's pid namespace).
pub fn top(root: &Path, args: TopArgs) -> ExitCode {
    let mut command = vec!["ps".to_string()];
    command.extend(args.ps_options);
    let stdio = super::StdioFlags { detach: false, interactive: false, tty: false };
    let exec_args = ExecArgs { stdio, env: vec![], user: None, workdir: None, container: args.container, command };
    run(root, exec_args)
}
