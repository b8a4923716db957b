//! `Run`: one build step's process, in its own mount, pid, uts and ipc namespaces.
//!
//! The parent side: prepares the [`plan::Plan`] and the mount points (including those of
//! `RUN --mount` targets, [`mountpoints`]), clones the child ([`child::run_child`], which makes
//! the mounts and places the per-process files: [`child_mounts`]) while holding the reaper's
//! spawn guard, pumps stdout/stderr into their data streams, and answers `Exited` only once both
//! streams have ended and the child was reaped. Created mount points are removed afterwards.
//! The child's setup failures come back on a CLOEXEC status pipe and become an Error.

mod child;
mod child_mounts;
mod init;
pub mod control;
mod mountpoints;
pub mod plan;
mod usermounts;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::path::Path;
use std::thread::JoinHandle;

use kiln_protocol::{Mux, Response, RunSpec, StreamReader, StreamWriter};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;

use crate::error::{Context, Error, Result};
use crate::reaper::{ExitStatus, Reaper};
use child::{ChildFds, Step};
use plan::{ptr_array, Plan};

/// Stack for the cloned child until it execs; it only runs a few syscalls.
const CHILD_STACK: usize = 256 * 1024;

/// The output streams of one Run, until the pumps take them over.
type Streams = Option<(StreamWriter, StreamWriter)>;

/// Runs `spec` to completion and returns the `Exited` answer.
pub fn run(mux: &Mux, reaper: &Reaper, spec: &RunSpec) -> Result<Response> {
    let mut streams = Some((
        mux.open_writer(spec.stdout_stream),
        mux.open_writer(spec.stderr_stream),
    ));
    let stdin = spec.stdin_stream.map(|id| mux.open_reader(id));
    let result = prepare_and_run(reaper, spec, &mut streams, stdin);
    control::ended(spec.run_id); // also when it never started: a WaitStarted must not hang
    // Failed before the process started: end its (empty) output streams, or a host reading
    // them to the end would wait forever.
    if let Some((out, err)) = streams {
        let _ = out.finish();
        let _ = err.finish();
    }
    result
}

fn prepare_and_run(reaper: &Reaper, spec: &RunSpec, streams: &mut Streams, stdin: Option<StreamReader>) -> Result<Response> {
    if spec.join.is_some() {
        // An exec: the joined process's root is ready; nothing to prepare in it.
        let plan = Plan::new(spec)?;
        return spawn_and_wait(reaper, spec, &plan, streams, stdin);
    }
    // The step's own /etc/hosts and /etc/resolv.conf go first, so its mounts can cover them.
    let net_files = crate::net::RunFiles::prepare(Path::new(crate::net::NET_DIR))?;
    let with_net;
    let spec = match &net_files {
        Some((_, mounts)) => {
            let mut s = spec.clone();
            s.mounts.splice(0..0, mounts.iter().cloned());
            with_net = s;
            &with_net
        }
        None => spec,
    };
    let mut plan = Plan::new(spec)?;
    let rootfs = Path::new(&spec.rootfs);
    let mut created = mountpoints::prepare(rootfs)?;
    let result = mountpoints::prepare_targets(rootfs, &mut plan.mounts, &mut created)
        .and_then(|()| spawn_and_wait(reaper, spec, &plan, streams, stdin));
    created.remove();
    result
}

fn spawn_and_wait(
    reaper: &Reaper,
    spec: &RunSpec,
    plan: &Plan,
    streams: &mut Streams,
    stdin: Option<StreamReader>,
) -> Result<Response> {
    let argv = ptr_array(&plan.argv);
    let envp = ptr_array(&plan.envp);
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "run: pipe2".to_string());
    let (status_r, status_w) = pipe()?;
    let io = ProcessIo::new(spec, stdin.is_some())?;
    let joined = match spec.join {
        Some(id) => Some(Joined::open(control::pid_of(id)?)?),
        None => None,
    };
    let fds = ChildFds {
        stdin: io.child_stdin(),
        stdout: io.child_stdout(),
        stderr: io.child_stderr(),
        status: status_w.as_raw_fd(),
        tty: io.master.is_some(),
        join: joined.as_ref().map(Joined::fds),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if plan.own_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if joined.is_some() {
        flags = CloneFlags::empty(); // the child joins existing namespaces
    }
    let pid = {
        let guard = reaper.spawn_guard();
        let mut clone_child = || -> Result<nix::unistd::Pid> {
            if let Some(j) = &joined {
                // Applies to this thread's children only: the child lands in that pid namespace.
                nix::sched::setns(&j.pid, CloneFlags::CLONE_NEWPID).ctx(|| "exec: enter the pid namespace".to_string())?;
            }
            let cb = Box::new(|| -> isize { child::run_child(plan, &fds, &argv, &envp) });
            // SAFETY: the child runs `run_child`, which only makes async-signal-safe syscalls on
            // data prepared above (no allocation, no locks) and always ends in execve or _exit.
            // The stack outlives the call; without CLONE_VM the child works on its own copy.
            unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }.ctx(|| format!("run: clone({flags:?})"))
        };
        let pid = if joined.is_some() {
            // A thread that entered another pid namespace can start no threads: do it on a
            // throwaway one, so this request's thread can still start the output pumps.
            let task = AssertSend(clone_child);
            std::thread::scope(|scope| scope.spawn(move || task.run()).join())
                .map_err(|_| Error::msg("exec: the clone thread panicked"))??
        } else {
            clone_child()?
        };
        guard.expect(pid.as_raw());
        pid
    };
    // The parent's copies of the child's ends must close, or the pipes never hit EOF.
    drop(status_w);
    let parent = io.into_parent();
    crate::log::debug!("run: started pid {pid} {:?}", spec.argv);

    let Some((out_stream, err_stream)) = streams.take() else {
        return Err(Error::msg("run: internal: output streams already taken"));
    };
    let _registered = control::register(spec.run_id, pid.as_raw(), parent.master.clone());
    let pumps = match (parent.out_r, parent.err_r) {
        (out_r, Some(err_r)) => [pump(out_stream, out_r), pump(err_stream, err_r)],
        (out_r, None) => {
            let _ = err_stream.finish(); // A terminal merges stderr into stdout.
            [pump(out_stream, out_r), std::thread::spawn(|| ())]
        }
    };
    if let (Some(reader), Some(w)) = (stdin, parent.in_w) {
        feed_stdin(reader, w);
    }
    let setup_error = read_setup_error(status_r, spec);
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
fn read_setup_error(status_r: OwnedFd, spec: &RunSpec) -> Option<Error> {
    let mut buf = Vec::new();
    if let Err(e) = File::from(status_r).read_to_end(&mut buf) {
        return Some(Error::io("run: read child status pipe", e));
    }
    let msg: [u8; child::STATUS_LEN] = buf.get(..child::STATUS_LEN)?.try_into().ok()?;
    let word = |i: usize| [msg[i], msg[i + 1], msg[i + 2], msg[i + 3]];
    let step = Step::from_u32(u32::from_le_bytes(word(0)));
    let errno = i32::from_le_bytes(word(4));
    let index = u32::from_le_bytes(word(8)) as usize;
    let target = match step {
        Some(s) if s.is_file_step() => spec.files.get(index).map(|f| f.path.as_str()),
        _ => spec.mounts.get(index).map(|m| m.target()),
    };
    let what = step
        .map_or("set up the process", Step::describe)
        .replace("ROOTFS", &spec.rootfs)
        .replace("TARGET", target.unwrap_or("?"));
    Some(Error::io(
        format!("run: {what}"),
        std::io::Error::from_raw_os_error(errno),
    ))
}

/// Lets the clone closure (which holds raw pointers into the prepared argv/envp, only read)
/// cross to the scoped thread that runs it; the caller waits for that thread.
struct AssertSend<F>(F);

// SAFETY: the wrapped closure only reads data that outlives the scoped thread running it
// (the thread is joined before anything is dropped) and is run once, by that thread alone.
unsafe impl<F> Send for AssertSend<F> {}

impl<T, F: FnOnce() -> T> AssertSend<F> {
    /// Runs the closure (taking the whole wrapper, so a `move` closure captures it, not its field).
    fn run(self) -> T {
        (self.0)()
    }
}

/// The namespaces and root of a process that an exec joins, open.
struct Joined {
    mnt: File,
    uts: File,
    ipc: File,
    net: File,
    pid: File,
    root: File,
}

impl Joined {
    fn open(pid: i32) -> Result<Self> {
        let open = |what: &str| {
            let path = format!("/proc/{pid}/{what}");
            File::open(&path).ctx(|| format!("exec: open {path}"))
        };
        Ok(Self { mnt: open("ns/mnt")?, uts: open("ns/uts")?, ipc: open("ns/ipc")?, net: open("ns/net")?, pid: open("ns/pid")?, root: open("root")? })
    }

    fn fds(&self) -> child::JoinFds {
        child::JoinFds { mnt: self.mnt.as_raw_fd(), uts: self.uts.as_raw_fd(), ipc: self.ipc.as_raw_fd(), net: self.net.as_raw_fd(), root: self.root.as_raw_fd() }
    }
}

/// The process's stdin/stdout/stderr: pipes (stdin `/dev/null` unless the host streams it),
/// or one pseudo-terminal for all three.
struct ProcessIo {
    /// The child's ends.
    child_in: OwnedFd,
    child_out: OwnedFd,
    child_err: Option<OwnedFd>,
    /// The parent's ends.
    master: Option<Arc<OwnedFd>>,
    out_r: OwnedFd,
    err_r: Option<OwnedFd>,
    in_w: Option<OwnedFd>,
}

/// What the parent keeps once the child runs.
struct ParentIo {
    master: Option<Arc<OwnedFd>>,
    out_r: OwnedFd,
    err_r: Option<OwnedFd>,
    in_w: Option<OwnedFd>,
}

impl ProcessIo {
    fn new(spec: &RunSpec, with_stdin: bool) -> Result<Self> {
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "run: pipe2".to_string());
        if let Some(size) = spec.tty {
            let ws = nix::pty::Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
            let pty = nix::pty::openpty(Some(&ws), None).ctx(|| "run: openpty".to_string())?;
            for fd in [&pty.master, &pty.slave] {
                // Neither end may leak into the process beyond its stdio (dup2 clears the flag).
                nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
                    .ctx(|| "run: fcntl(FD_CLOEXEC) on the pty".to_string())?;
            }
            let out_r = pty.master.try_clone().ctx(|| "run: dup pty master".to_string())?;
            let in_w = pty.master.try_clone().ctx(|| "run: dup pty master".to_string())?;
            let child_out = pty.slave.try_clone().ctx(|| "run: dup pty slave".to_string())?;
            return Ok(Self {
                child_in: pty.slave,
                child_out,
                child_err: None,
                master: Some(Arc::new(pty.master)),
                out_r,
                err_r: None,
                in_w: Some(in_w),
            });
        }
        let (out_r, child_out) = pipe()?;
        let (err_r, child_err) = pipe()?;
        let (child_in, in_w) = if with_stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (OwnedFd::from(File::open("/dev/null").ctx(|| "run: open /dev/null".to_string())?), None)
        };
        Ok(Self { child_in, child_out, child_err: Some(child_err), master: None, out_r, err_r: Some(err_r), in_w })
    }

    fn child_stdin(&self) -> i32 {
        self.child_in.as_raw_fd()
    }

    fn child_stdout(&self) -> i32 {
        self.child_out.as_raw_fd()
    }

    fn child_stderr(&self) -> i32 {
        self.child_err.as_ref().unwrap_or(&self.child_out).as_raw_fd()
    }

    /// Closes the child's ends (so pipes reach EOF) and keeps the parent's.
    fn into_parent(self) -> ParentIo {
        ParentIo { master: self.master, out_r: self.out_r, err_r: self.err_r, in_w: self.in_w }
    }
}

/// How much of the host's stdin may wait for a process that does not read it; past that the
/// rest is dropped (and the process's stdin closed), so the connection is never held up.
const STDIN_BACKLOG: usize = 16 << 20;

/// Copies the host's stdin stream into the process's stdin until the stream ends (then closes
/// a pipe, so the process sees EOF; a terminal stays open: Ctrl-D travels as a byte). Two
/// threads: one takes the stream off the connection at once (every stream shares it, so a
/// process that does not read must not stall the others) into a bounded backlog, one writes
/// the backlog to the process. Not joined: they end with the stream or the process.
fn feed_stdin(mut reader: StreamReader, w: OwnedFd) {
    use std::sync::mpsc::sync_channel;
    // Chunks of up to CHUNK bytes: the channel's bound is the backlog's.
    const CHUNK: usize = 64 * 1024;
    let (tx, rx) = sync_channel::<Vec<u8>>(STDIN_BACKLOG / CHUNK);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.try_send(buf[..n].to_vec()).is_err() {
                        // Full (the process does not read) or gone: drop the rest, keep the
                        // connection moving.
                        crate::log::debug!("run: stdin backlog full or process gone; dropping the rest of stdin");
                        let _ = std::io::copy(&mut reader, &mut std::io::sink());
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        let mut w = File::from(w);
        for chunk in rx {
            if w.write_all(&chunk).is_err() {
                break; // the process is gone
            }
        }
    });
}

/// Copies a pipe into a data stream until EOF, then finishes the stream. If the connection is
/// gone it keeps draining, so the process never blocks on a full pipe.
/// (A terminal's end reads as an error, EIO: it ends the stream as cleanly as EOF does.)
fn pump(mut stream: StreamWriter, pipe: OwnedFd) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut pipe = File::from(pipe);
        if crate::splice::copy(&mut pipe, &mut stream).is_err() {
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        }
        let _ = stream.finish();
    })
}
