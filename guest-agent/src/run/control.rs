//! Running processes that the host may signal or resize while their `Run` call is open.
//!
//! A `Run` with a `run_id` registers its process here (pid, and its pseudo-terminal's master
//! when it has one) for as long as it runs; `Signal` and `Resize` requests look it up by that
//! id. This module never spawns or reaps anything: [`super::spawn_and_wait`] owns the process.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{Context, Error, Result};

struct Running {
    pid: i32,
    tty: Option<Arc<OwnedFd>>,
}

fn table() -> MutexGuard<'static, HashMap<u32, Running>> {
    static TABLE: OnceLock<Mutex<HashMap<u32, Running>>> = OnceLock::new();
    TABLE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Keeps a process registered until dropped.
pub struct Registration(Option<u32>);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            table().remove(&id);
        }
    }
}

/// Registers `pid` (and its terminal) under `id`; a `None` id registers nothing.
pub fn register(id: Option<u32>, pid: i32, tty: Option<Arc<OwnedFd>>) -> Registration {
    if let Some(id) = id {
        table().insert(id, Running { pid, tty });
    }
    Registration(id)
}

/// Sends `signal` to run `id`: with a terminal, to its foreground process group (what the
/// terminal's own Ctrl-C would reach), else to the process.
pub fn signal(id: u32, signal: i32) -> Result<()> {
    let sig = Signal::try_from(signal).map_err(|_| Error::msg(format!("signal: unknown signal {signal}")))?;
    let (pid, tty) = {
        let t = table();
        let r = t.get(&id).ok_or_else(|| Error::msg(format!("signal: no running process {id}")))?;
        (r.pid, r.tty.clone())
    };
    let group = tty.and_then(|m| nix::unistd::tcgetpgrp(m.as_ref()).ok()).filter(|g| g.as_raw() > 0);
    match group {
        Some(g) => nix::sys::signal::killpg(g, sig),
        None => nix::sys::signal::kill(Pid::from_raw(pid), sig),
    }
    .ctx(|| format!("signal: kill({pid}, {sig})"))
}

/// Sets the window size of run `id`'s terminal.
pub fn resize(id: u32, rows: u16, cols: u16) -> Result<()> {
    let tty = {
        let t = table();
        let r = t.get(&id).ok_or_else(|| Error::msg(format!("resize: no running process {id}")))?;
        r.tty.clone().ok_or_else(|| Error::msg(format!("resize: process {id} has no terminal")))?
    };
    set_size(tty.as_raw_fd(), rows, cols)
}

/// `TIOCSWINSZ` on a terminal fd.
pub fn set_size(fd: i32, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(Error::io("resize: TIOCSWINSZ", std::io::Error::last_os_error()));
    }
    Ok(())
}
