//! The private control socket of a running container (`containers/<id>/control.sock`, mode
//! 0600, in a directory only its user can enter): `kiln stop` and `kiln kill` from any shell
//! reach the process that owns the container's VM through it. One JSON request per
//! connection, one JSON answer:
//!
//! - `{"op":"kill","signal":N}` sends signal N to the main process; answered at once.
//! - `{"op":"stop","timeout":T}` sends the container's stop signal, waits up to T seconds for
//!   the process to end, then sends SIGKILL; answered once the exit is recorded.
//! - `{"op":"save"}` saves the writable layer as it is now into `rw.tar`; answered when done.
//! - `{"op":"exec",...}` runs a process in the container and relays it ([`super::exec`]).
//!
//! Sockets are reached through `/proc/self/fd/<dir fd>/control.sock`, so the path stays short
//! (a Unix socket path holds at most 107 bytes; a store root may be deep). The server trusts
//! only the socket's permissions: the container's owner is the user who runs kiln.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use kiln_sandbox::ProcessControl;
use kiln_sys::net::UnixStream;

use crate::RuntimeError;

/// The socket's name in the container's directory.
pub const SOCKET: &str = "control.sock";

/// How long a `stop` waits, past its timeout and SIGKILL, for the exit to be recorded (the
/// writable layer is saved first).
const RECORD_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    Kill { signal: i32 },
    Stop { timeout: u64 },
    /// Save the writable layer as it is now into `rw.tar` (for `kiln commit`, `kiln diff`).
    Save,
    /// Unpack the tar that follows on the connection (until the client shuts its side) into
    /// the container's root (`kiln cp` into a running container); answered when done.
    Receive,
    /// Join the main process: the connection then carries its output and (with `-i`) its
    /// input as frames ([`super::attach`]).
    Attach,
    /// Run a process in the container; the connection then carries its frames
    /// ([`super::exec`]) instead of one answer.
    Exec(super::exec::ExecRequest),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ControlAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Serves the socket until dropped.
pub struct Server {
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(SOCKET));
    }
}

/// Listens on `dir`'s control socket, on a thread, for the life of the returned [`Server`].
/// Saves the running container's writable layer (see [`ControlRequest::Save`]).
pub type Saver = Arc<dyn Fn() -> Result<(), RuntimeError> + Send + Sync>;

/// Runs an exec for a client connection.
pub type ExecHandler = Arc<dyn Fn(super::exec::ExecRequest, UnixStream) + Send + Sync>;

/// Unpacks a tar read from the connection into the container's root.
pub type Receiver = Arc<dyn Fn(&mut dyn std::io::Read) -> Result<(), RuntimeError> + Send + Sync>;

/// Adds an attached client.
pub type AttachHandler = Arc<dyn Fn(UnixStream) + Send + Sync>;

/// What the socket serves besides signals.
pub struct Handlers {
    pub save: Saver,
    pub exec: ExecHandler,
    pub receive: Receiver,
    pub attach: AttachHandler,
}

pub fn serve(dir: &Path, control: ProcessControl, stop_signal: i32, finished: Arc<Finished>, handlers: Handlers) -> Result<Server, RuntimeError> {
    let handlers = Arc::new(handlers);
    let _ = std::fs::remove_file(dir.join(SOCKET));
    let listener = kiln_sys::net::bind_in(dir, SOCKET).map_err(|e| RuntimeError::io("creating (or securing) the container's control socket", e))?;
    std::thread::Builder::new()
        .name("kiln-ctr-control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let (control, finished, handlers) = (control.clone(), finished.clone(), handlers.clone());
                std::thread::spawn(move || answer(conn, &control, stop_signal, &finished, &handlers));
            }
        })
        .map_err(|e| RuntimeError::io("starting the control thread", e))?;
    Ok(Server { dir: dir.to_path_buf() })
}

/// Reads one request line without reading past it (frames may follow on the connection).
fn read_request_line(mut conn: &UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_REQUEST {
        if std::io::Read::read(&mut conn, &mut byte)? == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Largest request line (an exec's argv and env included).
const MAX_REQUEST: usize = 256 * 1024;

fn answer(conn: UnixStream, control: &ProcessControl, stop_signal: i32, finished: &Finished, handlers: &Handlers) {
    let _answering = finished.answering();
    let Ok(line) = read_request_line(&conn) else { return };
    let request = serde_json::from_str::<ControlRequest>(&line);
    if let Ok(ControlRequest::Exec(req)) = request {
        return (handlers.exec)(req, conn);
    }
    if let Ok(ControlRequest::Attach) = request {
        return (handlers.attach)(conn);
    }
    let error = match request {
        Err(e) => Some(format!("bad request: {e}")),
        Ok(ControlRequest::Kill { signal }) => control.signal(signal).err().map(|e| e.to_string()),
        Ok(ControlRequest::Stop { timeout }) => {
            let _ = control.signal(stop_signal);
            if !finished.wait(Duration::from_secs(timeout)) {
                let _ = control.signal(kiln_protocol::signal::SIGKILL);
            }
            (!finished.wait(RECORD_GRACE)).then(|| "the container did not stop".to_string())
        }
        Ok(ControlRequest::Save) => (handlers.save)().err().map(|e| e.to_string()),
        Ok(ControlRequest::Receive) => {
            let mut input = &conn;
            (handlers.receive)(&mut input).err().map(|e| e.to_string())
        }
        Ok(ControlRequest::Exec(_) | ControlRequest::Attach) => None, // handled above
    };
    let mut conn = conn;
    let _ = serde_json::to_vec(&ControlAnswer { error }).map(|mut b| {
        b.push(b'\n');
        let _ = conn.write_all(&b);
    });
}

trait TakeLine {
    fn take_line(&mut self, line: &mut String) -> std::io::Result<usize>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(&mut self, line: &mut String) -> std::io::Result<usize> {
        // A request is small: a peer sending a endless line is cut off at 4 KiB.
        let mut limited = std::io::Read::take(&mut *self, 4096);
        limited.read_line(line)
    }
}

/// Connects to the control socket of the container whose directory is `dir` and sends `req`.
fn open(dir: &Path, req: &ControlRequest) -> Result<UnixStream, RuntimeError> {
    let mut conn = kiln_sys::net::connect_in(dir, SOCKET).map_err(|e| RuntimeError::io("reaching the container's supervisor", e))?;
    let mut bytes = serde_json::to_vec(req).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    bytes.push(b'\n');
    conn.write_all(&bytes).map_err(|e| RuntimeError::io("talking to the container's supervisor", e))?;
    Ok(conn)
}

/// Reads the one-line answer to a request.
fn read_answer(conn: &UnixStream) -> Result<(), RuntimeError> {
    let mut line = String::new();
    BufReader::new(conn).take_line(&mut line).map_err(|e| RuntimeError::io("talking to the container's supervisor", e))?;
    let answer: ControlAnswer =
        serde_json::from_str(&line).map_err(|_| RuntimeError::Invalid("the container's supervisor went away before answering".into()))?;
    match answer.error {
        None => Ok(()),
        Some(e) => Err(RuntimeError::Conflict(e)),
    }
}

/// Opens an exec on the container whose directory is `dir`: the request is sent, the
/// connection returned for [`super::exec::run_client`].
pub fn exec_connect(dir: &Path, req: &super::exec::ExecRequest) -> Result<UnixStream, RuntimeError> {
    open(dir, &ControlRequest::Exec(req.clone()))
}

/// Attaches to the running container whose directory is `dir`: the connection is returned
/// for [`super::exec::run_client`].
pub fn attach_connect(dir: &Path) -> Result<UnixStream, RuntimeError> {
    open(dir, &ControlRequest::Attach)
}

/// Sends `tar` to be unpacked in the running container whose directory is `dir`.
pub fn send_tar(dir: &Path, mut tar: File) -> Result<(), RuntimeError> {
    let mut conn = open(dir, &ControlRequest::Receive)?;
    std::io::copy(&mut tar, &mut conn).map_err(|e| RuntimeError::io("sending the files", e))?;
    conn.shutdown(std::net::Shutdown::Write).map_err(|e| RuntimeError::io("sending the files", e))?;
    read_answer(&conn)
}

/// Whether a container's main process has ended and its state is recorded; `kiln stop`
/// waits for it.
#[derive(Default)]
pub struct Finished {
    done: Mutex<bool>,
    cond: Condvar,
    /// Control requests still answering: the owner waits for them before it exits.
    answering: std::sync::atomic::AtomicUsize,
}

impl Finished {
    /// Marks a control request in progress until the guard drops.
    pub fn answering(&self) -> AnswerGuard<'_> {
        self.answering.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        AnswerGuard(self)
    }

    /// Waits (a bounded time) for control requests in progress to be answered.
    pub fn drain(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.answering.load(std::sync::atomic::Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cond.notify_all();
    }

    /// Waits up to `timeout`; true when finished.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        let guard = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self.cond.wait_timeout_while(guard, timeout, |d| !*d).unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// Ends one control request's "in progress" mark.
pub struct AnswerGuard<'a>(&'a Finished);

impl Drop for AnswerGuard<'_> {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Sends `req` to the container whose directory is `dir`; returns once it is answered.
pub fn request(dir: &Path, req: &ControlRequest) -> Result<(), RuntimeError> {
    read_answer(&open(dir, req)?)
}
