//! `kiln ps [-a] [-q] [--no-trunc] [--filter status=|name=|ancestor=] [--format json]`:
//! Docker's columns and status texts.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use kiln_runtime::container::{Container, Containers, Status};

use crate::humanize::ago;

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones)
    #[arg(short = 'a', long)]
    all: bool,
    /// Only ids
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Do not truncate ids and commands
    #[arg(long)]
    no_trunc: bool,
    /// Filter: status=created|running|exited, name=SUBSTRING, ancestor=IMAGE
    #[arg(short = 'f', long = "filter")]
    filters: Vec<String>,
    /// Output format: table (default) or json (one object per line)
    #[arg(long, default_value = "table")]
    format: String,
}

/// `Up 3 seconds`, `Exited (0) 2 minutes ago`, `Created`.
pub fn status_text(c: &Container) -> String {
    match c.state.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", ago(c.state.started_at.as_deref()).trim_end_matches(" ago")),
        Status::Exited => format!("Exited ({}) {}", c.state.exit_code.unwrap_or(255), ago(c.state.finished_at.as_deref())),
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running => "running",
        Status::Exited => "exited",
    }
}

fn keep(c: &Container, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| match k.as_str() {
        "status" => status_word(c.state.status) == v,
        "name" => c.config.name.contains(v.as_str()),
        "ancestor" => c.config.image == *v || c.config.image_digest.contains(v.as_str()),
        "id" => c.config.id.starts_with(v.as_str()),
        _ => false,
    })
}

pub fn run(root: &Path, args: PsArgs) -> Result<()> {
    let mut filters = Vec::new();
    for f in &args.filters {
        match f.split_once('=') {
            Some((k, v)) if matches!(k, "status" | "name" | "ancestor" | "id") => filters.push((k.to_string(), v.to_string())),
            _ => bail!("invalid filter {f:?}: expected status=, name=, ancestor= or id="),
        }
    }
    if !matches!(args.format.as_str(), "table" | "json") {
        bail!("invalid --format {:?}: expected table or json", args.format);
    }
    let all = args.all || filters.iter().any(|(k, _)| k == "status");
    let list: Vec<Container> = Containers::new(root).list()?.into_iter().filter(|c| (all || c.is_running()) && keep(c, &filters)).collect();
    if args.quiet {
        for c in &list {
            println!("{}", if args.no_trunc { &c.config.id } else { c.short_id() });
        }
        return Ok(());
    }
    if args.format == "json" {
        for c in &list {
            let v = serde_json::json!({
                "ID": c.config.id, "Names": c.config.name, "Image": c.config.image, "Command": c.config.command_line(),
                "CreatedAt": c.config.created, "State": status_word(c.state.status), "Status": status_text(c),
                "ExitCode": c.state.exit_code,
                "Ports": c.state.ports.iter().map(|p| p.describe()).collect::<Vec<_>>().join(", "),
            });
            println!("{v}");
        }
        return Ok(());
    }
    println!("{:<15} {:<24} {:<24} {:<20} {:<28} {:<10} NAMES", "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS");
    for c in &list {
        let mut cmd = format!("\"{}\"", c.config.command_line());
        if !args.no_trunc && cmd.chars().count() > 22 {
            cmd = format!("{}…\"", cmd.chars().take(20).collect::<String>());
        }
        let id = if args.no_trunc { c.config.id.as_str() } else { c.short_id() };
        let ports = c.state.ports.iter().map(|p| p.describe()).collect::<Vec<_>>().join(", ");
        println!("{id:<15} {:<24} {cmd:<24} {:<20} {:<28} {ports:<10} {}", c.config.image, ago(Some(&c.config.created)), status_text(c), c.config.name);
    }
    Ok(())
}

#[derive(Args)]
pub struct PortArgs {
    container: String,
    /// Only this container port: PORT[/PROTO]
    port: Option<String>,
}

/// `kiln port CONTAINER [PORT[/PROTO]]`: `80/tcp -> 0.0.0.0:8080`, a line per binding.
pub fn port(root: &Path, args: PortArgs) -> Result<()> {
    let c = Containers::new(root).get(&args.container)?;
    let want = args.port.as_deref().map(|p| if p.contains('/') { p.to_string() } else { format!("{p}/tcp") });
    let mut found = false;
    for p in &c.state.ports {
        let private = format!("{}/{}", p.container_port, p.proto);
        if want.as_deref().is_none_or(|w| w == private) {
            println!("{private} -> {}:{}", p.host_ip, p.host_port);
            found = true;
        }
    }
    if let (Some(w), false) = (want, found) {
        bail!("no public port '{w}' published for {}", args.container);
    }
    Ok(())
}
