//! `kiln logs [-f] [--tail N] [-t] [--since T] CONTAINER`: the json-file log on the host, so
//! it reads the same whether the container runs or its VM is long gone.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runtime::container::logs::{LogEntry, LogReader};
use kiln_runtime::container::Containers;

#[derive(Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container stops
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines ("all": every line)
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Prefix each line with its time
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Only lines since this time (RFC 3339, or a duration such as 10m)
    #[arg(long)]
    since: Option<String>,
    container: String,
}

fn since_seconds(text: &str) -> Result<i64> {
    if let Some(t) = crate::humanize::parse_rfc3339(text) {
        return Ok(t);
    }
    let d = kiln_frontend::command::values::parse_duration(text).map_err(|e| anyhow::anyhow!("invalid --since {text:?}: {e}"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Ok(now - d.as_secs() as i64)
}

fn print(e: &LogEntry, timestamps: bool, out: &mut impl Write, err: &mut impl Write) -> std::io::Result<()> {
    let w: &mut dyn Write = if e.stream == "stderr" { err } else { out };
    if timestamps {
        write!(w, "{} ", e.time)?;
    }
    w.write_all(e.log.as_bytes())?;
    w.flush()
}

pub fn run(root: &Path, args: LogsArgs) -> Result<()> {
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse::<usize>().with_context(|| format!("invalid --tail {n:?}: expected a number or all"))?),
    };
    let since = args.since.as_deref().map(since_seconds).transpose()?;
    let containers = Containers::new(root);
    let c = containers.get(&args.container)?;
    let file = match File::open(c.log_path()) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !args.follow {
                return Ok(()); // never ran: nothing logged yet
            }
            bail!("container {} has no log yet", args.container);
        }
        Err(e) => return Err(e).context("opening the container's log"),
    };
    let mut reader = LogReader::new(file);
    let mut entries = Vec::new();
    while let Some(e) = reader.next_entry()? {
        if since.is_none_or(|s| crate::humanize::parse_rfc3339(&e.time).is_some_and(|t| t >= s)) {
            entries.push(e);
        }
    }
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for e in &entries[skip..] {
        print(e, args.timestamps, &mut out, &mut err)?;
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        while let Some(e) = reader.next_entry()? {
            print(&e, args.timestamps, &mut out, &mut err)?;
        }
        if !containers.get(&c.config.id).is_ok_and(|c| c.is_running()) {
            // One last read: lines written between the read above and the exit.
            while let Some(e) = reader.next_entry()? {
                print(&e, args.timestamps, &mut out, &mut err)?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
