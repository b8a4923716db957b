//! The MMIO transport driven register by register, as the Linux virtio-mmio driver does.

use std::io::Write as _;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::virtio::block::Block;
use crate::virtio::test_driver::Driver;

const MEM: usize = 8 << 20;

fn r(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn w(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn transport() -> (MmioTransport, Arc<GuestMemoryMmap>, Arc<Interrupt>, tempfile::NamedTempFile) {
    let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap());
    let mut disk = tempfile::NamedTempFile::new().unwrap();
    disk.write_all(&[7u8; 4096]).unwrap();
    let blk = Block::open(disk.path(), false, "d").unwrap();
    let irq = Arc::new(Interrupt::new(None));
    (MmioTransport::new(Box::new(blk), mem.clone(), irq.clone()).unwrap(), mem, irq, disk)
}

/// Feature negotiation and queue setup; returns the status after DRIVER_OK.
fn bring_up(t: &mut MmioTransport, q: &Driver<'_>, features_hi: u32) -> u32 {
    w(t, reg::STATUS, status::ACKNOWLEDGE);
    w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(t, reg::DEVICE_FEATURES_SEL, 1);
    let hi = r(t, reg::DEVICE_FEATURES);
    assert_eq!(hi & 1, 1, "VERSION_1 offered");
    w(t, reg::DRIVER_FEATURES_SEL, 1);
    w(t, reg::DRIVER_FEATURES, features_hi);
    w(t, reg::DRIVER_FEATURES_SEL, 0);
    w(t, reg::DRIVER_FEATURES, 0);
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    w(t, reg::STATUS, s);
    if r(t, reg::STATUS) & status::FEATURES_OK == 0 {
        return r(t, reg::STATUS);
    }
    w(t, reg::QUEUE_SEL, 0);
    assert_eq!(r(t, reg::QUEUE_READY), 0);
    assert!(r(t, reg::QUEUE_NUM_MAX) >= u32::from(q.size));
    w(t, reg::QUEUE_NUM, u32::from(q.size));
    for (lo, hi, addr) in [
        (reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, q.desc),
        (reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH, q.avail),
        (reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH, q.used),
    ] {
        w(t, lo, addr as u32);
        w(t, hi, (addr >> 32) as u32);
    }
    w(t, reg::QUEUE_READY, 1);
    w(t, reg::STATUS, s | status::DRIVER_OK);
    r(t, reg::STATUS)
}

#[test]
fn identifies_as_a_version_2_device() {
    let (mut t, ..) = transport();
    assert_eq!(r(&mut t, reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(r(&mut t, reg::VERSION), 2);
    assert_eq!(r(&mut t, reg::DEVICE_ID), crate::virtio::TYPE_BLOCK);
    // Config space: capacity = 8 sectors, readable at any width.
    let mut cap = [0u8; 8];
    t.read(reg::CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);
    // Misaligned or narrow register reads give zero, not a panic.
    let mut b = [0xffu8; 2];
    t.read(reg::MAGIC_VALUE, &mut b);
    assert_eq!(b, [0, 0]);
    t.read(0x2, &mut [0u8; 4]);
    t.write(0x71, &[1, 2, 3, 4]);
}

#[test]
fn full_setup_then_a_request_completes_and_interrupts() {
    let (mut t, mem, irq, _disk) = transport();
    let q = Driver::new(&mem, 0x1000, 8);
    let st = bring_up(&mut t, &q, 1);
    assert_eq!(st & status::DRIVER_OK, status::DRIVER_OK);
    assert_eq!(st & status::DEVICE_NEEDS_RESET, 0, "{:?}", t.last_error());
    // GET_ID request.
    mem.write_obj(8u32, GuestAddress(0x10_0000)).unwrap();
    q.push(0, &[(0x10_0000, 16, false), (0x20_0000, 20, true), (0x30_0000, 1, true)]);
    w(&mut t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(q.used_idx(), 1);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x30_0000)).unwrap(), 0);
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), crate::virtio::INT_USED_RING);
    w(&mut t, reg::INTERRUPT_ACK, crate::virtio::INT_USED_RING);
    assert_eq!(irq.status(), 0);
    // Queue registers are frozen while live.
    w(&mut t, reg::QUEUE_NUM, 2);
    // Reset returns everything to the start.
    w(&mut t, reg::STATUS, 0);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
    // And the device can be brought up again.
    let q2 = Driver::new(&mem, 0x4000, 4);
    assert_eq!(bring_up(&mut t, &q2, 1) & status::DRIVER_OK, status::DRIVER_OK);
}

#[test]
fn features_not_offered_or_without_version_1_are_refused() {
    let (mut t, mem, ..) = transport();
    let q = Driver::new(&mem, 0x1000, 8);
    let st = bring_up(&mut t, &q, 1 | 0x8000_0000);
    assert_eq!(st & status::FEATURES_OK, 0, "unknown feature bit accepted");
    w(&mut t, reg::STATUS, 0);
    let st = bring_up(&mut t, &q, 0);
    assert_eq!(st & status::FEATURES_OK, 0, "legacy driver accepted");
}

#[test]
fn a_queue_outside_guest_memory_sets_needs_reset() {
    let (mut t, mem, irq, _disk) = transport();
    let q = Driver::new(&mem, 0x1000, 8);
    let bad = Driver { used: MEM as u64 + 0x1000, ..Driver::new(&mem, 0x1000, 8) };
    let _ = q;
    let st = bring_up(&mut t, &bad, 1);
    assert_ne!(st & status::DEVICE_NEEDS_RESET, 0);
    assert!(t.last_error().unwrap_or("").contains("queue 0"), "{:?}", t.last_error());
    assert_ne!(irq.status() & crate::virtio::INT_CONFIG, 0);
    // Notifications are ignored until reset.
    w(&mut t, reg::QUEUE_NOTIFY, 0);
}

#[test]
fn notify_of_an_unknown_queue_needs_reset_not_a_panic() {
    let (mut t, mem, ..) = transport();
    let q = Driver::new(&mem, 0x1000, 8);
    bring_up(&mut t, &q, 1);
    w(&mut t, reg::QUEUE_NOTIFY, 9);
    assert_ne!(r(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
}
