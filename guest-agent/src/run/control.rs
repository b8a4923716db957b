//! Running processes that the host may signal or resize while their `Run` call is open.
//!
//! A `Run` with a `run_id` registers its process here (pid, and its pseudo-terminal's master
//! when it has one) for as long as it runs; `Signal` and `Resize` requests look it up by that
//! id. This module never spawns or reaps anything: [`super::spawn_and_wait`] owns the process.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};


use crate::error::{Error, Result};

struct Running {
    pid: i32,
    tty: Option<Arc<OwnedFd>>,
}

/// A run id's process: running, or ended (kept so a late `WaitStarted` gets its answer; a
/// few bytes per Run of a guest's life).
enum Entry {
    Running(Running),
    Ended,
}

struct Table {
    entries: Mutex<HashMap<u32, Entry>>,
    changed: Condvar,
}

fn shared() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table { entries: Mutex::new(HashMap::new()), changed: Condvar::new() })
}

fn table() -> MutexGuard<'static, HashMap<u32, Entry>> {
    shared().entries.lock().unwrap_or_else(|e| e.into_inner())
}

fn running(t: &HashMap<u32, Entry>, id: u32) -> Option<&Running> {
    match t.get(&id) {
        Some(Entry::Running(r)) => Some(r),
        _ => None,
    }
}

/// Marks run `id` ended (its process exited, or it never started). Idempotent.
pub fn ended(id: Option<u32>) {
    if let Some(id) = id {
        table().insert(id, Entry::Ended);
        shared().changed.notify_all();
    }
}

/// Waits until run `id` has started (its pid) or ended (`None`).
pub fn wait_started(id: u32) -> Result<Option<i32>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut t = table();
    loop {
        match t.get(&id) {
            Some(Entry::Running(r)) => return Ok(Some(r.pid)),
            Some(Entry::Ended) => return Ok(None),
            None => {}
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Error::msg(format!("wait_started: run {id} did not start")));
        }
        t = shared().changed.wait_timeout(t, left).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// Keeps a process registered until dropped.
pub struct Registration(Option<u32>);

impl Drop for Registration {
    fn drop(&mut self) {
        ended(self.0);
    }
}

/// Registers `pid` (and its terminal) under `id`; a `None` id registers nothing.
pub fn register(id: Option<u32>, pid: i32, tty: Option<Arc<OwnedFd>>) -> Registration {
    if let Some(id) = id {
        table().insert(id, Entry::Running(Running { pid, tty }));
        shared().changed.notify_all();
    }
    Registration(id)
}

/// Sends `signal` to run `id`'s process (the container's main process: `kiln stop`, `kill`,
/// and the signals `kiln run` forwards). Ctrl-C on a terminal needs no request: it travels as
/// a byte, and the terminal signals its foreground job itself.
pub fn signal(id: u32, signal: i32) -> Result<()> {
    // Real-time signals (34-64) included: nix's Signal does not name them.
    if !(1..=64).contains(&signal) {
        return Err(Error::msg(format!("signal: unknown signal {signal}")));
    }
    let pid = {
        let t = table();
        running(&t, id).ok_or_else(|| Error::msg(format!("signal: no running process {id}")))?.pid
    };
    // SAFETY: kill(2) with a pid this agent spawned and a signal number checked above.
    if unsafe { libc::kill(pid, signal) } < 0 {
        return Err(Error::io(format!("signal: kill({pid}, {signal})"), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The pid of running process `id` (for `join`).
pub fn pid_of(id: u32) -> Result<i32> {
    let t = table();
    running(&t, id).map(|r| r.pid).ok_or_else(|| Error::msg(format!("exec: process {id} is not running")))
}

/// Sets the window size of run `id`'s terminal.
pub fn resize(id: u32, rows: u16, cols: u16) -> Result<()> {
    let tty = {
        let t = table();
        let r = running(&t, id).ok_or_else(|| Error::msg(format!("resize: no running process {id}")))?;
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
