//! Control messages: what the host asks of the agent and what the agent answers.
//!
//! Paths are guest paths chosen by the host; the agent trusts the host. The host never trusts
//! what comes back: every answer and every byte of a data stream is checked on arrival.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. The host offers the versions it knows in
/// [`Request::Hello`]; the agent answers with the highest one it shares, or an error.
pub const PROTOCOL_VERSION: u32 = 6;

/// A call from the host to the agent. Each is answered by exactly one [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First call on a connection: version negotiation. The host also hands over fresh
    /// randomness (base64, mixed into the guest kernel's pool, which is then reseeded) and its
    /// clock (nanoseconds since the epoch): a guest restored from a snapshot is a clone whose
    /// random state and clock are the snapshot's until it gets them.
    Hello {
        versions: Vec<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entropy: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        now_ns: Option<u64>,
    },
    /// Extract the tar sent by the host on data stream `stream` into `dest` (created if absent).
    /// OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) become overlayfs whiteouts (0:0 character
    /// devices, the `trusted.overlay.opaque` xattr) so `dest` can serve as an overlay lower dir.
    /// Answered by [`Response::TarReceived`] once the whole stream is on disk.
    ReceiveTar { dest: String, stream: u32 },
    /// `mkdir -p` for each path.
    MakeDirs { paths: Vec<String> },
    /// Mount an overlay at `target`. `lowers` is ordered topmost first, as overlayfs expects.
    /// An empty `lowers` is allowed (the agent then uses an empty lower dir).
    MountOverlay { lowers: Vec<String>, upper: String, work: String, target: String },
    /// Mount the host directory the VM shares under `tag` (virtio-9p) at `target` (created if
    /// absent), read-only when asked. With `copy_up`, a share that is empty is first filled
    /// with a copy of what that directory holds (a volume's first use: Docker's copy of the
    /// image's content into a new volume). Answered by [`Response::Done`].
    MountShare {
        tag: String,
        target: String,
        readonly: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        copy_up: Option<CopyUp>,
        /// The share is a virtiofs device (else virtio-9p).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        virtiofs: bool,
    },
    /// Unmount `target` (recursively, with everything mounted below it).
    Unmount { target: String },
    /// Create a unix socket listening at guest path `path` (parents created, a stale socket
    /// replaced), with permission bits `mode` and owner `uid:gid`, whose connections the host
    /// carries elsewhere (`RUN --mount=type=ssh`). Answered by [`Response::Done`].
    ForwardListen { path: String, mode: u32, uid: u32, gid: u32 },
    /// Wait for a connection on the socket at `path`. When one comes, the agent answers
    /// [`Response::Accepted`] with `connected: true` and pumps it: what the connecting process
    /// writes goes to data stream `from_guest` (ended when it shuts its side), what the host
    /// sends on `to_guest` goes to the process (its end shuts the socket's write side). Once
    /// the socket is closed ([`Request::ForwardClose`]) the answer is `connected: false`. The
    /// host keeps one such call waiting per socket.
    ForwardAccept { path: String, to_guest: u32, from_guest: u32 },
    /// Connect to TCP port `port` on the guest's loopback (a container's published port: the
    /// container shares the guest's network) and pump the connection like
    /// [`Request::ForwardAccept`] does: what the host sends on `to_guest` goes to the port,
    /// what comes back goes to `from_guest`. Answered by [`Response::Accepted`] once
    /// connected, or an error (nothing listens there).
    ConnectTcp { port: u16, to_guest: u32, from_guest: u32 },
    /// Carry datagrams to UDP port `port` on the guest's loopback from a socket of its own:
    /// each datagram the host sends on `to_guest` (framed by [`crate::datagram`]) is sent
    /// there, each one that comes back is framed onto `from_guest`. The end of `to_guest`
    /// closes the socket and ends `from_guest`. Answered by [`Response::Accepted`].
    ConnectUdp { port: u16, to_guest: u32, from_guest: u32 },
    /// Stop listening at `path` and remove the socket (a waiting accept then answers
    /// `connected: false`); connections already made go on until their ends close them.
    ForwardClose { path: String },
    /// Run a process; answered by [`Response::Exited`] after its output streams have ended.
    Run(RunSpec),
    /// Write an OCI layer tar of overlay upper dir `upper` to data stream `stream`
    /// (guest to host), overlayfs whiteouts turned back into OCI whiteouts. Answered by
    /// [`Response::Diffed`] after the stream's end. With `clamp_mtime`, no entry is dated
    /// later than that many seconds since the epoch (reproducible builds, SOURCE_DATE_EPOCH).
    /// `lowers` (topmost first, as in [`Request::MountOverlay`]) lets the agent leave out
    /// directories that are in the upper dir only because they were copied up (a mount point
    /// or a file created and removed below them) and equal the lower's: Docker's layers do not
    /// carry unchanged directories either.
    Diff {
        upper: String,
        stream: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clamp_mtime: Option<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lowers: Vec<String>,
    },
    /// Register `interpreter` (a static user-mode emulator already in the guest, e.g.
    /// `qemu-aarch64-static`) with binfmt_misc for ELF files matching `magic`/`mask` (each the
    /// kernel's `\xHH` text), with the `F` flag: the kernel opens it now, so it also runs
    /// binaries inside a Run's root. Registering a `name` that exists already is a no-op.
    RegisterBinfmt { name: String, magic: String, mask: String, interpreter: String },
    /// Sync filesystems and power the guest off. Answered before the power-off happens.
    PowerOff,
    /// Are you there? Answered by [`Response::Done`] at once, whatever else runs (the host's
    /// watchdog asks when the connection has been quiet for a while).
    Ping,
    /// From now on, refuse connections to the host's own address in the guest (its loopback
    /// services); the rest of the network stays. Answered by [`Response::Done`].
    DenyHost,
    /// Send `signal` to the process of the running [`Request::Run`] whose `run_id` is `run`
    /// (the process itself; it is PID 1 of its namespace, so only signals it handles, and
    /// SIGKILL, reach it, as in Docker). Answered by
    /// [`Response::Done`], or an error when no such process runs.
    Signal { run: u32, signal: i32 },
    /// Wait until the process of [`Request::Run`] `run` has started (or has already ended, or
    /// failed to start); answered by [`Response::Started`]. Signals and resizes sent after it
    /// reach the process.
    WaitStarted { run: u32 },
    /// Set the window size of the terminal of the running [`Request::Run`] `run` (the process
    /// gets SIGWINCH from the kernel). Answered by [`Response::Done`].
    Resize { run: u32, rows: u16, cols: u16 },
}

/// How to run one process inside the guest. Its `Debug` shows the environment's names only and
/// secret mounts' sizes only: values may be secrets (`RUN --mount=type=secret,env=`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The root filesystem the process sees (usually an overlay mount point).
    pub rootfs: String,
    /// argv[0] is resolved against `PATH` from `env` when it has no slash.
    pub argv: Vec<String>,
    /// `KEY=VALUE` strings: the whole environment, nothing is inherited from the agent.
    pub env: Vec<String>,
    /// Working directory inside `rootfs`; created if absent.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// Data stream for the process's stdout (guest to host).
    pub stdout_stream: u32,
    /// Data stream for the process's stderr (guest to host).
    pub stderr_stream: u32,
    /// Mounts for this process only, applied in order after `/proc`, `/dev` and `/sys`. File
    /// and secret contents travel inside this request, which must fit one frame
    /// ([`crate::MAX_PAYLOAD`], 256 KiB of JSON; base64 adds a third): larger contents fail
    /// the call on the host side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<RunMount>,
    /// Files placed for this process only, outside the image (see [`RunFile`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<RunFile>,
    /// The process's network (`RUN --network`).
    #[serde(default)]
    pub network: Network,
    /// Data stream for the process's stdin (host to guest; its end closes stdin). Without
    /// it, stdin is `/dev/null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_stream: Option<u32>,
    /// Give the process a pseudo-terminal of this size as stdin, stdout and stderr (and
    /// controlling terminal): its output, both streams', arrives on `stdout_stream`, the
    /// `stderr_stream` ends empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    /// The id that [`Request::Signal`] and [`Request::Resize`] name this process by (chosen
    /// by the host, unique per connection). Without it the process cannot be signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u32>,
    /// Run the process inside the running process `join` (a `run_id`): its root, mount, pid,
    /// uts, ipc and network namespaces (`kiln exec`). `rootfs`, `mounts`, `files`, `network`
    /// and `hostname` are then ignored: the process sees what that one sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<u32>,
    /// Mount the root filesystem read-only for this process (its mounts stay as they are).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly_root: bool,
    /// Run a small init as the pid namespace's process 1 (`--init`): it starts the process,
    /// forwards it the signals it gets, reaps orphans and exits with the process's status.
    /// Ignored with `join`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

/// What fills an empty share before it is mounted ([`Request::MountShare`]): the directory
/// `path` (a path inside the root filesystem mounted at `root`, resolved beneath it as the
/// container would see it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyUp {
    pub root: String,
    pub path: String,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// Which network a process sees. Either way it gets its own `/etc/hosts` and
/// `/etc/resolv.conf` (bind-mounted over the image's, or on stubs that are removed again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The guest's network (`--network=default|host`): the host's user-mode NAT when the VM
    /// has a network device, else loopback only.
    #[default]
    Guest,
    /// A network namespace of its own with only `lo` (`--network=none`).
    None,
}

/// A mount that exists for one process only (`RUN --mount`).
///
/// `target` is an absolute path inside the process's root. It is resolved inside `rootfs`
/// (symlinks included, as if `rootfs` were `/`: nothing can lead outside it) and must not lie
/// under `/proc`, `/dev` or `/sys`. Missing directories on the way and a missing target are
/// created as mount points and removed again after the process if they are still empty, so
/// they never reach a layer. Nothing written under the mount reaches the overlay upper dir.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunMount {
    /// A fresh tmpfs (`RUN --mount=type=tmpfs`), mode 1777, mounted `nosuid`.
    Tmpfs {
        target: String,
        /// Size limit in bytes; the kernel's default (half the guest's RAM) when absent or 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_bytes: Option<u64>,
    },
    /// A recursive bind mount of guest path `source` (a directory or a file, outside the
    /// rootfs, e.g. a cache directory or another stage's root). With `readonly` the process
    /// cannot write through it; otherwise its writes land in `source`.
    Bind {
        target: String,
        source: String,
        #[serde(default)]
        readonly: bool,
    },
    /// A file holding `data` (`RUN --mount=type=secret`), read-only and `nosuid,nodev,noexec`,
    /// kept in a tmpfs private to the process. A missing target becomes an empty file.
    Secret {
        target: String,
        #[serde(with = "crate::base64")]
        data: Vec<u8>,
        /// Permission bits (`& 0o7777`).
        mode: u32,
        #[serde(default)]
        uid: u32,
        #[serde(default)]
        gid: u32,
    },
}

/// Prints `KEY=…` for each `KEY=VALUE` of an environment: the values may be secrets.
pub struct EnvNames<'a>(pub &'a [String]);

impl std::fmt::Debug for EnvNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|e| format!("{}=…", e.split('=').next().unwrap_or_default()))).finish()
    }
}

impl std::fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSpec")
            .field("rootfs", &self.rootfs)
            .field("argv", &self.argv)
            .field("env", &EnvNames(&self.env))
            .field("cwd", &self.cwd)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("additional_gids", &self.additional_gids)
            .field("hostname", &self.hostname)
            .field("stdout_stream", &self.stdout_stream)
            .field("stderr_stream", &self.stderr_stream)
            .field("mounts", &self.mounts)
            .field("files", &self.files)
            .field("network", &self.network)
            .field("stdin_stream", &self.stdin_stream)
            .field("tty", &self.tty)
            .field("run_id", &self.run_id)
            .field("join", &self.join)
            .field("readonly_root", &self.readonly_root)
            .finish_non_exhaustive()
    }
}

/// A secret's bytes never print: only how many there are.
impl std::fmt::Debug for RunMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunMount::Tmpfs { target, size_bytes } => f.debug_struct("Tmpfs").field("target", target).field("size_bytes", size_bytes).finish(),
            RunMount::Bind { target, source, readonly } => {
                f.debug_struct("Bind").field("target", target).field("source", source).field("readonly", readonly).finish()
            }
            RunMount::Secret { target, data, mode, uid, gid } => f
                .debug_struct("Secret")
                .field("target", target)
                .field("data", &format_args!("<{} bytes>", data.len()))
                .field("mode", mode)
                .field("uid", uid)
                .field("gid", gid)
                .finish(),
        }
    }
}

impl RunMount {
    pub fn target(&self) -> &str {
        match self {
            RunMount::Tmpfs { target, .. }
            | RunMount::Bind { target, .. }
            | RunMount::Secret { target, .. } => target,
        }
    }
}

/// A regular file created for one process only, e.g. BuildKit's `/dev/pipes/EOF` for a
/// `RUN <<EOF` script with a shebang. `path` is absolute and lies strictly below `/dev/` or
/// below the target of a [`RunMount::Tmpfs`] of the same [`RunSpec`], so the file lives in a
/// tmpfs and never in a layer. Missing parent directories are created (mode 0755, root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFile {
    pub path: String,
    #[serde(with = "crate::base64")]
    pub data: Vec<u8>,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// The agent's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Hello {
        version: u32,
        /// `uname -r` of the guest kernel.
        kernel: String,
        /// Identifies the agent binary (crate version + build hash).
        agent_build_id: String,
    },
    /// The request was carried out.
    Done,
    TarReceived { entries: u64 },
    /// The process ended: `code` if it exited, `signal` if a signal killed it.
    Exited { code: Option<i32>, signal: Option<i32> },
    Diffed { entries: u64 },
    /// Answer to [`Request::WaitStarted`]: the process's pid in the guest, or `None` when it
    /// already ended or never started (its `Run` answers why).
    Started { pid: Option<i32> },
    /// Answer to [`Request::ForwardAccept`]: a connection came and is being pumped, or the
    /// socket was closed.
    Accepted { connected: bool },
    /// The request failed; the agent goes on serving.
    Error { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_json() {
        let reqs = vec![
            Request::Hello { versions: vec![1], entropy: None, now_ns: None },
            Request::Hello { versions: vec![5], entropy: Some("AAEC".into()), now_ns: Some(1_700_000_000_000_000_000) },
            Request::MountOverlay {
                lowers: vec!["/a".into(), "/b".into()],
                upper: "/u".into(),
                work: "/w".into(),
                target: "/t".into(),
            },
            Request::Run(RunSpec {
                argv: vec!["/bin/sh".into(), "-c".into(), "echo \u{0}bin\"ary".into()],
                env: vec!["PATH=/bin".into()],
                uid: 0,
                gid: 0,
                network: Network::None,
                ..run_spec()
            }),
            Request::ForwardListen { path: "/run/kiln/ssh/1/agent.sock".into(), mode: 0o600, uid: 0, gid: 0 },
            Request::ForwardAccept { path: "/run/kiln/ssh/1/agent.sock".into(), to_guest: 7, from_guest: 8 },
            Request::ForwardClose { path: "/run/kiln/ssh/1/agent.sock".into() },
            Request::PowerOff,
            Request::Ping,
            Request::DenyHost,
            Request::Run(RunSpec { stdin_stream: Some(9), tty: Some(TtySize { rows: 24, cols: 80 }), run_id: Some(3), ..run_spec() }),
            Request::Signal { run: 3, signal: 2 },
            Request::WaitStarted { run: 3 },
            Request::ConnectTcp { port: 80, to_guest: 5, from_guest: 6 },
            Request::MountShare { tag: "kiln0".into(), target: "/run/kiln/share/0".into(), readonly: true, copy_up: None, virtiofs: true },
            Request::MountShare { tag: "kiln1".into(), target: "/run/kiln/share/1".into(), readonly: false, copy_up: Some(CopyUp { root: "/run/kiln/root".into(), path: "/data".into() }), virtiofs: false },
            Request::ConnectUdp { port: 53, to_guest: 7, from_guest: 8 },
            Request::Run(RunSpec { init: true, ..run_spec() }),
            Request::Resize { run: 3, rows: 50, cols: 132 },
        ];
        for r in reqs {
            let json = serde_json::to_vec(&r).expect("encode");
            let back: Request = serde_json::from_slice(&json).expect("decode");
            assert_eq!(back, r);
        }
        let text = serde_json::to_string(&Request::PowerOff).expect("encode");
        assert_eq!(text, r#"{"op":"power_off"}"#);
    }

    #[test]
    fn secrets_never_print_through_debug() {
        let spec = RunSpec {
            env: vec!["PATH=/bin".into(), "TOKEN=s3cr3t-env".into()],
            mounts: vec![RunMount::Secret { target: "/run/secrets/t".into(), data: b"s3cr3t-file".to_vec(), mode: 0o400, uid: 0, gid: 0 }],
            ..run_spec()
        };
        let shown = format!("{:?}", Request::Run(spec.clone()));
        assert!(!shown.contains("s3cr3t") && shown.contains("TOKEN=…") && shown.contains("<11 bytes>"), "{shown}");
        let frame = crate::frame::Frame { kind: crate::frame::FrameKind::Data, stream: 3, payload: serde_json::to_vec(&spec).expect("json") };
        assert!(!format!("{frame:?}").contains("s3cr3t"), "{frame:?}");
    }

    fn run_spec() -> RunSpec {
        RunSpec {
            rootfs: "/t".into(),
            argv: vec!["/dev/pipes/EOF".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
            hostname: "kiln".into(),
            stdout_stream: 3,
            stderr_stream: 4,
            stdin_stream: None,
            tty: None,
            run_id: None,
            join: None,
            readonly_root: false,
            init: false,
            mounts: vec![],
            files: vec![],
            network: Network::Guest,
        }
    }

    #[test]
    fn run_mounts_and_files_round_trip_with_binary_data() {
        let mut spec = run_spec();
        spec.mounts = vec![
            RunMount::Tmpfs {
                target: "/tmp/t".into(),
                size_bytes: Some(1 << 20),
            },
            RunMount::Tmpfs {
                target: "/tmp/u".into(),
                size_bytes: None,
            },
            RunMount::Bind {
                target: "/root/.cache".into(),
                source: "/run/kiln/cache/3".into(),
                readonly: false,
            },
            RunMount::Secret {
                target: "/run/secrets/x".into(),
                data: vec![0, 255, b'"', b'\\', 10],
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        ];
        spec.files = vec![RunFile {
            path: "/dev/pipes/EOF".into(),
            data: b"#!/bin/sh\necho hi\n".to_vec(),
            mode: 0o755,
            uid: 1000,
            gid: 1000,
        }];
        let req = Request::Run(spec);
        let json = serde_json::to_string(&req).expect("encode");
        assert!(json.contains(r#""type":"secret""#), "{json}");
        assert!(json.contains(r#""data":"AP8iXAo=""#), "binary data is base64: {json}");
        assert!(!json.contains("size_bytes\":null"), "{json}");
        let back: Request = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, req);
        assert_eq!(
            RunMount::Bind {
                target: "/a".into(),
                source: "/b".into(),
                readonly: true
            }
            .target(),
            "/a"
        );
    }

    #[test]
    fn run_spec_without_mounts_or_files_keeps_the_old_encoding() {
        let json = serde_json::to_string(&Request::Run(run_spec())).expect("encode");
        assert!(!json.contains("mounts") && !json.contains("files"), "{json}");
        let old = r#"{"op":"run","rootfs":"/t","argv":["sh"],"env":[],"cwd":"/","uid":0,"gid":0,
            "hostname":"h","stdout_stream":1,"stderr_stream":2}"#;
        let Request::Run(spec) = serde_json::from_str(old).expect("decode") else {
            panic!("not a run");
        };
        assert!(spec.mounts.is_empty() && spec.files.is_empty());
        let bad = r#"{"path":"/dev/x","data":"not base64!","mode":420}"#;
        assert!(serde_json::from_str::<RunFile>(bad).is_err());
    }
}
