//! Errors of the sandbox layer, each naming the cause and, where there is one, the fix.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{arch} guest kernel not found (looked in {looked}); build it with `KILN_GUEST_ARCH={arch} images/build.sh` or set KILN_GUEST_DIR")]
    GuestMissing { looked: String, arch: &'static str },
    #[error("{0} not found on PATH: install QEMU ({hint}) or set KILN_QEMU", hint = crate::accel::HostOs::current().qemu_install_hint())]
    QemuMissing(String),
    #[error("QEMU exited before the guest agent answered ({status}){detail}")]
    QemuDied { status: String, detail: String },
    #[error("the guest agent did not answer within {secs} s{detail}")]
    AgentTimeout { secs: u64, detail: String },
    #[error("guest agent: {0}")]
    Agent(String),
    #[error("{0}")]
    BackendUnusable(String),
    #[error("agent connection: {0}")]
    Connection(#[from] kiln_protocol::MuxError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("incompatible guest agent: {0}")]
    Incompatible(String),
    #[error("invalid setting {name}={value:?}: {why}")]
    BadSetting { name: &'static str, value: String, why: &'static str },
    #[error("cannot use {0}: {1}")]
    BadPath(PathBuf, String),
    #[error("VM snapshot: {0}")]
    Snapshot(String),
}

impl SandboxError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}
