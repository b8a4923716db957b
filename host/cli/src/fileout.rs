//! Writing a command's output file: atomically (a temp file beside the destination, synced,
//! then renamed, so a failure leaves no partial file), or streamed to stdout for `-` or no
//! destination — never to a terminal.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Writes through `fill` to `dest`, or to stdout when `dest` is `None` or `-`. `terminal_hint`
/// is the error shown when stdout is a terminal.
pub fn write(dest: Option<&Path>, terminal_hint: &str, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dest = match dest {
        Some(p) if p != Path::new("-") => p,
        _ => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("{terminal_hint}");
            }
            let mut out = std::io::BufWriter::new(stdout.lock());
            fill(&mut out)?;
            return out.flush().context("writing to stdout");
        }
    };
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-output-")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let mut out = std::io::BufWriter::new(tmp);
    fill(&mut out)?;
    let tmp = out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", dest.display()))?;
    tmp.as_file().sync_all().with_context(|| format!("syncing {}", dest.display()))?;
    tmp.persist(dest).with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// Asks `WARNING! This will remove {what}.` on stderr; true only for an explicit yes.
pub fn confirm(what: &str) -> Result<bool> {
    use std::io::BufRead;
    eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
