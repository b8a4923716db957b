//! Keeping track of VM processes so none outlives kiln.
//!
//! Three layers of defence: each VM process dies if kiln dies, even by SIGKILL
//! (`PR_SET_PDEATHSIG` on Linux, a kqueue watcher on macOS, a kill-on-close Job Object on
//! Windows: `kiln_sys::process`); [`Drop`] of a VM kills and reaps it; and the CLI's signal thread
//! calls [`kill_all`] on Ctrl-C/SIGTERM, which makes the build's agent connection fail so the
//! build unwinds normally (temp files removed, store untouched).
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process,
//! and build stages run on threads that end before the build does. So VM processes are
//! forked by one spawner thread that lives as long as kiln ([`spawn`]).

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);
static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();

/// Starts `cmd` (prepared with [`harden`]) from the process-lifetime spawner thread, so the
/// child's parent-death signal waits for kiln itself to end.
pub fn spawn(cmd: Command) -> std::io::Result<Child> {
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new().name("kiln-vm-spawner".into()).spawn(move || {
            for (mut cmd, reply) in rx {
                let child = cmd.spawn().and_then(|mut child| match kiln_sys::process::adopt(&child) {
                    Ok(()) => Ok(child),
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        Err(e)
                    }
                });
                let _ = reply.send(child);
            }
        });
        if let Err(e) = started {
            // Without the thread every request fails below with this cause.
            eprintln!("kiln: cannot start the VM spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = spawner.lock().unwrap_or_else(|e| e.into_inner()).send((cmd, reply_tx));
    if sent.is_err() {
        return Err(std::io::Error::other("the VM spawner thread is gone"));
    }
    reply_rx.recv().unwrap_or_else(|_| Err(std::io::Error::other("the VM spawner thread is gone")))
}

static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// In-process VMs (the built-in VMM): how to cut each one's agent connection.
type Stopper = Box<dyn Fn() + Send>;
static STOPPERS: Mutex<Vec<(u64, Stopper)>> = Mutex::new(Vec::new());
static NEXT_STOPPER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Records how to stop an in-process VM on Ctrl-C; returns the id to forget it with.
pub fn register_stopper(stop: Stopper) -> u64 {
    let id = NEXT_STOPPER.fetch_add(1, Ordering::SeqCst);
    STOPPERS.lock().unwrap_or_else(|e| e.into_inner()).push((id, stop));
    id
}

/// Forgets a stopper whose VM has ended.
pub fn unregister_stopper(id: u64) {
    STOPPERS.lock().unwrap_or_else(|e| e.into_inner()).retain(|(i, _)| *i != id);
}
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes `cmd`'s process die with kiln and keeps it out of the terminal's Ctrl-C (per OS).
pub fn harden(cmd: &mut Command) {
    kiln_sys::process::harden(cmd);
}

/// Records a live VM process.
pub fn register(pid: u32) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// Forgets a VM process that has been reaped.
pub fn unregister(pid: u32) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|p| *p != pid);
}

/// Kills every live VM process (from the signal thread), cuts in-process VMs' connections,
/// and marks the run as interrupted.
pub fn kill_all() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    for (_, stop) in STOPPERS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        stop();
    }
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for pid in live.iter() {
        kiln_sys::process::kill(*pid);
    }
}

/// Whether [`kill_all`] ran: errors after it are consequences of the interrupt.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
