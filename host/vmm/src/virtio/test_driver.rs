//! A minimal virtio driver side for device unit tests: a split queue laid out in guest memory,
//! chains pushed with correct NEXT links and wrapping ring slots, used elements read back.
//!
//! Written instead of using `virtio_queue::mock::MockSplitQueue` for ring layout because the
//! mock (0.18) places the used ring `len` *bytes* after the avail ring start, so for queues
//! beyond a few entries the used ring overlaps the avail ring, and its `add_desc_chains` does
//! not wrap ring slots. Descriptors themselves use virtio-queue's own types.

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// A buffer of a chain: guest address, length, device-writable.
pub type Buf = (u64, u32, bool);

pub struct Driver<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

impl<'a> Driver<'a> {
    /// Lays out a queue of `size` entries at `base` (16-byte aligned).
    pub fn new(mem: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        let d = Driver { mem, size, desc, avail, used };
        d.set_avail_idx(0);
        d.set_used_idx(0);
        d
    }

    /// The device-side queue as a transport would configure it.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).expect("valid size");
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        q
    }

    pub fn set_avail_idx(&self, idx: u16) {
        self.mem.write_obj(idx, GuestAddress(self.avail + 2)).expect("avail idx");
    }

    pub fn avail_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.avail + 2)).expect("avail idx")
    }

    pub fn set_used_idx(&self, idx: u16) {
        self.mem.write_obj(idx, GuestAddress(self.used + 2)).expect("used idx")
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).expect("used idx")
    }

    /// The used element written for the `n`-th completion (free-running count).
    pub fn used_elem(&self, n: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(n % self.size);
        (self.mem.read_obj(GuestAddress(at)).expect("id"), self.mem.read_obj(GuestAddress(at + 4)).expect("len"))
    }

    /// Stores `bufs` as one chain from table index `at` on and makes it available.
    pub fn push(&self, at: u16, bufs: &[Buf]) {
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = if last { 0 } else { at + i as u16 + 1 };
            self.store_desc(at + i as u16, RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)));
        }
        self.make_available(at);
    }

    pub fn store_desc(&self, index: u16, d: RawDescriptor) {
        let d = SplitDescriptor::from(d);
        let at = self.desc + 16 * u64::from(index);
        self.mem.write_obj(d.addr().0, GuestAddress(at)).expect("desc");
        self.mem.write_obj(d.len(), GuestAddress(at + 8)).expect("desc");
        self.mem.write_obj(d.flags(), GuestAddress(at + 12)).expect("desc");
        self.mem.write_obj(d.next(), GuestAddress(at + 14)).expect("desc");
    }

    pub fn make_available(&self, head: u16) {
        let idx = self.avail_idx();
        self.mem.write_obj(head, GuestAddress(self.avail + 4 + 2 * u64::from(idx % self.size))).expect("avail slot");
        self.set_avail_idx(idx.wrapping_add(1));
    }
}
