//! The host side of the agent protocol: typed calls over a [`Mux`].
//!
//! Calls that move bulk data run the control call on a helper thread while the data stream is
//! pumped on the caller's thread, because the agent answers only after the stream has ended
//! and stream buffers are bounded.

use std::io::{self, Read, Write};
use std::path::Path;
use std::thread;
use std::time::Duration;

use kiln_protocol::{Mux, Request, Response, RunSpec, StreamReader, StreamWriter, MAX_PAYLOAD, PROTOCOL_VERSION};

use kiln_sys::net::UnixStream;
use crate::SandboxError;

/// Mounts and files of a [`Process`]: the protocol's own types (see their docs for the rules).
pub use kiln_protocol::{Network, RunFile, RunMount};

/// What the agent said about itself.
#[derive(Debug, Clone)]
pub struct GuestInfo {
    pub version: u32,
    pub kernel: String,
    pub agent_build_id: String,
}

/// How a guest process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => write!(f, "unknown status"),
        }
    }
}

/// A process to run in the guest (stream ids are filled in by [`AgentClient::run`]). Its
/// `Debug` shows the environment's names only (values may be secrets).
#[derive(Clone, Default)]
pub struct Process {
    pub rootfs: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (Docker gives a USER the groups that list it in /etc/group).
    pub additional_gids: Vec<u32>,
    /// Files placed for the process outside the image (in tmpfs), e.g. `/dev/pipes/EOF`;
    /// each must lie below `/dev/` or below the target of a tmpfs in `mounts`.
    pub files: Vec<RunFile>,
    /// Mounts for the process (tmpfs, bind, secret), applied in order; never part of a layer.
    pub mounts: Vec<RunMount>,
    /// The guest's network, or none (`RUN --network=none`).
    pub network: Network,
    /// The process's hostname (empty: `kiln`).
    pub hostname: String,
    /// Run inside the running process with this run id (its root and namespaces: an exec);
    /// `rootfs`, `mounts`, `files`, `network` and `hostname` are then ignored.
    pub join: Option<u32>,
    /// The root filesystem read-only for the process (`kiln run --read-only`).
    pub readonly_root: bool,
    /// A small init as the pid namespace's process 1 (`kiln run --init`).
    pub init: bool,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("rootfs", &self.rootfs)
            .field("argv", &self.argv)
            .field("env", &kiln_protocol::messages::EnvNames(&self.env))
            .field("cwd", &self.cwd)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mounts", &self.mounts)
            .field("network", &self.network)
            .field("join", &self.join)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// The `Run` request for this process, with its streams; refused when it would not fit
    /// one frame (file and secret contents travel inline: too large a request would tear the
    /// connection down).
    pub(crate) fn request(&self, out_id: u32, err_id: u32, io: (Option<u32>, Option<kiln_protocol::TtySize>, Option<u32>)) -> Result<Request, SandboxError> {
        let spec = RunSpec {
            rootfs: self.rootfs.clone(),
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            uid: self.uid,
            gid: self.gid,
            additional_gids: self.additional_gids.clone(),
            files: self.files.clone(),
            mounts: self.mounts.clone(),
            network: self.network,
            hostname: if self.hostname.is_empty() { "kiln".into() } else { self.hostname.clone() },
            stdout_stream: out_id,
            stderr_stream: err_id,
            stdin_stream: io.0,
            tty: io.1,
            run_id: io.2,
            join: self.join,
            readonly_root: self.readonly_root,
            init: self.init,
        };
        let req = Request::Run(spec);
        let size = serde_json::to_vec(&req).map_or(0, |v| v.len());
        if size > MAX_PAYLOAD {
            return Err(SandboxError::Agent(format!(
                "running the process: files and secrets too large ({size} bytes encoded, at most {MAX_PAYLOAD})"
            )));
        }
        Ok(req)
    }
}

/// A connected agent. Clones share the connection; calls from several threads interleave
/// safely (each is answered under its own request id).
#[derive(Clone)]
pub struct AgentClient {
    pub(crate) mux: Mux,
}

pub(crate) fn unexpected(what: &str, resp: Response) -> SandboxError {
    match resp {
        Response::Error { message } => SandboxError::Agent(format!("{what}: {message}")),
        other => SandboxError::Agent(format!("{what}: unexpected answer {other:?}")),
    }
}

pub(crate) fn join<T>(h: thread::JoinHandle<T>) -> Result<T, SandboxError> {
    h.join().map_err(|_| SandboxError::Agent("internal: a protocol thread panicked".into()))
}

impl AgentClient {
    pub fn new(mux: Mux) -> Self {
        Self { mux }
    }

    /// Starts the [`crate::watchdog`] over this connection with its default periods; `cut`
    /// shuts the connection's socket down when the agent is given up on.
    pub fn watch(&self, cut: Option<crate::watchdog::Cut>) {
        self.watch_with(crate::watchdog::IDLE, crate::watchdog::ANSWER, cut);
    }

    /// [`AgentClient::watch`] with other periods (tests).
    pub fn watch_with(&self, idle: Duration, answer: Duration, cut: Option<crate::watchdog::Cut>) {
        crate::watchdog::spawn(self.mux.clone(), idle, answer, cut);
    }

    /// Version handshake; fails if the agent speaks no version we know.
    pub fn hello(&self, timeout: Duration) -> Result<GuestInfo, SandboxError> {
        // Fresh randomness and the clock: a guest restored from a snapshot needs both.
        let mut entropy = [0u8; 64];
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut entropy)).map_err(|e| SandboxError::io("reading /dev/urandom", e))?;
        let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().and_then(|d| u64::try_from(d.as_nanos()).ok());
        let hello = Request::Hello { versions: vec![PROTOCOL_VERSION], entropy: Some(kiln_protocol::base64::encode(&entropy)), now_ns };
        let resp = self.mux.call(&hello, Some(timeout))?;
        match resp {
            Response::Hello { version, kernel, agent_build_id } if version == PROTOCOL_VERSION => {
                Ok(GuestInfo { version, kernel, agent_build_id })
            }
            Response::Hello { version, .. } => Err(SandboxError::Incompatible(format!("agent chose protocol version {version}, kiln speaks {PROTOCOL_VERSION}"))),
            Response::Error { message } => Err(SandboxError::Incompatible(message)),
            other => Err(unexpected("hello", other)),
        }
    }

    fn simple(&self, what: &str, req: Request) -> Result<(), SandboxError> {
        match self.mux.call(&req, None)? {
            Response::Done => Ok(()),
            other => Err(unexpected(what, other)),
        }
    }

    /// Sends the tar read from `tar` and has the agent extract it into `dest`.
    pub fn receive_tar(&self, dest: &str, tar: &mut dyn Read) -> Result<u64, SandboxError> {
        let stream = self.mux.next_id();
        // The request goes out before any of the stream's data (see `Mux::start_call`); the
        // answer is awaited on a helper thread while the data is pumped here.
        let pending = self.mux.start_call(&Request::ReceiveTar { dest: dest.to_string(), stream })?;
        let call = thread::spawn(move || pending.wait(None));
        let mut w = self.mux.open_writer(stream);
        let copied = w.copy_from(tar);
        match copied {
            Ok(_) => w.finish().map_err(|e| SandboxError::io("sending a tar to the guest", e))?,
            Err(e) => {
                w.abort(&e.to_string());
                let _ = join(call);
                return Err(SandboxError::io(format!("reading the tar for {dest}"), e));
            }
        }
        match join(call)?? {
            Response::TarReceived { entries } => Ok(entries),
            other => Err(unexpected(&format!("extracting into {dest}"), other)),
        }
    }

    pub fn make_dirs(&self, paths: &[&str]) -> Result<(), SandboxError> {
        self.simple("mkdir", Request::MakeDirs { paths: paths.iter().map(|p| p.to_string()).collect() })
    }

    pub fn mount_overlay(&self, lowers: Vec<String>, upper: &str, work: &str, target: &str) -> Result<(), SandboxError> {
        let req = Request::MountOverlay { lowers, upper: upper.into(), work: work.into(), target: target.into() };
        self.simple("mounting the overlay", req)
    }

    /// Registers an emulator already in the guest for foreign ELF binaries (see the request).
    pub fn register_binfmt(&self, name: &str, magic: &str, mask: &str, interpreter: &str) -> Result<(), SandboxError> {
        let req = Request::RegisterBinfmt { name: name.into(), magic: magic.into(), mask: mask.into(), interpreter: interpreter.into() };
        self.simple("registering the emulator", req)
    }

    /// Mounts the VM's `share` at guest path `target`; an empty share is first filled from
    /// `copy_up` (a new volume takes the image's content).
    pub fn mount_share(&self, share: &crate::Share, target: &str, copy_up: Option<kiln_protocol::CopyUp>) -> Result<(), SandboxError> {
        let req = Request::MountShare { tag: share.tag.clone(), target: target.into(), readonly: share.readonly, copy_up, virtiofs: share.virtiofs };
        self.simple(&format!("mounting the shared directory {}", share.tag), req)
    }

    pub fn unmount(&self, target: &str) -> Result<(), SandboxError> {
        self.simple("unmounting", Request::Unmount { target: target.into() })
    }

    /// Runs a process, copying its stdout and stderr to the given writers as it runs.
    pub fn run(
        &self,
        p: &Process,
        mut stdout: Box<dyn Write + Send>,
        mut stderr: Box<dyn Write + Send>,
    ) -> Result<ExitStatus, SandboxError> {
        let (out_id, err_id) = (self.mux.next_id(), self.mux.next_id());
        let req = p.request(out_id, err_id, (None, None, None))?;
        let mut out_r = self.mux.open_reader(out_id);
        let mut err_r = self.mux.open_reader(err_id);
        let pump_out = thread::spawn(move || io::copy(&mut out_r, &mut stdout).map(drop));
        let pump_err = thread::spawn(move || io::copy(&mut err_r, &mut stderr).map(drop));
        let resp = self.mux.call(&req, None);
        if resp.is_err() {
            self.mux.close(); // Unblocks the pumps; the connection is unusable anyway.
        }
        let pumped_out = join(pump_out)?;
        let pumped_err = join(pump_err)?;
        match resp? {
            Response::Exited { code, signal } => {
                pumped_out.and(pumped_err).map_err(|e| SandboxError::io("copying process output", e))?;
                Ok(ExitStatus { code, signal })
            }
            other => Err(unexpected("running the process", other)),
        }
    }

    /// Streams the OCI layer diff of `upper` into `consume`, which must read it to the end.
    /// With `clamp_mtime`, no entry is dated later than it (reproducible builds). `lowers`
    /// (topmost first) lets the agent leave out directories that were only copied up.
    pub fn diff<T>(
        &self,
        upper: &str,
        lowers: &[String],
        clamp_mtime: Option<i64>,
        consume: impl FnOnce(&mut StreamReader) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        let stream = self.mux.next_id();
        let mut reader = self.mux.open_reader(stream);
        let mux = self.mux.clone();
        let req = Request::Diff { upper: upper.to_string(), stream, clamp_mtime, lowers: lowers.to_vec() };
        let call = thread::spawn(move || mux.call(&req, None));
        let consumed = consume(&mut reader);
        if consumed.is_err() {
            // Drain so the agent can finish and answer and the connection stays usable; a
            // stream that goes on past that (a guest that never stops) gets the guest cut off.
            const DRAIN: u64 = 64 << 20;
            if io::copy(&mut io::Read::take(&mut reader, DRAIN), &mut io::sink()).is_ok_and(|n| n == DRAIN) {
                self.mux.close();
            }
        }
        let resp = join(call)??;
        let value = consumed?;
        match resp {
            Response::Diffed { .. } => Ok(value),
            other => Err(unexpected(&format!("diffing {upper}"), other)),
        }
    }

    /// Listens at guest path `guest_path` (permission bits `mode`, owner `uid:gid`) and carries
    /// every connection made there to the unix socket `host_socket` (`RUN --mount=type=ssh`:
    /// the host's SSH agent), until the returned [`Forward`] is closed or dropped.
    pub fn forward_unix(&self, guest_path: &str, host_socket: &Path, mode: u32, uid: u32, gid: u32) -> Result<Forward, SandboxError> {
        let req = Request::ForwardListen { path: guest_path.into(), mode, uid, gid };
        self.simple(&format!("listening at {guest_path}"), req)?;
        let (agent, path, host) = (self.clone(), guest_path.to_string(), host_socket.to_path_buf());
        let acceptor = thread::Builder::new().name("kiln-forward".into()).spawn(move || agent.accept_loop(&path, &host));
        let mut forward = Forward { agent: self.clone(), path: guest_path.to_string(), acceptor: None };
        match acceptor {
            Ok(h) => forward.acceptor = Some(h),
            Err(e) => return Err(SandboxError::io("starting the forwarding thread", e)),
        }
        Ok(forward)
    }

    /// Keeps one accept waiting in the guest; carries each connection to `host`. Ends when the
    /// guest socket is closed or the connection to the agent is lost.
    fn accept_loop(&self, path: &str, host: &Path) {
        loop {
            let (to_guest, from_guest) = (self.mux.next_id(), self.mux.next_id());
            // Claimed before the call: data the guest sends right after accepting is kept.
            let reader = self.mux.open_reader(from_guest);
            match self.mux.call(&Request::ForwardAccept { path: path.into(), to_guest, from_guest }, None) {
                Ok(Response::Accepted { connected: true }) => carry(host, reader, self.mux.open_writer(to_guest)),
                _ => return,
            }
        }
    }

    /// Opens a flow to UDP port `port` on the guest's loopback: datagrams written (framed by
    /// [`kiln_protocol::datagram`]) to the writer are sent there, answers arrive framed on the
    /// reader. Finishing the writer closes the flow.
    pub fn connect_udp(&self, port: u16) -> Result<(kiln_protocol::StreamWriter, kiln_protocol::StreamReader), SandboxError> {
        let (to_guest, from_guest) = (self.mux.next_id(), self.mux.next_id());
        let reader = self.mux.open_reader(from_guest);
        match self.mux.call(&Request::ConnectUdp { port, to_guest, from_guest }, Some(Duration::from_secs(30)))? {
            Response::Accepted { connected: true } => Ok((self.mux.open_writer(to_guest), reader)),
            other => Err(unexpected(&format!("opening a UDP flow to port {port}"), other)),
        }
    }

    /// Carries `conn` (a connection to a published port on the host) to TCP port `port` on
    /// the guest's loopback, until both sides end. Fails when nothing listens there.
    pub fn connect_tcp(&self, port: u16, conn: std::net::TcpStream) -> Result<(), SandboxError> {
        let (to_guest, from_guest) = (self.mux.next_id(), self.mux.next_id());
        let reader = self.mux.open_reader(from_guest);
        match self.mux.call(&Request::ConnectTcp { port, to_guest, from_guest }, Some(Duration::from_secs(30)))? {
            Response::Accepted { connected: true } => {
                carry_stream(conn, reader, self.mux.open_writer(to_guest), format!("port {port}"));
                Ok(())
            }
            other => Err(unexpected(&format!("connecting to port {port}"), other)),
        }
    }

    /// Cuts the guest off from the host's loopback services when `KILN_HOST_LOOPBACK=0` says
    /// so (untrusted builds and containers); by default they are reachable at 10.0.2.2
    /// (`host.docker.internal`), as with Docker Desktop.
    pub fn apply_host_access(&self) -> Result<(), SandboxError> {
        match std::env::var("KILN_HOST_LOOPBACK").as_deref() {
            Err(_) | Ok("" | "1") => Ok(()),
            Ok("0") => self.simple("cutting the guest off from the host's loopback", Request::DenyHost),
            Ok(other) => Err(SandboxError::BadSetting { name: "KILN_HOST_LOOPBACK", value: other.into(), why: "expected 0 or 1" }),
        }
    }

    /// Asks the agent to sync and power off; waits at most `timeout` for its answer.
    pub fn power_off(&self, timeout: Duration) -> Result<(), SandboxError> {
        match self.mux.call(&Request::PowerOff, Some(timeout))? {
            Response::Done => Ok(()),
            other => Err(unexpected("power off", other)),
        }
    }

    pub fn close(&self) {
        self.mux.close();
    }
}

/// A guest socket forwarded to a host socket ([`AgentClient::forward_unix`]). Closing it (or
/// dropping it) removes the guest socket; connections already made end with their ends.
pub struct Forward {
    agent: AgentClient,
    path: String,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Forward {
    /// Stops listening in the guest and waits for the accepting thread to end.
    pub fn close(mut self) -> Result<(), SandboxError> {
        self.shut()
    }

    fn shut(&mut self) -> Result<(), SandboxError> {
        let Some(acceptor) = self.acceptor.take() else { return Ok(()) };
        let closed = self.agent.simple(&format!("closing {}", self.path), Request::ForwardClose { path: self.path.clone() });
        if closed.is_ok() {
            join(acceptor)?;
        }
        // Otherwise the connection is gone, and with it the waiting accept: the thread ends alone.
        closed
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.shut();
    }
}

/// Carries one forwarded connection between the guest's streams and a new connection to
/// `host`, a thread per direction. Each direction ends when its source ends; a host socket
/// that cannot be reached ends the guest's connection with the reason.
fn carry(host: &Path, from_guest: StreamReader, to_guest: StreamWriter) {
    match UnixStream::connect(host) {
        Ok(conn) => carry_stream(conn, from_guest, to_guest, host.display().to_string()),
        Err(e) => to_guest.abort(&format!("connecting to {}: {e}", host.display())),
        // (Dropping `from_guest` drops what the guest still sends.)
    }
}

/// Pumps `conn` and the guest's two streams, a thread per direction, each ending when its
/// source ends.
fn carry_stream<C: kiln_protocol::duplex::Duplex>(conn: C, mut from_guest: StreamReader, mut to_guest: StreamWriter, name: String) {
    let mut back = match conn.dup() {
        Ok(c) => c,
        Err(e) => {
            to_guest.abort(&format!("connection to {name}: {e}"));
            return;
        }
    };
    let _ = thread::Builder::new().name("kiln-forward-in".into()).spawn(move || {
        let mut conn = conn;
        let _ = io::copy(&mut from_guest, &mut conn);
        conn.shut_write();
    });
    let _ = thread::Builder::new().name("kiln-forward-out".into()).spawn(move || match to_guest.copy_from(&mut back) {
        Ok(_) => {
            let _ = to_guest.finish();
        }
        Err(e) => to_guest.abort(&format!("reading {name}: {e}")),
    });
}

