//! `kiln attach [--no-stdin] [--detach-keys KEYS] CONTAINER`: kiln's terminal joins a running
//! container's main process (its output, and its input when it was started with `-i`). The
//! detach keys (Ctrl-P Ctrl-Q by default) leave it running; its end ends the attach with its
//! exit code.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use clap::Args;
use kiln_runtime::container::control::attach_connect;
use kiln_runtime::container::exec::{run_client, ExecClient};
use kiln_runtime::container::Containers;

use super::terminal::{self, RawMode};

#[derive(Args)]
pub struct AttachArgs {
    /// Do not forward stdin
    #[arg(long)]
    no_stdin: bool,
    /// Keys that detach: a comma-separated list of ctrl-<letter> or single characters
    #[arg(long, default_value = "ctrl-p,ctrl-q")]
    detach_keys: String,
    container: String,
}

/// `ctrl-p,ctrl-q` -> [0x10, 0x11].
fn parse_keys(spec: &str) -> Result<Vec<u8>> {
    spec.split(',')
        .map(|k| {
            let k = k.trim();
            if let Some(c) = k.strip_prefix("ctrl-") {
                match c.as_bytes() {
                    [b] if b.is_ascii_alphabetic() => Ok(b.to_ascii_lowercase() - b'a' + 1),
                    [b'@'] => Ok(0),
                    [b'['] => Ok(0x1b),
                    _ => bail!("invalid --detach-keys {spec:?}: unknown key {k}"),
                }
            } else if k.len() == 1 {
                Ok(k.as_bytes()[0])
            } else {
                bail!("invalid --detach-keys {spec:?}: unknown key {k}")
            }
        })
        .collect()
}

/// Stdin that ends when the detach keys are typed (and says so).
struct Detaching<R> {
    inner: R,
    keys: Vec<u8>,
    matched: usize,
    detached: Arc<AtomicBool>,
    on_detach: Box<dyn Fn() + Send>,
}

impl<R: Read> Read for Detaching<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.detached.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        for (i, b) in buf[..n].iter().enumerate() {
            if self.keys.get(self.matched) == Some(b) {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.detached.store(true, Ordering::SeqCst);
                    (self.on_detach)();
                    // What came before the sequence still goes; the sequence does not.
                    return Ok((i + 1).saturating_sub(self.keys.len()));
                }
            } else {
                self.matched = usize::from(self.keys.first() == Some(b));
            }
        }
        Ok(n)
    }
}

pub fn run(root: &Path, args: AttachArgs) -> ExitCode {
    super::exit_with(attach(root, args), 1)
}

fn attach(root: &Path, args: AttachArgs) -> Result<i32> {
    let keys = parse_keys(&args.detach_keys)?;
    let c = Containers::new(root).get(&args.container)?;
    if !c.is_running() {
        bail!("you cannot attach to a stopped container, start it first");
    }
    let conn = attach_connect(&c.dir)?;
    let shut = conn.try_clone()?;
    let detached = Arc::new(AtomicBool::new(false));
    let with_stdin = !args.no_stdin && c.config.interactive;
    let stdin: Option<Box<dyn Read + Send>> = with_stdin.then(|| {
        let on_detach: Box<dyn Fn() + Send> = Box::new(move || {
            let _ = shut.shutdown(std::net::Shutdown::Both);
        });
        Box::new(Detaching { inner: std::io::stdin(), keys, matched: 0, detached: detached.clone(), on_detach }) as Box<dyn Read + Send>
    });
    let _raw = if c.config.tty && with_stdin && std::io::stdin().is_terminal() { Some(RawMode::enable()?) } else { None };
    let resizer: super::exec::ResizeSlot = Arc::new(Mutex::new(None));
    if c.config.tty {
        super::exec::watch_resizes(resizer.clone());
    }
    let slot = resizer.clone();
    let tty = c.config.tty;
    let client = ExecClient { stdin, stdout: Box::new(std::io::stdout()), stderr: Box::new(std::io::stderr()) };
    let result = run_client(conn, client, move |f| {
        if tty {
            let (rows, cols) = terminal::current_size();
            f(rows, cols); // the attaching terminal's size, at once
        }
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    });
    if detached.load(Ordering::SeqCst) {
        return Ok(0);
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys() {
        assert_eq!(parse_keys("ctrl-p,ctrl-q").expect("default"), vec![0x10, 0x11]);
        assert_eq!(parse_keys("ctrl-a,x").expect("mixed"), vec![1, b'x']);
        assert!(parse_keys("ctrl-1").is_err() && parse_keys("alt-x").is_err());
        let detached = Arc::new(AtomicBool::new(false));
        let mut r = Detaching { inner: &b"ab\x10\x11cd"[..], keys: vec![0x10, 0x11], matched: 0, detached: detached.clone(), on_detach: Box::new(|| {}) };
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        assert_eq!(out, b"ab");
        assert!(detached.load(Ordering::SeqCst));
    }
}
