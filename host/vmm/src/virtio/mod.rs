//! Virtio devices and their MMIO transport.
//!
//! A device implements [`VirtioDevice`]: it declares its type, features, queues and config
//! space, and once the driver has set it up ([`VirtioDevice::activate`]) it processes queue
//! notifications. The transport ([`mmio::MmioTransport`]) owns the register file and the queue
//! configuration and is the only thing on the bus; devices never see the bus or the hypervisor.
//! Guest input is hostile: a malformed chain or an oversize request is an error returned to the
//! transport (which marks the request failed or the device as needing reset), never a panic.

pub mod block;
pub mod mmio;
pub mod vsock;
#[cfg(test)]
pub(crate) mod test_driver;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Feature bit every virtio 1.x (non-legacy) device offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Device type numbers (virtio 1.1 section 5).
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_VSOCK: u32 = 19;

/// Interrupt status bits (virtio 1.1 section 4.2.2).
pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// Errors of a device model. Each says what the guest (or the backing file) did wrong.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("device activated with {got} queues, it needs {want}")]
    QueueCount { got: usize, want: usize },
    #[error("queue {0} is not valid (addresses outside guest memory or misaligned)")]
    InvalidQueue(usize),
    #[error("queue {0} does not exist")]
    NoSuchQueue(u16),
    #[error("virtio queue: {0}")]
    Queue(#[from] virtio_queue::Error),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("device is not activated")]
    NotActivated,
}

/// The interrupt line of one device and its status register.
pub struct Interrupt {
    status: AtomicU32,
    irq: Option<EventFd>,
}

impl Interrupt {
    /// `irq` is written once per interrupt (an irqfd when the VM has an irqchip).
    pub fn new(irq: Option<EventFd>) -> Self {
        Interrupt { status: AtomicU32::new(0), irq }
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Some(fd) = &self.irq {
            // A failed eventfd write means the counter is saturated: an interrupt is pending.
            let _ = fd.write(1);
        }
    }

    /// The device put buffers in a used ring.
    pub fn signal_used_queue(&self) {
        self.raise(INT_USED_RING);
    }

    /// The device changed its configuration (or needs a reset).
    pub fn signal_config(&self) {
        self.raise(INT_CONFIG);
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver acknowledged `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// What a device gets when the driver sets `DRIVER_OK`.
pub struct Activation {
    pub mem: Arc<GuestMemoryMmap>,
    pub queues: Vec<Queue>,
    pub interrupt: Arc<Interrupt>,
    /// Features the driver accepted.
    pub features: u64,
}

/// A virtio device model behind a transport.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features offered (must include [`VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;
    /// Reads device-specific config space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device-specific config space (ignored by devices without writable fields).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device with the queues the driver configured.
    fn activate(&mut self, activation: Activation) -> Result<(), VirtioError>;
    /// The driver notified queue `index`: process what it made available.
    fn queue_notify(&mut self, index: u16) -> Result<(), VirtioError>;
    /// Returns to the state before activation (drops queues and memory).
    fn reset(&mut self);
    /// Eventfds the device watches for queue notifications, by queue index. The VMM may have
    /// the hypervisor signal them directly on a `QueueNotify` write of that index (ioeventfd),
    /// so notifications skip the vCPU exit. Devices that process notifications synchronously
    /// return none.
    fn queue_eventfds(&self) -> Vec<(u16, EventFd)> {
        Vec::new()
    }
}

/// Copies `src` (a config-space image) at `offset` into `data`, zero past the end.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else { return };
    if start >= src.len() {
        return;
    }
    let n = data.len().min(src.len() - start);
    data[..n].copy_from_slice(&src[start..start + n]);
}
