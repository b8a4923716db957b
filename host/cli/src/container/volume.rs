//! `kiln volume create|ls|rm|inspect`: named volumes, directories under
//! `$KILN_ROOT/volumes/NAME/_data` that containers mount with `-v NAME:/dir` and that outlive
//! them.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use kiln_runtime::container::names::valid_name;
use kiln_runtime::container::volumes::{volume_dir, VolumeMount};
use kiln_runtime::container::Containers;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create { name: String },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only names
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Remove volumes (not while a container uses them)
    #[command(alias = "remove")]
    Rm {
        /// Also when a stopped container still names it
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show a volume as JSON
    Inspect { names: Vec<String> },
    /// Remove anonymous volumes no container uses (with -a, every unused volume)
    Prune {
        /// Named volumes too
        #[arg(short = 'a', long)]
        all: bool,
        /// Do not ask for confirmation
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// Whether kiln named the volume (64 hex digits: `-v /dir` and the image's `VOLUME`s).
fn is_anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn names(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    match std::fs::read_dir(root.join("volumes")) {
        Ok(entries) => {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if valid_name(&n) && e.path().join("_data").is_dir() {
                    out.push(n);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("listing volumes"),
    }
    out.sort();
    Ok(out)
}

fn users(root: &Path, name: &str) -> Result<Vec<(String, bool)>> {
    Ok(Containers::new(root)
        .list()?
        .into_iter()
        .filter(|c| c.config.mounts.iter().any(|m| matches!(m, VolumeMount::Volume { name: n, .. } if n == name)))
        .map(|c| (c.config.name.clone(), c.is_running()))
        .collect())
}

pub fn run(root: &Path, cmd: VolumeCommand) -> Result<()> {
    match cmd {
        VolumeCommand::Create { name } => {
            if !valid_name(&name) {
                bail!("invalid volume name {name:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]+");
            }
            std::fs::create_dir_all(volume_dir(root, &name)).with_context(|| format!("creating volume {name}"))?;
            println!("{name}");
        }
        VolumeCommand::Ls { quiet } => {
            if !quiet {
                println!("{:<10} VOLUME NAME", "DRIVER");
            }
            for n in names(root)? {
                if quiet {
                    println!("{n}");
                } else {
                    println!("{:<10} {n}", "local");
                }
            }
        }
        VolumeCommand::Rm { force, names: wanted } => {
            let have = names(root)?;
            for name in &wanted {
                if !have.contains(name) {
                    bail!("no such volume: {name}");
                }
                let used = users(root, name)?;
                if let Some((c, running)) = used.iter().find(|(_, running)| *running || !force) {
                    bail!("volume {name} is in use by container {c}{}", if *running { " (running)" } else { "" });
                }
                std::fs::remove_dir_all(root.join("volumes").join(name)).with_context(|| format!("removing volume {name}"))?;
                println!("{name}");
            }
        }
        VolumeCommand::Prune { all, force } => {
            if !force {
                use std::io::{BufRead, IsTerminal, Write};
                if !std::io::stdin().is_terminal() {
                    bail!("kiln volume prune asks for confirmation: give -f to prune without a terminal");
                }
                print!("WARNING! This will remove {} volumes not used by at least one container.\nAre you sure you want to continue? [y/N] ", if all { "all local" } else { "anonymous local" });
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(());
                }
            }
            println!("Deleted Volumes:");
            for name in names(root)? {
                if (all || is_anonymous(&name)) && users(root, &name)?.is_empty() {
                    std::fs::remove_dir_all(root.join("volumes").join(&name)).with_context(|| format!("removing volume {name}"))?;
                    println!("{name}");
                }
            }
        }
        VolumeCommand::Inspect { names: wanted } => {
            let have = names(root)?;
            let mut out = Vec::new();
            for name in &wanted {
                if !have.contains(name) {
                    bail!("no such volume: {name}");
                }
                out.push(serde_json::json!({"Name": name, "Driver": "local", "Mountpoint": volume_dir(root, name), "Scope": "local"}));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
