//! virtio-vsock (virtio 1.1 section 5.10) in userspace: the device model and its worker.
//!
//! The device ([`Vsock`]) owns a [`muxer::Muxer`] (host Unix sockets, connection table) and,
//! once the driver is up, a worker thread that waits on the muxer's epoll set plus the queue
//! kick eventfds and moves packets. The vCPU thread only signals a kick eventfd on
//! `QueueNotify` — the same eventfd a KVM ioeventfd can signal without a vCPU exit. The event
//! queue is accepted but unused (kiln never migrates or resets the transport under the guest).

pub mod client;
pub mod muxer;
pub mod packet;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{read_config_bytes, Activation, Interrupt, VirtioDevice, VirtioError, TYPE_VSOCK};
use muxer::Muxer;

const QUEUE_SIZES: [u16; 3] = [256, 256, 256];
const RX: usize = 0;
const TX: usize = 1;
/// Worker epoll tokens for the kick and stop eventfds.
const TOKEN_RX_KICK: u64 = 1;
const TOKEN_TX_KICK: u64 = 2;
const TOKEN_STOP: u64 = 3;

struct Worker {
    stop: EventFd,
    thread: JoinHandle<(Muxer, Option<String>)>,
}

/// A vsock device whose host side is Unix sockets under `uds_path`.
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    muxer: Option<Muxer>,
    /// rx and tx kick eventfds: written by `queue_notify`, or by KVM directly (ioeventfd).
    kicks: [EventFd; 2],
    worker: Option<Worker>,
    /// Why the worker stopped, if it failed.
    pub worker_error: Option<String>,
}

fn eventfd(what: &str) -> Result<EventFd, VirtioError> {
    EventFd::new(EFD_NONBLOCK).map_err(|source| VirtioError::Io { context: format!("creating the vsock {what} eventfd"), source })
}

impl Vsock {
    /// Listens on `uds_path` at once, so the host may connect before the guest is up (the
    /// connection is offered to the guest when its driver is ready).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VirtioError> {
        let muxer = Muxer::new(guest_cid, uds_path)?;
        let kicks = [eventfd("rx kick")?, eventfd("tx kick")?];
        Ok(Vsock { guest_cid, uds_path: uds_path.to_path_buf(), muxer: Some(muxer), kicks, worker: None, worker_error: None })
    }

    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            let _ = w.stop.write(1);
            match w.thread.join() {
                Ok((mut muxer, err)) => {
                    muxer.reset();
                    self.worker_error = err;
                    self.muxer = Some(muxer);
                }
                Err(_) => self.worker_error = Some("vsock worker panicked".into()),
            }
        }
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.stop_worker();
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        super::VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), VirtioError> {
        if a.queues.len() != QUEUE_SIZES.len() {
            return Err(VirtioError::QueueCount { got: a.queues.len(), want: QUEUE_SIZES.len() });
        }
        let muxer = self.muxer.take().ok_or(VirtioError::NotActivated)?;
        let kicks = &self.kicks;
        let stop = eventfd("stop")?;
        let clone = |fd: &EventFd| fd.try_clone().map_err(|source| VirtioError::Io { context: "cloning an eventfd".into(), source });
        let fds = (clone(&kicks[RX])?, clone(&kicks[TX])?, clone(&stop)?);
        let mem = a.mem;
        let interrupt = a.interrupt;
        let queues = a.queues;
        let thread = std::thread::Builder::new()
            .name("kiln-vsock".into())
            .spawn(move || run_worker(muxer, mem, queues, interrupt, fds))
            .map_err(|source| VirtioError::Io { context: "starting the vsock worker thread".into(), source })?;
        self.worker = Some(Worker { stop, thread });
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) -> Result<(), VirtioError> {
        if self.worker.is_none() {
            return Err(VirtioError::NotActivated);
        }
        match usize::from(index) {
            i @ (RX | TX) => self.kicks[i].write(1).map_err(|source| VirtioError::Io { context: "kicking the vsock worker".into(), source }),
            2 => Ok(()),
            _ => Err(VirtioError::NoSuchQueue(index)),
        }
    }

    fn reset(&mut self) {
        self.stop_worker();
    }

    fn queue_eventfds(&self) -> Vec<(u16, EventFd)> {
        self.kicks.iter().enumerate().filter_map(|(i, k)| Some((i as u16, k.try_clone().ok()?))).collect()
    }
}

/// The worker loop: returns the muxer (for a later re-activation) and why it stopped early.
fn run_worker(
    mut muxer: Muxer,
    mem: Arc<GuestMemoryMmap>,
    mut queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
    (rx_kick, tx_kick, stop): (EventFd, EventFd, EventFd),
) -> (Muxer, Option<String>) {
    use std::os::fd::AsRawFd;
    let watched = [(&rx_kick, TOKEN_RX_KICK), (&tx_kick, TOKEN_TX_KICK), (&stop, TOKEN_STOP)]
        .into_iter()
        .try_for_each(|(fd, token)| muxer.watch(fd.as_raw_fd(), token));
    let error = match watched {
        Ok(()) => serve(&mut muxer, &mem, &mut queues, &interrupt, &rx_kick, &tx_kick),
        Err(e) => Some(e.to_string()),
    };
    // The kick eventfds outlive this worker (the device keeps them for ioeventfd), so their
    // registrations must go explicitly, or a later worker's `watch` of them fails.
    for fd in [&rx_kick, &tx_kick, &stop] {
        muxer.unwatch(fd.as_raw_fd());
    }
    (muxer, error)
}

fn serve(
    muxer: &mut Muxer,
    mem: &GuestMemoryMmap,
    queues: &mut [Queue],
    interrupt: &Interrupt,
    rx_kick: &EventFd,
    tx_kick: &EventFd,
) -> Option<String> {
    loop {
        let fired = match muxer.poll(1000) {
            Ok(f) => f,
            Err(e) => break Some(e.to_string()),
        };
        if fired.contains(&TOKEN_STOP) {
            break None;
        }
        // Kick counters only need draining; their count carries no meaning.
        let _ = rx_kick.read();
        let _ = tx_kick.read();
        let (rx, rest) = queues.split_at_mut(1);
        let step = muxer
            .process_tx(mem, &mut rest[0])
            .and_then(|tx_used| Ok(muxer.fill_rx(mem, &mut rx[0])? || tx_used));
        match step {
            Ok(true) => interrupt.signal_used_queue(),
            Ok(false) => {}
            Err(e) => {
                interrupt.signal_config();
                break Some(e.to_string());
            }
        }
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
