//! Zombie reaping that does not steal exit statuses from the Run handlers.
//!
//! One thread calls `waitpid(-1)` for the whole agent (PID 1 inherits every orphan). Statuses of
//! children a Run handler spawned are kept until that handler claims them; everything else is
//! discarded. A handler spawns its child while holding [`Reaper::spawn_guard`], so the reaper
//! cannot see the child's exit before the child is registered as expected.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

#[derive(Default)]
struct State {
    expected: HashSet<i32>,
    statuses: HashMap<i32, ExitStatus>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Signalled when a status arrives (for handlers) or a child is spawned (for the reaper).
    changed: Condvar,
}

/// Shared handle to the reaper.
#[derive(Clone, Default)]
pub struct Reaper {
    inner: Arc<Inner>,
}

/// Held while spawning a child; [`SpawnGuard::expect`] registers the new pid.
pub struct SpawnGuard<'a> {
    state: MutexGuard<'a, State>,
    inner: &'a Inner,
}

impl SpawnGuard<'_> {
    /// Marks `pid` as a child whose status a handler will claim.
    pub fn expect(mut self, pid: i32) {
        self.state.expected.insert(pid);
        drop(self.state);
        self.inner.changed.notify_all();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reaper {
    /// Starts the reaping thread.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Self::default();
        let for_thread = reaper.clone();
        std::thread::Builder::new()
            .name("kiln-reaper".into())
            .spawn(move || for_thread.run())?;
        Ok(reaper)
    }

    /// Take this before forking a child and call [`SpawnGuard::expect`] with its pid.
    pub fn spawn_guard(&self) -> SpawnGuard<'_> {
        SpawnGuard {
            state: lock(&self.inner.state),
            inner: &self.inner,
        }
    }

    /// Waits until child `pid` (registered with [`SpawnGuard::expect`]) has been reaped.
    pub fn wait_for(&self, pid: i32) -> ExitStatus {
        let mut state = lock(&self.inner.state);
        loop {
            if let Some(status) = state.statuses.remove(&pid) {
                state.expected.remove(&pid);
                return status;
            }
            state = self
                .inner
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn run(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
                Ok(status) => self.record(status),
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // ECHILD: nothing to reap until a handler spawns something (orphans are
                    // only ever descendants of such children).
                    let state = lock(&self.inner.state);
                    let _ = self
                        .inner
                        .changed
                        .wait_timeout(state, Duration::from_millis(200));
                }
            }
        }
    }

    fn record(&self, status: WaitStatus) {
        let (pid, exit) = match status {
            WaitStatus::Exited(pid, code) => (pid, ExitStatus::Code(code)),
            WaitStatus::Signaled(pid, sig, _) => (pid, ExitStatus::Signal(sig as i32)),
            _ => return,
        };
        let mut state = lock(&self.inner.state);
        if state.expected.contains(&pid.as_raw()) {
            state.statuses.insert(pid.as_raw(), exit);
            drop(state);
            self.inner.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_recorded_before_claim_is_kept() {
        let reaper = Reaper::default();
        reaper.spawn_guard().expect(4242);
        reaper.record(WaitStatus::Exited(Pid::from_raw(4242), 3));
        reaper.record(WaitStatus::Exited(Pid::from_raw(99), 1)); // an orphan: dropped
        assert_eq!(reaper.wait_for(4242), ExitStatus::Code(3));
        assert!(lock(&reaper.inner.state).statuses.is_empty());
    }
}
