//! The wire protocol spoken between the kiln host and the guest agent.
//!
//! One ordered byte stream (a virtio-serial port, a vsock connection, a Unix socket) carries
//! length-prefixed [frames](frame). Control messages ([`Request`], [`Response`]) are JSON inside
//! frames; bulk data (tar streams, process output) travels as `Data` frames on numbered streams,
//! so a long tar upload never blocks a control reply and stdout never blocks stderr. [`mux::Mux`]
//! does the multiplexing for both ends.
//!
//! This crate must stay free of anything host- or guest-specific: both sides link it.

pub mod base64;
pub mod datagram;
pub mod duplex;
pub mod frame;
pub mod messages;
pub mod mux;
pub mod signal;

pub use frame::{Frame, FrameError, FrameKind, MAX_PAYLOAD};
pub use messages::{CopyUp, Network, Request, Response, RunFile, RunMount, RunSpec, TtySize, PROTOCOL_VERSION};
pub use mux::{Mux, MuxError, PendingCall, Role, StreamReader, StreamWriter};
