//! `Run`: one build step's process, in its own mount, pid, uts and ipc namespaces.
//!
//! The parent side: prepares the [`plan::Plan`] and the mount points, clones the child
//! ([`child::run_child`]) while holding the reaper's spawn guard, pumps stdout/stderr into their
//! data streams, and answers `Exited` only once both streams have ended and the child was
//! reaped. The child's setup failures come back on a CLOEXEC status pipe and become an Error.

mod child;
mod mountpoints;
pub mod plan;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::thread::JoinHandle;

use kiln_protocol::{Mux, Response, RunSpec};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;

use crate::error::{Context, Error, Result};
use crate::reaper::{ExitStatus, Reaper};
use child::{ChildFds, Step};
use plan::{ptr_array, Plan};

/// Stack for the cloned child until it execs; it only runs a few syscalls.
const CHILD_STACK: usize = 256 * 1024;

/// Runs `spec` to completion and returns the `Exited` answer.
pub fn run(mux: &Mux, reaper: &Reaper, spec: &RunSpec) -> Result<Response> {
    let plan = Plan::new(spec)?;
    let mut created = mountpoints::prepare(Path::new(&spec.rootfs))?;
    let result = spawn_and_wait(mux, reaper, spec, &plan);
    created.remove();
    result
}

fn spawn_and_wait(mux: &Mux, reaper: &Reaper, spec: &RunSpec, plan: &Plan) -> Result<Response> {
    let argv = ptr_array(&plan.argv);
    let envp = ptr_array(&plan.envp);
    let devnull = File::open("/dev/null").ctx(|| "run: open /dev/null".to_string())?;
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "run: pipe2".to_string());
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let fds = ChildFds {
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        status: status_w.as_raw_fd(),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let pid = {
        let guard = reaper.spawn_guard();
        let cb = Box::new(|| -> isize { child::run_child(plan, &fds, &argv, &envp) });
        // SAFETY: the child runs `run_child`, which only makes async-signal-safe syscalls on
        // data prepared above (no allocation, no locks) and always ends in execve or _exit.
        // The stack outlives the call; without CLONE_VM the child works on its own copy.
        let pid = unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }
            .ctx(|| "run: clone(CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWUTS|CLONE_NEWIPC)".to_string())?;
        guard.expect(pid.as_raw());
        pid
    };
    // The parent's copies of the child's ends must close, or the pipes never hit EOF.
    drop((out_w, err_w, status_w, devnull));
    crate::log::debug!("run: started pid {pid} {:?}", spec.argv);

    let pumps = [
        pump(mux, out_r, spec.stdout_stream),
        pump(mux, err_r, spec.stderr_stream),
    ];
    let setup_error = read_setup_error(status_r, &spec.rootfs);
    let status = reaper.wait_for(pid.as_raw());
    for p in pumps {
        let _ = p.join();
    }
    if let Some(e) = setup_error {
        return Err(e);
    }
    Ok(match status {
        ExitStatus::Code(c) => Response::Exited {
            code: Some(c),
            signal: None,
        },
        ExitStatus::Signal(s) => Response::Exited {
            code: None,
            signal: Some(s),
        },
    })
}

/// Reads the status pipe to EOF (closed by execve or the child's exit).
fn read_setup_error(status_r: OwnedFd, rootfs: &str) -> Option<Error> {
    let mut buf = Vec::new();
    if let Err(e) = File::from(status_r).read_to_end(&mut buf) {
        return Some(Error::io("run: read child status pipe", e));
    }
    if buf.len() < 8 {
        return None;
    }
    let step = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let what = Step::from_u32(step)
        .map_or("set up the process", Step::describe)
        .replace("ROOTFS", rootfs);
    Some(Error::io(
        format!("run: {what}"),
        std::io::Error::from_raw_os_error(errno),
    ))
}

/// Copies a pipe into a data stream until EOF, then finishes the stream. If the connection is
/// gone it keeps draining, so the process never blocks on a full pipe.
fn pump(mux: &Mux, pipe: OwnedFd, stream: u32) -> JoinHandle<()> {
    let mut writer = Some(mux.open_writer(stream));
    std::thread::spawn(move || {
        let mut pipe = File::from(pipe);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(w) = writer.as_mut() {
                        if w.write_all(&buf[..n]).is_err() {
                            writer = None;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if let Some(w) = writer {
            let _ = w.finish();
        }
    })
}
