//! The vsock muxer against a driver-side queue pair and real Unix sockets.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::virtio::test_driver::Driver;

const CID: u64 = 3;
const RXBUF: u64 = 0x10_0000;
const TXBUF: u64 = 0x20_0000;

struct Guest<'a> {
    mem: &'a GuestMemoryMmap,
    rx: Driver<'a>,
    tx: Driver<'a>,
    rxq: Queue,
    txq: Queue,
    rx_seen: u16,
    tx_slot: u16,
}

impl<'a> Guest<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        let rx = Driver::new(mem, 0x1000, 16);
        let tx = Driver::new(mem, 0x4000, 16);
        let (rxq, txq) = (rx.queue(), tx.queue());
        // Post 16 rx buffers of 4 KiB, one descriptor each.
        for i in 0..16u16 {
            rx.push(i, &[(RXBUF + u64::from(i) * 0x1000, 0x1000, true)]);
        }
        Guest { mem, rx, tx, rxq, txq, rx_seen: 0, tx_slot: 0 }
    }

    fn send(&mut self, m: &mut Muxer, h: Header, payload: &[u8]) {
        let slot = self.tx_slot % 16;
        self.tx_slot += 1;
        let addr = TXBUF + u64::from(slot) * 0x2_0000;
        self.mem.write_slice(&h.to_bytes(), GuestAddress(addr)).unwrap();
        self.mem.write_slice(payload, GuestAddress(addr + HDR_LEN as u64)).unwrap();
        self.tx.push(slot, &[(addr, (HDR_LEN + payload.len()) as u32, false)]);
        m.process_tx(self.mem, &mut self.txq).unwrap();
    }

    fn send_raw(&mut self, m: &mut Muxer, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(TXBUF)).unwrap();
        self.tx.push(0, &[(TXBUF, bytes.len() as u32, false)]);
        m.process_tx(self.mem, &mut self.txq).unwrap();
    }

    /// Packets the device delivered since the last call (re-posting their buffers).
    fn receive(&mut self, m: &mut Muxer) -> Vec<(Header, Vec<u8>)> {
        m.fill_rx(self.mem, &mut self.rxq).unwrap();
        let mut out = Vec::new();
        while self.rx_seen != self.rx.used_idx() {
            let (id, len) = self.rx.used_elem(self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let addr = RXBUF + u64::from(id) * 0x1000;
            let mut hdr = [0u8; HDR_LEN];
            self.mem.read_slice(&mut hdr, GuestAddress(addr)).unwrap();
            let h = Header::from_bytes(&hdr);
            let mut payload = vec![0u8; len as usize - HDR_LEN];
            self.mem.read_slice(&mut payload, GuestAddress(addr + HDR_LEN as u64)).unwrap();
            out.push((h, payload));
            self.rx.make_available(id as u16);
        }
        out
    }
}

fn pkt(src_port: u32, dst_port: u32, op: u16, len: u32) -> Header {
    Header { src_cid: CID, dst_cid: HOST_CID, src_port, dst_port, len, type_: TYPE_STREAM, op, flags: 0, buf_alloc: 65536, fwd_cnt: 0 }
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, GuestMemoryMmap) {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
    (dir, uds, mem)
}

/// Polls until `cond` holds (bounded).
fn poll_until(m: &mut Muxer, mut cond: impl FnMut(&Muxer) -> bool) {
    let start = Instant::now();
    while !cond(m) {
        assert!(start.elapsed() < Duration::from_secs(5), "timed out waiting for the muxer");
        m.poll(50).unwrap();
    }
}

#[test]
fn guest_connects_to_a_host_port_and_bytes_flow_both_ways() {
    let (_dir, uds, mem) = setup();
    let host = UnixListener::bind(format!("{}_52", uds.display())).unwrap();
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut g = Guest::new(&mem);

    g.send(&mut m, pkt(1024, 52, op::REQUEST, 0), &[]);
    let (mut conn, _) = host.accept().unwrap();
    let got = g.receive(&mut m);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.op, got[0].0.src_port, got[0].0.dst_port, got[0].0.dst_cid), (op::RESPONSE, 52, 1024, CID));

    g.send(&mut m, pkt(1024, 52, op::RW, 4), b"ping");
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    conn.write_all(b"pong").unwrap();
    poll_until(&mut m, |m| m.has_rx_work());
    let got = g.receive(&mut m);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.op, got[0].0.len, got[0].1.as_slice()), (op::RW, 4, &b"pong"[..]));

    // Host closes: the guest is told the host sends no more.
    drop(conn);
    poll_until(&mut m, |m| m.has_rx_work());
    let got = g.receive(&mut m);
    assert_eq!((got[0].0.op, got[0].0.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
    // Guest closes fully: the device answers RST and forgets the connection.
    let mut sd = pkt(1024, 52, op::SHUTDOWN, 0);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(&mut m, sd, &[]);
    let got = g.receive(&mut m);
    assert_eq!(got[0].0.op, op::RST);
    assert_eq!(m.connection_count(), 0);
    assert_eq!(m.errors, 0, "{:?}", m.last_error);
}

#[test]
fn host_connects_with_connect_line_and_gets_ok_after_the_guest_accepts() {
    let (_dir, uds, mem) = setup();
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut g = Guest::new(&mem);

    let mut host = UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 1234\n").unwrap();
    poll_until(&mut m, |m| m.has_rx_work());
    let got = g.receive(&mut m);
    let req = got[0].0;
    assert_eq!((req.op, req.dst_port, req.dst_cid, req.src_cid), (op::REQUEST, 1234, CID, HOST_CID));

    g.send(&mut m, pkt(1234, req.src_port, op::RESPONSE, 0), &[]);
    let mut line = [0u8; 64];
    let n = host.read(&mut line).unwrap();
    assert_eq!(std::str::from_utf8(&line[..n]).unwrap(), format!("OK {}\n", req.src_port));

    g.send(&mut m, pkt(1234, req.src_port, op::RW, 5), b"hello");
    let mut buf = [0u8; 5];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(m.errors, 0, "{:?}", m.last_error);
}

#[test]
fn host_connect_refused_by_guest_closes_the_host_stream() {
    let (_dir, uds, mem) = setup();
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut g = Guest::new(&mem);
    let mut host = UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 9\n").unwrap();
    poll_until(&mut m, |m| m.has_rx_work());
    let req = g.receive(&mut m)[0].0;
    g.send(&mut m, pkt(9, req.src_port, op::RST, 0), &[]);
    let mut buf = [0u8; 8];
    assert_eq!(host.read(&mut buf).unwrap(), 0, "closed without OK");
}

#[test]
fn malformed_input_is_counted_or_reset_never_a_panic() {
    let (_dir, uds, mem) = setup();
    let _host = UnixListener::bind(format!("{}_52", uds.display())).unwrap();
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut g = Guest::new(&mem);

    // Shorter than a header.
    g.send_raw(&mut m, &[1, 2, 3]);
    assert_eq!(m.errors, 1);
    // Data for a connection that does not exist: RST.
    g.send(&mut m, pkt(7, 52, op::RW, 1), b"x");
    assert_eq!(g.receive(&mut m)[0].0.op, op::RST);
    // A connection to a port nobody listens on: RST.
    g.send(&mut m, pkt(8, 53, op::REQUEST, 0), &[]);
    assert_eq!(g.receive(&mut m)[0].0.op, op::RST);
    // RW claiming more payload than the buffer carries: RST of that connection.
    g.send(&mut m, pkt(1024, 52, op::REQUEST, 0), &[]);
    assert_eq!(g.receive(&mut m)[0].0.op, op::RESPONSE);
    g.send(&mut m, pkt(1024, 52, op::RW, 1000), b"short");
    assert_eq!(g.receive(&mut m)[0].0.op, op::RST);
    assert_eq!(m.connection_count(), 0);
    // Oversize payload claim: RST.
    g.send(&mut m, pkt(1025, 52, op::REQUEST, 0), &[]);
    g.receive(&mut m);
    g.send(&mut m, pkt(1025, 52, op::RW, MAX_PKT_PAYLOAD + 1), b"");
    assert_eq!(g.receive(&mut m)[0].0.op, op::RST);
    // Wrong cids are dropped.
    let mut h = pkt(1, 52, op::REQUEST, 0);
    h.src_cid = 99;
    g.send(&mut m, h, &[]);
    assert!(g.receive(&mut m).is_empty());
    // A garbage CONNECT line closes that host stream.
    let mut bad = UnixStream::connect(&uds).unwrap();
    bad.write_all(b"HELLO\n").unwrap();
    let before = m.errors;
    poll_until(&mut m, |m| m.errors > before);
    let mut buf = [0u8; 4];
    assert_eq!(bad.read(&mut buf).unwrap(), 0);
}

#[test]
fn a_slow_host_reader_backpressures_the_guest_instead_of_resetting() {
    let (_dir, uds, mem) = setup();
    let host = UnixListener::bind(format!("{}_52", uds.display())).unwrap();
    let mut m = Muxer::new(CID, &uds).unwrap();
    let mut g = Guest::new(&mem);
    g.send(&mut m, pkt(1024, 52, op::REQUEST, 0), &[]);
    let (mut conn, _) = host.accept().unwrap();
    // Fill the socket and the muxer's buffer while the host does not read.
    let chunk = vec![0x33u8; MAX_PKT_PAYLOAD as usize];
    let mut sent = 0usize;
    for _ in 0..16 {
        g.send(&mut m, pkt(1024, 52, op::RW, MAX_PKT_PAYLOAD), &chunk);
        sent += chunk.len();
    }
    let consumed = g.tx.used_idx();
    assert!(consumed < 17, "some packets wait in the ring");
    assert_eq!(m.connection_count(), 1, "no reset: {:?}", m.last_error);
    // The host reads everything; the muxer drains and takes the rest of the ring.
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; sent];
        conn.read_exact(&mut buf).unwrap();
        buf.iter().all(|b| *b == 0x33)
    });
    let start = Instant::now();
    while g.tx.used_idx() != 17 {
        assert!(start.elapsed() < Duration::from_secs(5), "ring never drained");
        m.poll(20).unwrap();
        m.process_tx(&mem, &mut g.txq).unwrap();
    }
    while !reader.is_finished() {
        assert!(start.elapsed() < Duration::from_secs(5), "host never got everything");
        m.poll(20).unwrap();
    }
    assert!(reader.join().unwrap());
    assert_eq!(m.errors, 0, "{:?}", m.last_error);
}
