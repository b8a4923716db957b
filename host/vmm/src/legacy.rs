//! Legacy PC devices a Linux guest touches: the i8042 controller's reset line.
//!
//! A guest booted with `reboot=k` resets by writing 0xfe to port 0x64; kiln treats that as the
//! guest asking to stop. The device only records the request; the machine acts on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::bus::BusDevice;

pub const I8042_PORT: u64 = 0x60;
pub const I8042_PORTS: u64 = 5;
const CMD_RESET: u8 = 0xfe;

/// Ports 0x60..0x64 of the keyboard controller, enough for Linux's probe and reset.
pub struct I8042 {
    reset: Arc<AtomicBool>,
    on_reset: Box<dyn Fn() + Send>,
}

impl I8042 {
    /// `on_reset` runs (on the vCPU thread) when the guest requests a reset.
    pub fn new(reset: Arc<AtomicBool>, on_reset: Box<dyn Fn() + Send>) -> Self {
        I8042 { reset, on_reset }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: no data, input buffer empty, so Linux's probe sees no keyboard and moves on.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.first() == Some(&CMD_RESET) {
            self.reset.store(true, Ordering::SeqCst);
            (self.on_reset)();
        }
    }
}
