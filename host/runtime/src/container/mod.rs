//! Containers: each in its own microVM, owned by one host process (`kiln run` in the
//! foreground, or a supervisor — kiln re-executed — for a detached one).
//!
//! - [`record`]: the on-disk records under `$KILN_ROOT/containers/` (atomic, locked).
//! - [`create`]: a record from an image and `kiln run`'s flags.
//! - [`host`]: running one to its end in a VM (log, writable layer, exit).
//! - [`control`]: the private socket `kiln stop`/`kill`/`exec` reach a running one by.
//! - [`exec`]: a process in a running container, relayed over that socket.
//! - [`attach`]: clients joining the main process's output and input.
//! - [`logs`]: Docker's json-file log.
//! - [`ports`]: published ports, carried over the agent connection.
//! - [`volumes`]: host directories, named volumes and tmpfs mounts.
//! - [`commit`]: a container's writable layer as a new image.
//! - [`copy`]: `kiln cp` between a container and the host.

pub mod attach;
pub mod commit;
pub mod control;
pub mod copy;
pub mod create;
pub mod exec;
pub mod host;
pub mod logs;
pub mod names;
pub mod ports;
pub mod record;
pub mod udp;
pub mod volumes;

pub use record::{Container, ContainerConfig, ContainerState, Containers, Status};

/// A warning the runtime cannot return (it happens while cleaning up): one stderr line.
pub(crate) fn warn(message: &str) {
    eprintln!("kiln: warning: {message}");
}
