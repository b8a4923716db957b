//! The vsock device with its worker thread: activation, host connections offered to the
//! guest, interrupts, reset and re-activation, socket cleanup.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::packet::{op, Header, HDR_LEN};
use super::*;
use crate::virtio::test_driver::Driver;
use crate::virtio::INT_USED_RING;

fn activate<'a>(dev: &mut Vsock, mem: &'a Arc<GuestMemoryMmap>, irq: &Arc<Interrupt>, base: u64) -> Driver<'a> {
    let mem_ref: &'a GuestMemoryMmap = mem;
    let rx = Driver::new(mem_ref, base, 8);
    rx.push(0, &[(0x10_0000, 4096, true)]);
    let tx = Driver::new(mem_ref, base + 0x1000, 8);
    let ev = Driver::new(mem_ref, base + 0x2000, 8);
    dev.activate(Activation { mem: mem.clone(), queues: vec![rx.queue(), tx.queue(), ev.queue()], interrupt: irq.clone(), features: 0 })
        .unwrap();
    rx
}

fn wait_for_request(rx: &Driver<'_>, mem: &GuestMemoryMmap, port: u32) {
    let start = Instant::now();
    while rx.used_idx() == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no packet for the guest");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut hdr = [0u8; HDR_LEN];
    mem.read_slice(&mut hdr, GuestAddress(0x10_0000)).unwrap();
    let h = Header::from_bytes(&hdr);
    assert_eq!((h.op, h.dst_port, h.dst_cid), (op::REQUEST, port, 7));
}

#[test]
fn worker_offers_host_connections_interrupts_and_survives_reset() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap());
    let irqfd = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = Arc::new(Interrupt::new(Some(irqfd.try_clone().unwrap())));
    let mut dev = Vsock::new(7, &uds).unwrap();
    let mut cid = [0u8; 8];
    dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 7);
    assert!(matches!(dev.queue_notify(0), Err(VirtioError::NotActivated)));
    assert_eq!(dev.queue_eventfds().len(), 2);

    let rx = activate(&mut dev, &mem, &irq, 0x1000);
    let mut host = UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 77\n").unwrap();
    wait_for_request(&rx, &mem, 77);
    assert_ne!(irq.status() & INT_USED_RING, 0);
    assert!(irqfd.read().unwrap() >= 1, "irqfd signalled");
    assert!(matches!(dev.queue_notify(9), Err(VirtioError::NoSuchQueue(9))));

    // The driver resets the device; the host's pending connection is forgotten, the
    // listener stays, and a new activation serves new connections.
    dev.reset();
    assert!(dev.worker_error.is_none(), "{:?}", dev.worker_error);
    irq.ack(u32::MAX);
    let rx = activate(&mut dev, &mem, &irq, 0x8000);
    let mut host2 = UnixStream::connect(&uds).unwrap();
    host2.write_all(b"CONNECT 78\n").unwrap();
    wait_for_request(&rx, &mem, 78);

    drop(dev);
    assert!(!uds.exists(), "socket removed with the device");
}

#[test]
fn client_retries_until_the_guest_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap());
    let irq = Arc::new(Interrupt::new(None));
    let mut dev = Vsock::new(7, &uds).unwrap();
    let mem_ref: &GuestMemoryMmap = &mem;
    let rx = Driver::new(mem_ref, 0x1000, 8);
    for i in 0..8u16 {
        rx.push(i, &[(0x10_0000 + u64::from(i) * 0x1000, 4096, true)]);
    }
    let tx = Driver::new(mem_ref, 0x2000, 8);
    let ev = Driver::new(mem_ref, 0x3000, 8);
    dev.activate(Activation { mem: mem.clone(), queues: vec![rx.queue(), tx.queue(), ev.queue()], interrupt: irq, features: 0 }).unwrap();

    let path = uds.clone();
    let client = std::thread::spawn(move || client::connect_guest_port(&path, 1024, Duration::from_secs(5), &|| true));
    // The "guest" refuses the first request (not listening yet), accepts the second.
    for (n, answer) in [op::RST, op::RESPONSE].into_iter().enumerate() {
        let seen = n as u16;
        let start = Instant::now();
        while rx.used_idx() == seen {
            assert!(start.elapsed() < Duration::from_secs(5), "no request");
            std::thread::sleep(Duration::from_millis(2));
        }
        let (id, _) = rx.used_elem(seen);
        let mut hdr = [0u8; HDR_LEN];
        mem.read_slice(&mut hdr, GuestAddress(0x10_0000 + u64::from(id) * 0x1000)).unwrap();
        let req = Header::from_bytes(&hdr);
        assert_eq!((req.op, req.dst_port), (op::REQUEST, 1024));
        rx.make_available(id as u16);
        let reply = Header { src_cid: 7, dst_cid: 2, src_port: 1024, dst_port: req.src_port, op: answer, type_: 1, ..Default::default() };
        let at = 0x20_0000 + n as u64 * 0x1000;
        mem.write_slice(&reply.to_bytes(), GuestAddress(at)).unwrap();
        tx.push(n as u16, &[(at, HDR_LEN as u32, false)]);
        dev.queue_notify(1).unwrap();
        dev.queue_notify(0).unwrap();
    }
    let stream = client.join().unwrap().expect("connected on the second attempt");
    drop(stream);

    // A guest that never answers: the deadline, with the reason.
    let path = uds.clone();
    let err = client::connect_guest_port(&path, 5, Duration::from_millis(200), &|| false).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err}");
}
