//! Address buses: guest-physical (MMIO) or I/O-port (PIO) ranges mapped to devices.
//!
//! A device on a bus sees an offset from the start of its range and the bytes of the access;
//! it never sees hypervisor types. The bus must never panic on a guest's access: an address no
//! device claims is reported to the caller (`false`), which decides the policy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A device reachable through a [`Bus`].
pub trait BusDevice: Send {
    /// Fills `data` with the register contents at `offset` (bytes the device does not define
    /// stay as given: zero).
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors when laying out a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
}

struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping address ranges, each owned by one device.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `base..base+len`.
    pub fn insert(&self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0).ok_or(BusError::BadRange { base, len })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|p| p.into_inner());
        if let Some((&other, e)) = ranges.range(..end).next_back() {
            if other + e.len > base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let ranges = self.ranges.read().unwrap_or_else(|p| p.into_inner());
        let (&base, entry) = ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the range.
        if offset.checked_add(size as u64)? > entry.len {
            return None;
        }
        Some((offset, entry.device.clone()))
    }

    /// Reads through the device at `addr`; `false` if none claims the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock().unwrap_or_else(|p| p.into_inner()).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes through the device at `addr`; `false` if none claims the whole access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock().unwrap_or_else(|p| p.into_inner()).write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_offset_and_rejects_overlap_and_straddling() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x1000, 0x100, dev.clone()).unwrap();
        assert_eq!(bus.insert(0x10ff, 1, dev.clone()), Err(BusError::Overlap { base: 0x10ff, len: 1, other: 0x1000 }));
        assert_eq!(bus.insert(0xfff, 2, dev.clone()), Err(BusError::Overlap { base: 0xfff, len: 2, other: 0x1000 }));
        assert!(matches!(bus.insert(u64::MAX, 2, dev.clone()), Err(BusError::BadRange { .. })));
        assert!(matches!(bus.insert(5, 0, dev.clone()), Err(BusError::BadRange { .. })));
        bus.insert(0x1100, 0x10, dev.clone()).unwrap();

        let mut buf = [0u8; 4];
        assert!(bus.read(0x1010, &mut buf));
        assert_eq!(buf, [0x10; 4]);
        assert!(bus.write(0x1104, &[7]));
        assert!(!bus.write(0x10fe, &[0; 4]), "straddles the end of a range");
        assert!(!bus.read(0x2000, &mut buf));
        assert!(!bus.read(0, &mut buf));
        assert_eq!(dev.lock().unwrap().0, vec![(4, vec![7])]);
    }
}
