//! Frame encoding: `len: u32 LE | stream: u32 LE | kind: u8 | payload[len]`.
//!
//! Every frame is bounded by [`MAX_PAYLOAD`] so a corrupt or hostile peer cannot make the reader
//! allocate without limit. Decoding never panics on bad input; it returns a [`FrameError`].

use std::io::{self, Read, Write};

/// Largest payload one frame may carry. Senders split larger data into several frames.
pub const MAX_PAYLOAD: usize = 256 * 1024;

const HEADER_LEN: usize = 9;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A JSON [`crate::Request`]; `stream` is the request id.
    Request = 1,
    /// A JSON [`crate::Response`]; `stream` is the id of the request it answers.
    Response = 2,
    /// Raw bytes on data stream `stream`.
    Data = 3,
    /// Data stream `stream` has ended cleanly (empty payload).
    End = 4,
}

impl FrameKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Request),
            2 => Some(Self::Response),
            3 => Some(Self::Data),
            4 => Some(Self::End),
            _ => None,
        }
    }
}

/// One unit on the wire. Its `Debug` shows the payload's size only: a payload may carry a
/// Run request's secrets or forwarded SSH agent bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.kind)
            .field("stream", &self.stream)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .finish()
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the byte stream between frames.
    #[error("connection closed")]
    Closed,
    /// The byte stream failed, or ended inside a frame.
    #[error("i/o error on the agent connection: {0}")]
    Io(#[from] io::Error),
    /// The header announced a payload larger than [`MAX_PAYLOAD`].
    #[error("frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// The header's kind byte is not a known [`FrameKind`].
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

/// The header of a frame whose `len` payload bytes follow it.
pub fn header(kind: FrameKind, stream: u32, len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    let mut h = [0u8; HEADER_LEN];
    // The length fits: it was just checked against MAX_PAYLOAD.
    h[..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..8].copy_from_slice(&stream.to_le_bytes());
    h[8] = kind as u8;
    Ok(h)
}

/// A frame's bytes, header and payload in one buffer (one copy of the payload, one write:
/// a guest under emulation pays for every copy and every write to its port).
pub fn encode(kind: FrameKind, stream: u32, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&header(kind, stream, payload.len())?);
    buf.extend_from_slice(payload);
    Ok(buf)
}

impl Frame {
    pub fn new(kind: FrameKind, stream: u32, payload: Vec<u8>) -> Self {
        Self { kind, stream, payload }
    }

    /// Writes the frame in one `write_all` of header + payload.
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), FrameError> {
        w.write_all(&encode(self.kind, self.stream, &self.payload)?)?;
        Ok(())
    }

    /// Reads one frame. A clean end of the byte stream before a header is [`FrameError::Closed`];
    /// an end inside a frame is an I/O error.
    pub fn read_from(r: &mut impl Read) -> Result<Self, FrameError> {
        let mut header = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match r.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Err(FrameError::Closed),
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let stream = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let kind = FrameKind::from_u8(header[8]).ok_or(FrameError::UnknownKind(header[8]))?;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Self { kind, stream, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binary_payload() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let frame = Frame::new(FrameKind::Data, 7, payload);
        let mut wire = Vec::new();
        frame.write_to(&mut wire).expect("write");
        let back = Frame::read_from(&mut wire.as_slice()).expect("read");
        assert_eq!(back, frame);
    }

    #[test]
    fn clean_eof_is_closed_and_torn_frame_is_io() {
        assert!(matches!(Frame::read_from(&mut &[][..]), Err(FrameError::Closed)));
        let mut wire = Vec::new();
        Frame::new(FrameKind::Data, 1, vec![1, 2, 3]).write_to(&mut wire).expect("write");
        wire.truncate(wire.len() - 1);
        assert!(matches!(Frame::read_from(&mut wire.as_slice()), Err(FrameError::Io(_))));
        assert!(matches!(Frame::read_from(&mut &wire[..4]), Err(FrameError::Io(_))));
    }

    #[test]
    fn hostile_headers_are_rejected_without_allocating() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&u32::MAX.to_le_bytes());
        wire.extend_from_slice(&1u32.to_le_bytes());
        wire.push(3);
        assert!(matches!(Frame::read_from(&mut wire.as_slice()), Err(FrameError::TooLarge(_))));
        wire[8] = 99;
        assert!(matches!(Frame::read_from(&mut wire.as_slice()), Err(FrameError::UnknownKind(99))));
    }

    #[test]
    fn oversize_payload_is_refused_on_write() {
        let frame = Frame::new(FrameKind::Data, 1, vec![0; MAX_PAYLOAD + 1]);
        assert!(matches!(frame.write_to(&mut Vec::new()), Err(FrameError::TooLarge(_))));
    }
}
