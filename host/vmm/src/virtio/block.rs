//! virtio-blk over a raw file (virtio 1.1 section 5.2): read, write, flush, get-id.
//!
//! Requests are processed synchronously when the driver notifies the queue. A malformed
//! request (short header, no status byte, data not a whole number of sectors, beyond the end
//! of the disk) completes with `IOERR` and is counted; only a broken queue (rings outside
//! guest memory) is a device error. The file is never grown or truncated.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::{read_config_bytes, Activation, Interrupt, VirtioDevice, VirtioError, TYPE_BLOCK};

pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;
/// Feature bits.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// Request types.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
/// Status values.
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
/// Length of the device id string (GET_ID).
const ID_LEN: usize = 20;
/// Bytes moved between file and guest per step.
const CHUNK: usize = 64 * 1024;

struct Active {
    mem: Arc<GuestMemoryMmap>,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

/// A block device backed by a raw image file.
pub struct Block {
    file: File,
    read_only: bool,
    capacity_sectors: u64,
    id: [u8; ID_LEN],
    active: Option<Active>,
    /// Requests that completed with an error status (for reports and tests).
    pub failed_requests: u64,
    pub last_request_error: Option<String>,
}

/// Why one request failed (it completes with `IOERR`).
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("write to a read-only disk")]
    ReadOnly,
}

impl Block {
    /// Opens `path` as the disk image. Its size is rounded down to whole sectors.
    pub fn open(path: &Path, read_only: bool, id: &str) -> Result<Self, VirtioError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| VirtioError::Io { context: format!("opening disk image {}", path.display()), source })?;
        let len = file
            .metadata()
            .map_err(|source| VirtioError::Io { context: format!("reading size of {}", path.display()), source })?
            .len();
        let mut id_bytes = [0u8; ID_LEN];
        let n = id.len().min(ID_LEN);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Block {
            file,
            read_only,
            capacity_sectors: len / SECTOR_SIZE,
            id: id_bytes,
            active: None,
            failed_requests: 0,
            last_request_error: None,
        })
    }

    /// Handles one request; returns the status and the number of bytes written to the guest's
    /// data buffers.
    fn handle(&self, reader: &mut Reader<'_>, data: &mut Writer<'_>) -> Result<u32, RequestError> {
        let bad = |what: &str| RequestError::Malformed(what.to_string());
        let kind: u32 = reader.read_obj().map_err(|_| bad("request header shorter than 16 bytes"))?;
        let _reserved: u32 = reader.read_obj().map_err(|_| bad("request header shorter than 16 bytes"))?;
        let sector: u64 = reader.read_obj().map_err(|_| bad("request header shorter than 16 bytes"))?;
        let capacity = self.capacity_sectors * SECTOR_SIZE;
        let range = |len: usize| -> Result<u64, RequestError> {
            if !(len as u64).is_multiple_of(SECTOR_SIZE) {
                return Err(RequestError::Malformed(format!("data length {len} is not a whole number of sectors")));
            }
            let start = sector.checked_mul(SECTOR_SIZE).filter(|s| s.checked_add(len as u64).is_some_and(|e| e <= capacity));
            start.ok_or_else(|| RequestError::Malformed(format!("sectors {sector}+{} beyond the disk's {} sectors", len as u64 / SECTOR_SIZE, self.capacity_sectors)))
        };
        match kind {
            T_IN => {
                let len = data.available_bytes();
                let mut offset = range(len)?;
                let mut buf = vec![0u8; CHUNK.min(len)];
                let mut left = len;
                while left > 0 {
                    let n = left.min(CHUNK);
                    self.file.read_exact_at(&mut buf[..n], offset).map_err(|e| RequestError::Io("reading the disk image", e))?;
                    data.write_all(&buf[..n]).map_err(|e| RequestError::Io("writing guest buffers", e))?;
                    offset += n as u64;
                    left -= n;
                }
                Ok(len as u32)
            }
            T_OUT => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let len = reader.available_bytes();
                let mut offset = range(len)?;
                let mut buf = vec![0u8; CHUNK.min(len)];
                let mut left = len;
                while left > 0 {
                    let n = left.min(CHUNK);
                    reader.read_exact(&mut buf[..n]).map_err(|e| RequestError::Io("reading guest buffers", e))?;
                    self.file.write_all_at(&buf[..n], offset).map_err(|e| RequestError::Io("writing the disk image", e))?;
                    offset += n as u64;
                    left -= n;
                }
                Ok(0)
            }
            T_FLUSH => {
                if !self.read_only {
                    self.file.sync_all().map_err(|e| RequestError::Io("flushing the disk image", e))?;
                }
                Ok(0)
            }
            T_GET_ID => {
                let n = data.available_bytes().min(ID_LEN);
                data.write_all(&self.id[..n]).map_err(|e| RequestError::Io("writing guest buffers", e))?;
                Ok(n as u32)
            }
            other => Err(RequestError::Malformed(format!("unsupported request type {other}"))),
        }
    }

    /// Processes one chain; returns the used length to report.
    fn process_chain(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
        let (mut reader, mut writer) = match (chain.clone().reader(mem), chain.writer(mem)) {
            (Ok(r), Ok(w)) => (r, w),
            (Err(e), _) | (_, Err(e)) => {
                self.record(format!("unusable descriptor chain: {e}"));
                return 0;
            }
        };
        let writable = writer.available_bytes();
        if writable == 0 {
            self.record("request has no writable status byte".into());
            return 0;
        }
        let mut status = match writer.split_at(writable - 1) {
            Ok(s) => s,
            Err(e) => {
                self.record(format!("splitting the status byte: {e}"));
                return 0;
            }
        };
        let (code, written) = match self.handle(&mut reader, &mut writer) {
            Ok(n) => (S_OK, n),
            Err(e) => {
                let code = if matches!(&e, RequestError::Malformed(m) if m.starts_with("unsupported")) { S_UNSUPP } else { S_IOERR };
                self.record(e.to_string());
                (code, 0)
            }
        };
        // The status writer has exactly one byte, so this cannot fall short.
        let _ = status.write_all(&[code]);
        written + 1
    }

    fn record(&mut self, why: String) {
        self.failed_requests += 1;
        self.last_request_error = Some(why);
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        super::VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | if self.read_only { VIRTIO_BLK_F_RO } else { 0 }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config starts with `le64 capacity` (in 512-byte sectors).
        read_config_bytes(&self.capacity_sectors.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), VirtioError> {
        let got = activation.queues.len();
        let queue = activation.queues.into_iter().next().ok_or(VirtioError::QueueCount { got, want: 1 })?;
        self.active = Some(Active { mem: activation.mem, queue, interrupt: activation.interrupt });
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) -> Result<(), VirtioError> {
        if index != 0 {
            return Err(VirtioError::NoSuchQueue(index));
        }
        let mut active = self.active.take().ok_or(VirtioError::NotActivated)?;
        let result = self.drain(&mut active);
        self.active = Some(active);
        result
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

impl Block {
    fn drain(&mut self, active: &mut Active) -> Result<(), VirtioError> {
        let mem = active.mem.clone();
        let mut used_any = false;
        // Bounded by the queue size per notification round: a guest that keeps refilling the
        // ring cannot pin the vCPU thread forever.
        for _ in 0..=active.queue.size() {
            let Some(chain) = active.queue.pop_descriptor_chain(mem.as_ref()) else { break };
            let head = chain.head_index();
            let len = self.process_chain(&mem, chain);
            active.queue.add_used(mem.as_ref(), head, len)?;
            used_any = true;
        }
        if used_any && active.queue.needs_notification(mem.as_ref())? {
            active.interrupt.signal_used_queue();
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
