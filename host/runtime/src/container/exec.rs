//! `kiln exec`: a process in a running container (its root, mounts and pid namespace), run by
//! the container's owner and relayed to the `kiln exec` process over the control socket.
//!
//! After the JSON request line, the connection carries frames both ways:
//! `kind: u8 | length: u32 big-endian | payload`. Client to owner: stdin data, stdin's end,
//! terminal resizes (rows, cols as two u16). Owner to client: stdout and stderr data, then the
//! exit code (an i32) or an error message. The owner never trusts the client beyond the
//! socket's permissions (it is the container's own user).

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use kiln_sys::net::UnixStream;
use kiln_sandbox::agent::Process;
use kiln_sandbox::{AgentClient, ProcessIo};

use super::names::exit_code;
use crate::RuntimeError;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 3;
pub const STDIN_END: u8 = 4;
pub const EXIT: u8 = 5;
pub const ERROR: u8 = 6;

/// How long a write to a client may block before the client is given up.
pub const STALLED_CLIENT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest frame either side accepts.
const MAX_FRAME: usize = 1 << 20;

/// What to run, resolved by the client (user ids from the image's own files).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// `KEY=VALUE` added to (and overriding) the container's environment.
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    pub cwd: Option<String>,
    /// Numeric ids (default: the container's user).
    pub user: Option<(u32, u32, Vec<u32>)>,
    pub tty: Option<(u16, u16)>,
    pub interactive: bool,
}

pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    w.write_all(payload)?;
    w.flush()
}

/// The next frame, `None` at a clean end of the connection.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("frame of {len} bytes (at most {MAX_FRAME})")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// Sends what is written to it as frames of one kind.
struct FrameWriter {
    conn: Arc<Mutex<UnixStream>>,
    kind: u8,
}

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        write_frame(&mut *c, self.kind, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The client's stdin frames as a byte stream (ends at the stdin-end frame or the connection's
/// end); resize frames go to `on_resize`.
struct FrameStdin {
    conn: UnixStream,
    pending: Vec<u8>,
    on_resize: Box<dyn Fn(u16, u16) + Send>,
}

impl Read for FrameStdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            match read_frame(&mut self.conn)? {
                None => return Ok(0),
                Some((STDIN, data)) => self.pending = data,
                Some((STDIN_END, _)) => return Ok(0),
                Some((RESIZE, p)) if p.len() == 4 => (self.on_resize)(u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])),
                Some(_) => {}
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// The base of an exec: the container's main process (its run id, env, cwd, ids, hostname).
pub struct ExecBase {
    pub agent: AgentClient,
    pub main_run: u32,
    pub env: Vec<String>,
    pub cwd: String,
    pub ids: (u32, u32, Vec<u32>),
}

/// Runs `req` for the client on `conn` and relays it until it ends.
pub fn serve_exec(base: &ExecBase, req: ExecRequest, conn: UnixStream) {
    // A client that stops reading (a paused pager) must not stall the agent connection that
    // every stream of the container shares: its output is dropped after this long.
    let _ = conn.set_write_timeout(Some(STALLED_CLIENT));
    let shared = match conn.try_clone() {
        Ok(c) => Arc::new(Mutex::new(c)),
        Err(_) => return,
    };
    let fail = |msg: String| {
        let mut c = shared.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write_frame(&mut *c, ERROR, msg.as_bytes());
    };
    let mut env = base.env.clone();
    for e in &req.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
    let (uid, gid, groups) = req.user.clone().unwrap_or_else(|| base.ids.clone());
    let process = Process {
        argv: req.argv.clone(),
        env,
        cwd: req.cwd.clone().unwrap_or_else(|| base.cwd.clone()),
        uid,
        gid,
        additional_gids: groups,
        join: Some(base.main_run),
        ..Default::default()
    };
    // A reader of the client's frames feeds stdin (and resizes); without -i it still watches
    // for resizes and the client going away.
    let control_slot: Arc<Mutex<Option<kiln_sandbox::ProcessControl>>> = Arc::default();
    let slot = control_slot.clone();
    let on_resize: Box<dyn Fn(u16, u16) + Send> = Box::new(move |rows, cols| {
        if let Some(c) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = c.resize(rows, cols);
        }
    });
    let frames = FrameStdin { conn, pending: Vec::new(), on_resize };
    let stdin: Option<Box<dyn Read + Send>> = if req.interactive { Some(Box::new(frames)) } else {
        std::thread::spawn(move || {
            let mut frames = frames;
            let _ = io::copy(&mut frames, &mut io::sink());
        });
        None
    };
    let io = ProcessIo { stdin, tty: req.tty };
    let stdout = Box::new(FrameWriter { conn: shared.clone(), kind: STDOUT });
    let stderr = Box::new(FrameWriter { conn: shared.clone(), kind: STDERR });
    let running = match base.agent.start_process(&process, io, stdout, stderr) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    *control_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(running.control());
    match running.wait() {
        Ok(status) => {
            let mut c = shared.lock().unwrap_or_else(|e| e.into_inner());
            let _ = write_frame(&mut *c, EXIT, &exit_code(&status).to_be_bytes());
        }
        Err(e) => fail(e.to_string()),
    }
}

/// What the client of an exec hands over and gets back.
pub struct ExecClient {
    pub stdin: Option<Box<dyn Read + Send>>,
    pub stdout: Box<dyn Write + Send>,
    pub stderr: Box<dyn Write + Send>,
}

/// Runs the client's side on an open connection (the request line already sent): pumps stdin
/// out, output in; returns the process's exit code. `resizer` receives a sender for sizes.
pub fn run_client(conn: UnixStream, mut io: ExecClient, on_conn: impl FnOnce(Box<dyn Fn(u16, u16) + Send + Sync>)) -> Result<i32, RuntimeError> {
    let writer = Arc::new(Mutex::new(conn.try_clone().map_err(|e| RuntimeError::io("exec connection", e))?));
    let resize_writer = writer.clone();
    on_conn(Box::new(move |rows, cols| {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        let mut c = resize_writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write_frame(&mut *c, RESIZE, &p);
    }));
    if let Some(mut input) = io.stdin.take() {
        let w = writer.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut c = w.lock().unwrap_or_else(|e| e.into_inner());
                        if write_frame(&mut *c, STDIN, &buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let mut c = w.lock().unwrap_or_else(|e| e.into_inner());
            let _ = write_frame(&mut *c, STDIN_END, &[]);
        });
    }
    let mut reader = conn;
    loop {
        match read_frame(&mut reader).map_err(|e| RuntimeError::io("exec connection", e))? {
            None => return Err(RuntimeError::Invalid("the container's supervisor went away (the container ended)".into())),
            Some((STDOUT, d)) => {
                let _ = io.stdout.write_all(&d).and_then(|()| io.stdout.flush());
            }
            Some((STDERR, d)) => {
                let _ = io.stderr.write_all(&d).and_then(|()| io.stderr.flush());
            }
            Some((EXIT, d)) if d.len() == 4 => return Ok(i32::from_be_bytes([d[0], d[1], d[2], d[3]])),
            Some((ERROR, d)) => return Err(RuntimeError::Invalid(String::from_utf8_lossy(&d).into_owned())),
            Some(_) => {}
        }
    }
}
