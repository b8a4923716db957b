//! Datagrams carried on a byte stream (`ConnectUdp`): each one is a big-endian `u16` length
//! followed by that many bytes, so the boundaries a UDP socket keeps survive the mux.
//!
//! Both sides use it; neither may trust the other's framing beyond "at most 65535 bytes".

use std::io::{self, Read, Write};

/// The largest datagram a frame can carry (the `u16` length's limit; IPv4 UDP allows 65507).
pub const MAX_DATAGRAM: usize = u16::MAX as usize;

/// Writes one datagram. A datagram longer than [`MAX_DATAGRAM`] is an `InvalidInput` error.
pub fn write_datagram(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let len = u16::try_from(data.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "datagram over 65535 bytes"))?;
    let mut frame = Vec::with_capacity(2 + data.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(data);
    w.write_all(&frame)?;
    w.flush()
}

/// Reads the next datagram into `buf` (which must hold [`MAX_DATAGRAM`] bytes) and returns
/// its length, or `None` at the stream's clean end. A stream that ends inside a datagram is
/// an `UnexpectedEof` error.
pub fn read_datagram(r: &mut impl Read, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut len = [0u8; 2];
    match r.read(&mut len[..1])? {
        0 => return Ok(None),
        _ => r.read_exact(&mut len[1..])?,
    }
    let len = usize::from(u16::from_be_bytes(len));
    let into = buf.get_mut(..len).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer smaller than the datagram"))?;
    r.read_exact(into)?;
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_keep_their_boundaries() {
        let mut wire = Vec::new();
        for d in [&b"one"[..], b"", &[7u8; 1000][..]] {
            write_datagram(&mut wire, d).expect("write");
        }
        let mut r = &wire[..];
        let mut buf = vec![0u8; MAX_DATAGRAM];
        assert_eq!(read_datagram(&mut r, &mut buf).expect("1"), Some(3));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(read_datagram(&mut r, &mut buf).expect("2"), Some(0));
        assert_eq!(read_datagram(&mut r, &mut buf).expect("3"), Some(1000));
        assert_eq!(read_datagram(&mut r, &mut buf).expect("end"), None);
        let mut cut = &wire[..4];
        assert!(read_datagram(&mut cut, &mut buf).is_err(), "a datagram cut short is an error");
        assert!(write_datagram(&mut Vec::new(), &vec![0u8; 70_000]).is_err());
    }
}
