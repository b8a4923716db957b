//! virtio-blk against virtio-queue's mock driver: good requests, wrap-around, malformed and
//! oversize chains (which must complete with an error status, never panic).

use std::io::Write as _;
use std::os::unix::fs::FileExt as _;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::virtio::test_driver::{Buf, Driver};

const MEM: usize = 16 << 20;
const QUEUE: u64 = 0x1000;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

fn desc(addr: u64, len: u32, write: bool) -> Buf {
    (addr, len, write)
}
struct Fixture {
    mem: Arc<GuestMemoryMmap>,
    disk: tempfile::NamedTempFile,
    interrupt: Arc<Interrupt>,
}

fn fixture(sectors: u64) -> Fixture {
    let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap());
    let mut disk = tempfile::NamedTempFile::new().unwrap();
    let content: Vec<u8> = (0..sectors * SECTOR_SIZE).map(|i| (i / SECTOR_SIZE) as u8).collect();
    disk.write_all(&content).unwrap();
    Fixture { mem, disk, interrupt: Arc::new(Interrupt::new(None)) }
}

fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
    mem.write_obj(kind, GuestAddress(HDR)).unwrap();
    mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
    mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
}

fn activate(f: &Fixture, q: &Driver<'_>, read_only: bool) -> Block {
    let mut blk = Block::open(f.disk.path(), read_only, "kiln-test-disk").unwrap();
    let queue = q.queue();
    blk.activate(Activation { mem: f.mem.clone(), queues: vec![queue], interrupt: f.interrupt.clone(), features: 0 }).unwrap();
    blk
}

fn used(q: &Driver<'_>, i: u16) -> (u32, u32) {
    q.used_elem(i)
}

#[test]
fn reads_writes_and_identifies() {
    let f = fixture(8);
    let q = Driver::new(&f.mem, QUEUE, 16);
    let mut blk = activate(&f, &q, false);
    assert_eq!(blk.features() & VIRTIO_BLK_F_RO, 0);
    let mut cap = [0u8; 8];
    blk.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);

    // Read sectors 2..4 into two data buffers.
    header(&f.mem, T_IN, 2);
    q.push(0, &[desc(HDR, 16, false), desc(DATA, 512, true), desc(DATA + 512, 512, true), desc(STATUS, 1, true)]);
    blk.queue_notify(0).unwrap();
    assert_eq!(used(&q, 0), (0, 1025));
    assert_eq!(f.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
    assert_eq!(f.mem.read_obj::<u8>(GuestAddress(DATA)).unwrap(), 2);
    assert_eq!(f.mem.read_obj::<u8>(GuestAddress(DATA + 1023)).unwrap(), 3);
    assert_ne!(f.interrupt.status() & crate::virtio::INT_USED_RING, 0);

    // Write sector 5.
    header(&f.mem, T_OUT, 5);
    f.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    q.push(4, &[desc(HDR, 16, false), desc(DATA, 512, false), desc(STATUS, 1, true)]);
    blk.queue_notify(0).unwrap();
    assert_eq!(used(&q, 1), (4, 1));
    let mut back = [0u8; 512];
    f.disk.as_file().read_exact_at(&mut back, 5 * 512).unwrap();
    assert_eq!(back, [0xab; 512]);

    // Flush and get-id.
    header(&f.mem, T_GET_ID, 0);
    q.push(7, &[desc(HDR, 16, false), desc(DATA, 20, true), desc(STATUS, 1, true)]);
    blk.queue_notify(0).unwrap();
    assert_eq!(used(&q, 2), (7, 21));
    let mut id = [0u8; 14];
    f.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"kiln-test-disk");
    assert_eq!(blk.failed_requests, 0, "{:?}", blk.last_request_error);
}

fn status_after(f: &Fixture, blk: &mut Block) -> u8 {
    f.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    blk.queue_notify(0).unwrap();
    f.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap()
}

#[test]
fn bad_requests_complete_with_an_error_status() {
    let f = fixture(4);
    let q = Driver::new(&f.mem, QUEUE, 16);
    let mut blk = activate(&f, &q, true);
    let push = |descs: &[Buf]| {
        // Each request completes before the next, so table entries can be reused.
        q.push(0, descs);
    };

    // Read past the end of the disk.
    header(&f.mem, T_IN, 3);
    push(&[desc(HDR, 16, false), desc(DATA, 1024, true), desc(STATUS, 1, true)]);
    assert_eq!(status_after(&f, &mut blk), S_IOERR);
    // Sector number that overflows when multiplied by 512.
    header(&f.mem, T_IN, u64::MAX / 2);
    push(&[desc(HDR, 16, false), desc(DATA, 512, true), desc(STATUS, 1, true)]);
    assert_eq!(status_after(&f, &mut blk), S_IOERR);
    // Not a whole sector.
    header(&f.mem, T_IN, 0);
    push(&[desc(HDR, 16, false), desc(DATA, 100, true), desc(STATUS, 1, true)]);
    assert_eq!(status_after(&f, &mut blk), S_IOERR);
    // Write to a read-only disk.
    header(&f.mem, T_OUT, 0);
    push(&[desc(HDR, 16, false), desc(DATA, 512, false), desc(STATUS, 1, true)]);
    assert_eq!(status_after(&f, &mut blk), S_IOERR);
    // Unknown request type.
    header(&f.mem, 77, 0);
    push(&[desc(HDR, 16, false), desc(STATUS, 1, true)]);
    assert_eq!(status_after(&f, &mut blk), S_UNSUPP);
    // Short header.
    push(&[desc(HDR, 8, false), desc(STATUS, 1, true)]);
    assert_eq!(status_after(&f, &mut blk), S_IOERR);
    // No writable status byte at all: completed with length 0.
    header(&f.mem, T_IN, 0);
    push(&[desc(HDR, 16, false)]);
    blk.queue_notify(0).unwrap();
    // Oversize buffer reaching past guest memory.
    push(&[desc(HDR, 16, false), desc(MEM as u64 - 512, 0x10_0000, true), desc(STATUS, 1, true)]);
    blk.queue_notify(0).unwrap();

    assert_eq!(blk.failed_requests, 8, "{:?}", blk.last_request_error);
    assert_eq!(q.used_idx(), 8, "every request completed");
}

#[test]
fn processes_requests_across_the_index_wrap() {
    let f = fixture(4);
    let q = Driver::new(&f.mem, QUEUE, 4);
    // Start both rings just below the u16 wrap of their free-running indexes.
    q.set_avail_idx(u16::MAX - 1);
    q.set_used_idx(u16::MAX - 1);
    let mut queue = q.queue();
    queue.set_next_avail(u16::MAX - 1);
    queue.set_next_used(u16::MAX - 1);
    let mut blk = Block::open(f.disk.path(), false, "x").unwrap();
    blk.activate(Activation { mem: f.mem.clone(), queues: vec![queue], interrupt: f.interrupt.clone(), features: 0 }).unwrap();
    header(&f.mem, T_FLUSH, 0);
    for round in 0..3u16 {
        // Two flush requests of two descriptors per round, reusing the table.
        q.push(0, &[desc(HDR, 16, false), desc(STATUS + u64::from(round), 1, true)]);
        q.push(2, &[desc(HDR, 16, false), desc(STATUS + 8, 1, true)]);
        blk.queue_notify(0).unwrap();
    }
    assert_eq!(q.used_idx(), 4, "6 completions starting at 65534 wrap to 4");
    assert_eq!(blk.failed_requests, 0, "{:?}", blk.last_request_error);
}
