//! The 8250/16550 serial port (vm-superio) as a PIO bus device.
//!
//! Output goes to any `Write` (kiln's `--debug` console, or a buffer in tests); its interrupt
//! line is an optional eventfd (an irqfd for IRQ 4 when the VM has an in-kernel irqchip).
//! This module never touches the hypervisor.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// The legacy COM1 port base and its interrupt line.
pub const COM1_PORT: u64 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
/// Number of ports an 8250 decodes.
pub const PORT_COUNT: u64 = 8;

/// An interrupt line backed by an optional eventfd.
pub struct IrqLine(pub Option<EventFd>);

impl Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        match &self.0 {
            Some(fd) => fd.write(1),
            None => Ok(()),
        }
    }
}

/// A serial port on the PIO bus.
pub struct SerialDevice {
    inner: Serial<IrqLine, NoEvents, Box<dyn Write + Send>>,
}

impl SerialDevice {
    pub fn new(irq: IrqLine, out: Box<dyn Write + Send>) -> Self {
        SerialDevice { inner: Serial::new(irq, out) }
    }

    /// Queues bytes for the guest to read (console input).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.enqueue_raw_bytes(bytes).map(|_| ()).map_err(|e| io::Error::other(format!("{e:?}")))
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&byte), Ok(off)) = (data.first(), u8::try_from(offset)) {
            // A failing console (closed pipe) must not stop the guest: the byte is dropped.
            let _ = self.inner.write(off, byte);
        }
    }
}

/// A `Write` that appends to a shared buffer (for tests and for capturing boot logs).
#[derive(Clone, Default)]
pub struct SharedBuffer(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_to_thr_reach_the_output() {
        let out = SharedBuffer::default();
        let mut dev = SerialDevice::new(IrqLine(None), Box::new(out.clone()));
        for b in b"hi" {
            dev.write(0, &[*b]);
        }
        // LSR (offset 5): transmitter empty bits set.
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        dev.write(u64::MAX, &[1]); // out of range offset: ignored, no panic
        dev.write(0, &[]);
        assert_eq!(out.contents(), b"hi");
    }
}
