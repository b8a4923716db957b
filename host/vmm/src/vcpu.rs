//! The vCPU run loop: runs guest code, routes MMIO/PIO exits through the buses, and ends on
//! halt, shutdown, a stop request, a misbehaving guest, or a deadline.
//!
//! Every run is bounded: a watchdog thread kicks the vCPU out of the hypervisor when the
//! deadline passes, and the number of exits is capped, so a guest can never hang the host
//! process. A guest fault (unmapped MMIO, emulation failure) is an error value, never a panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::Bus;
use crate::hypervisor::{HvError, HvVcpu, VmExit};

/// The two address spaces a guest reaches devices through.
#[derive(Default)]
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// What to do with an access no device claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unclaimed {
    /// Reads return all ones, writes are dropped (what real hardware does for PIO).
    Ignore,
    /// The run ends with [`VcpuError::Unclaimed`].
    Fail,
}

/// Bounds and policies of one run.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// Wall-clock bound from the start of the run.
    pub timeout: Duration,
    /// Bound on the number of exits handled (0 = unbounded).
    pub max_exits: u64,
    pub unclaimed_pio: Unclaimed,
    pub unclaimed_mmio: Unclaimed,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits { timeout: Duration::from_secs(10), max_exits: 0, unclaimed_pio: Unclaimed::Ignore, unclaimed_mmio: Unclaimed::Fail }
    }
}

/// How a run ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// `hlt` with nothing to wake the vCPU (no in-kernel irqchip).
    Halted,
    /// The guest reset the machine or triple-faulted.
    Shutdown,
    /// The run was stopped through the `stop` flag.
    Stopped,
}

/// How a run ended abnormally. Each variant says what the guest did.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("guest did not finish within {0:?} ({1} exits handled)")]
    Timeout(Duration, u64),
    #[error("guest exceeded {0} exits")]
    TooManyExits(u64),
    #[error("guest {kind} {len}-byte access to unclaimed {space} address {addr:#x}")]
    Unclaimed { space: &'static str, kind: &'static str, addr: u64, len: usize },
    #[error("guest could not be run: {0}")]
    Internal(String),
    #[error(transparent)]
    Hv(#[from] HvError),
}

/// Statistics of a finished run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunStats {
    pub exits: u64,
    /// Time from the start of the run to the first exit of any kind (an upper bound on "VMM
    /// start to first guest instruction" when the guest's first act is an I/O access).
    pub first_exit: Option<Duration>,
}

/// Cancels the watchdog when dropped.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(vcpu: &dyn HvVcpu, timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let kicker = vcpu.kicker();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-vcpu-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
                    flag.store(true, Ordering::SeqCst);
                    // Keep kicking until the run loop notices: a kick that lands just before
                    // the vCPU enters the hypervisor is otherwise lost.
                    loop {
                        kicker.kick();
                        if !matches!(rx.recv_timeout(Duration::from_millis(5)), Err(mpsc::RecvTimeoutError::Timeout)) {
                            break;
                        }
                    }
                }
            })
            .ok();
        Watchdog { done: Some(tx), thread, fired }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `vcpu` until it halts, shuts down, is stopped, misbehaves or times out.
///
/// `stop` is checked whenever the vCPU leaves the hypervisor; to stop a running vCPU from
/// another thread, set it and call the vCPU's kicker.
pub fn run_vcpu(
    vcpu: &mut dyn HvVcpu,
    buses: &Buses,
    limits: &RunLimits,
    stop: &AtomicBool,
) -> Result<(RunOutcome, RunStats), VcpuError> {
    let start = Instant::now();
    let watchdog = Watchdog::start(vcpu, limits.timeout);
    let mut stats = RunStats::default();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok((RunOutcome::Stopped, stats));
        }
        if limits.max_exits != 0 && stats.exits >= limits.max_exits {
            return Err(VcpuError::TooManyExits(limits.max_exits));
        }
        let exit = vcpu.run()?;
        stats.exits += 1;
        stats.first_exit.get_or_insert_with(|| start.elapsed());
        match exit {
            VmExit::PioRead { port, data } => {
                if !buses.pio.read(u64::from(port), data) {
                    unclaimed(limits.unclaimed_pio, "PIO", "read", u64::from(port), data.len())?;
                    data.fill(0xff);
                }
            }
            VmExit::PioWrite { port, data } => {
                if !buses.pio.write(u64::from(port), data) {
                    unclaimed(limits.unclaimed_pio, "PIO", "write", u64::from(port), data.len())?;
                }
            }
            VmExit::MmioRead { addr, data } => {
                if !buses.mmio.read(addr, data) {
                    unclaimed(limits.unclaimed_mmio, "MMIO", "read", addr, data.len())?;
                    data.fill(0xff);
                }
            }
            VmExit::MmioWrite { addr, data } => {
                if !buses.mmio.write(addr, data) {
                    unclaimed(limits.unclaimed_mmio, "MMIO", "write", addr, data.len())?;
                }
            }
            VmExit::Halt => return Ok((RunOutcome::Halted, stats)),
            VmExit::Shutdown => return Ok((RunOutcome::Shutdown, stats)),
            VmExit::Interrupted => {
                if watchdog.fired.load(Ordering::SeqCst) {
                    return Err(VcpuError::Timeout(limits.timeout, stats.exits));
                }
            }
            VmExit::InternalError(detail) => return Err(VcpuError::Internal(detail)),
            VmExit::Other(detail) => return Err(VcpuError::Internal(format!("unexpected exit: {detail}"))),
        }
    }
}

fn unclaimed(policy: Unclaimed, space: &'static str, kind: &'static str, addr: u64, len: usize) -> Result<(), VcpuError> {
    match policy {
        Unclaimed::Ignore => Ok(()),
        Unclaimed::Fail => Err(VcpuError::Unclaimed { space, kind, addr, len }),
    }
}
