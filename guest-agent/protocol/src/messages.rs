//! Control messages: what the host asks of the agent and what the agent answers.
//!
//! Paths are guest paths chosen by the host; the agent trusts the host. The host never trusts
//! what comes back: every answer and every byte of a data stream is checked on arrival.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. The host offers the versions it knows in
/// [`Request::Hello`]; the agent answers with the highest one it shares, or an error.
pub const PROTOCOL_VERSION: u32 = 1;

/// A call from the host to the agent. Each is answered by exactly one [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First call on a connection: version negotiation.
    Hello { versions: Vec<u32> },
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
    /// Unmount `target` (recursively, with everything mounted below it).
    Unmount { target: String },
    /// Run a process; answered by [`Response::Exited`] after its output streams have ended.
    Run(RunSpec),
    /// Write an OCI layer tar of overlay upper dir `upper` to data stream `stream`
    /// (guest to host), overlayfs whiteouts turned back into OCI whiteouts. Answered by
    /// [`Response::Diffed`] after the stream's end. With `clamp_mtime`, no entry is dated
    /// later than that many seconds since the epoch (reproducible builds, SOURCE_DATE_EPOCH).
    Diff {
        upper: String,
        stream: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clamp_mtime: Option<i64>,
    },
    /// Sync filesystems and power the guest off. Answered before the power-off happens.
    PowerOff,
}

/// How to run one process inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The request failed; the agent goes on serving.
    Error { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_json() {
        let reqs = vec![
            Request::Hello { versions: vec![1] },
            Request::MountOverlay {
                lowers: vec!["/a".into(), "/b".into()],
                upper: "/u".into(),
                work: "/w".into(),
                target: "/t".into(),
            },
            Request::Run(RunSpec {
                rootfs: "/t".into(),
                argv: vec!["/bin/sh".into(), "-c".into(), "echo \u{0}bin\"ary".into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                uid: 0,
                gid: 0,
                additional_gids: vec![],
                hostname: "kiln".into(),
                stdout_stream: 3,
                stderr_stream: 4,
            }),
            Request::PowerOff,
        ];
        for r in reqs {
            let json = serde_json::to_vec(&r).expect("encode");
            let back: Request = serde_json::from_slice(&json).expect("decode");
            assert_eq!(back, r);
        }
        let text = serde_json::to_string(&Request::PowerOff).expect("encode");
        assert_eq!(text, r#"{"op":"power_off"}"#);
    }
}
