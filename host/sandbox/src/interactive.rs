//! Processes the host talks to while they run (`kiln run`): stdin streamed to them, a
//! pseudo-terminal, signals and window-size changes.
//!
//! [`AgentClient::start_process`] sends the `Run` and returns at once with a
//! [`RunningProcess`]: output is pumped to the caller's writers on threads, stdin (when given)
//! on another, and [`ProcessControl`] (cloneable, for a signal-handling thread) sends `Signal`
//! and `Resize` for it. This module never touches the host's terminal: raw mode and SIGWINCH
//! belong to the CLI.

use std::io::{self, Read, Write};
use std::thread::{self, JoinHandle};

use kiln_protocol::{Mux, MuxError, Request, Response, TtySize};

use crate::agent::{join, unexpected, AgentClient, ExitStatus, Process};
use crate::SandboxError;

/// How the host talks to the process beyond its output.
#[derive(Default)]
pub struct ProcessIo {
    /// Streamed to the process's stdin (its end closes stdin); `None`: stdin is `/dev/null`.
    pub stdin: Option<Box<dyn Read + Send>>,
    /// A pseudo-terminal of this size (rows, columns) for stdin, stdout and stderr.
    pub tty: Option<(u16, u16)>,
}

/// Sends signals and window sizes to one running process. Cheap to clone.
#[derive(Clone)]
pub struct ProcessControl {
    mux: Mux,
    run_id: u32,
}

impl ProcessControl {
    /// The process's run id (what an exec joins).
    pub fn run_id(&self) -> u32 {
        self.run_id
    }

    /// Sends `signal` (a Linux signal number) to the process (with a terminal, to its
    /// foreground process group).
    pub fn signal(&self, signal: i32) -> Result<(), SandboxError> {
        self.simple("signalling the process", Request::Signal { run: self.run_id, signal })
    }

    /// Sets the size of the process's terminal.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), SandboxError> {
        self.simple("resizing the terminal", Request::Resize { run: self.run_id, rows, cols })
    }

    fn simple(&self, what: &str, req: Request) -> Result<(), SandboxError> {
        match self.mux.call(&req, Some(std::time::Duration::from_secs(10)))? {
            Response::Done => Ok(()),
            other => Err(unexpected(what, other)),
        }
    }
}

/// A process started by [`AgentClient::start_process`].
pub struct RunningProcess {
    control: ProcessControl,
    call: JoinHandle<Result<Response, MuxError>>,
    pumps: [JoinHandle<io::Result<()>>; 2],
}

impl RunningProcess {
    pub fn control(&self) -> ProcessControl {
        self.control.clone()
    }

    /// Waits for the process to end and its output to be copied out.
    pub fn wait(self) -> Result<ExitStatus, SandboxError> {
        let resp = join(self.call)?;
        if resp.is_err() {
            self.control.mux.close(); // Unblocks the pumps; the connection is unusable anyway.
        }
        let [out, err] = self.pumps;
        let pumped = join(out)?.and(join(err)?);
        match resp? {
            Response::Exited { code, signal } => {
                pumped.map_err(|e| SandboxError::io("copying process output", e))?;
                Ok(ExitStatus { code, signal })
            }
            other => Err(unexpected("running the process", other)),
        }
    }
}

impl AgentClient {
    /// Starts `p`, copying its output to `stdout`/`stderr` (with a terminal, everything comes
    /// on `stdout`) and `io.stdin` to it, and returns without waiting for it to end.
    pub fn start_process(
        &self,
        p: &Process,
        io: ProcessIo,
        mut stdout: Box<dyn Write + Send>,
        mut stderr: Box<dyn Write + Send>,
    ) -> Result<RunningProcess, SandboxError> {
        let (out_id, err_id, run_id) = (self.mux.next_id(), self.mux.next_id(), self.mux.next_id());
        let in_id = io.stdin.as_ref().map(|_| self.mux.next_id());
        let tty = io.tty.map(|(rows, cols)| TtySize { rows, cols });
        let req = p.request(out_id, err_id, (in_id, tty, Some(run_id)))?;
        let mut out_r = self.mux.open_reader(out_id);
        let mut err_r = self.mux.open_reader(err_id);
        let pump_out = thread::spawn(move || {
            let mut w = FlushingWriter(&mut stdout);
            io::copy(&mut out_r, &mut w).map(drop)
        });
        let pump_err = thread::spawn(move || io::copy(&mut err_r, &mut stderr).map(drop));
        // The request goes out before any stdin data, so the agent knows the stream's owner.
        let pending = self.mux.start_call(&req)?;
        if let (Some(mut input), Some(id)) = (io.stdin, in_id) {
            let mut writer = self.mux.open_writer(id);
            thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match input.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if writer.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = writer.finish();
            });
        }
        let call = thread::spawn(move || pending.wait(None));
        // Returns once the process runs (or ended already: `wait` then says how), so signals
        // sent through the control reach it.
        match self.mux.call(&Request::WaitStarted { run: run_id }, None) {
            Ok(Response::Started { .. }) => {}
            Ok(other) => return Err(unexpected("starting the process", other)),
            Err(e) => {
                self.mux.close();
                return Err(e.into());
            }
        }
        Ok(RunningProcess { control: ProcessControl { mux: self.mux.clone(), run_id }, call, pumps: [pump_out, pump_err] })
    }
}

/// Flushes after every write: a terminal's echo must appear as it comes, not when a buffer
/// fills.
struct FlushingWriter<'a>(&'a mut Box<dyn Write + Send>);

impl Write for FlushingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.0.flush()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
