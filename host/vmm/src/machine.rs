//! A whole microVM: guest memory, in-kernel irqchip and PIT, COM1, i8042 reset, virtio-mmio
//! devices (block, vsock) wired to irqfd/ioeventfd, a direct Linux boot, and one thread per
//! vCPU — with a clean stop from any thread and on drop.
//!
//! This is the API the sandbox's built-in-VMM backend builds on. It never interprets what the
//! guest does beyond "it stopped": the agent protocol runs over the vsock Unix socket.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::{layout, linux, mptable};
use crate::hypervisor::{HvError, HvVm, Hypervisor, VcpuKicker};
use crate::legacy::{I8042, I8042_PORT, I8042_PORTS};
use crate::serial::{IrqLine, SerialDevice, COM1_IRQ, COM1_PORT, PORT_COUNT};
use crate::vcpu::{run_vcpu, Buses, RunLimits, RunOutcome, Unclaimed, VcpuError};
use crate::virtio::block::Block;
use crate::virtio::mmio::{MmioTransport, MMIO_WINDOW};
use crate::virtio::vsock::Vsock;
use crate::virtio::{Interrupt, VirtioDevice, VirtioError};

/// A scratch or read-only disk.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

/// Host side of the vsock device.
#[derive(Debug, Clone)]
pub struct VsockConfig {
    /// The guest's context id (3 or above).
    pub guest_cid: u64,
    /// Host connections: connect here and send `CONNECT <port>\n`; guest connections to host
    /// port P reach `<uds_path>_P`.
    pub uds_path: PathBuf,
}

/// Everything needed to start a machine.
pub struct MachineConfig {
    pub mem_size: u64,
    pub vcpus: u8,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Kernel command line without the `virtio_mmio.device=` entries, which are added.
    pub cmdline: String,
    /// Where the guest's serial console goes.
    pub console: Box<dyn Write + Send>,
    pub vsock: Option<VsockConfig>,
    pub disks: Vec<DiskConfig>,
}

/// Errors starting a machine; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error(transparent)]
    Hypervisor(#[from] HvError),
    #[error(transparent)]
    Boot(#[from] linux::BootError),
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error("allocating {mib} MiB of guest memory: {detail}")]
    Memory { mib: u64, detail: String },
    #[error("device: {0}")]
    Device(#[from] VirtioError),
    #[error("{0}")]
    Setup(String),
    #[error("{0} vCPUs requested: between 1 and {max} are supported", max = mptable::MAX_VCPUS)]
    VcpuCount(u8),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
}

/// Why a machine stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineExit {
    /// The guest reset (triple fault, `reboot=t`, or i8042 reset, `reboot=k`): kiln's agent
    /// powers off this way (`kiln.poweroff=reboot`).
    GuestReset,
    /// [`Machine::stop`] or drop.
    Stopped,
    /// A vCPU failed: the guest misbehaved or the hypervisor could not run it.
    Failed(String),
}

/// A running microVM.
pub struct Machine {
    vm: Box<dyn HvVm>,
    mem: Arc<GuestMemoryMmap>,
    stop: Arc<AtomicBool>,
    kickers: Vec<Arc<dyn VcpuKicker>>,
    threads: Vec<JoinHandle<()>>,
    exits: mpsc::Receiver<MachineExit>,
    /// The first exit received: what every later `wait` returns.
    first_exit: Mutex<Option<MachineExit>>,
    /// Devices kept for inspection (errors) and so their host sockets live as long as the VM.
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    pub started: Instant,
    pub vsock_path: Option<PathBuf>,
}

fn eventfd(what: &str) -> Result<EventFd, MachineError> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| MachineError::Setup(format!("creating the {what} eventfd: {e}")))
}

impl Machine {
    /// Builds the VM, boots the kernel, and starts every vCPU.
    pub fn start(hv: &dyn Hypervisor, cfg: MachineConfig) -> Result<Machine, MachineError> {
        let started = Instant::now();
        if cfg.vcpus == 0 || cfg.vcpus > mptable::MAX_VCPUS {
            return Err(MachineError::VcpuCount(cfg.vcpus));
        }
        let ranges = layout::ram_ranges(cfg.mem_size)?;
        let mem = Arc::new(
            GuestMemoryMmap::<()>::from_ranges(&ranges)
                .map_err(|e| MachineError::Memory { mib: cfg.mem_size >> 20, detail: e.to_string() })?,
        );
        let mut vm = hv.create_vm()?;
        vm.map_memory(mem.clone())?;
        vm.create_irqchip()?;

        let stop = Arc::new(AtomicBool::new(false));
        let buses = Arc::new(Buses::default());
        let com1_irq = eventfd("COM1 interrupt")?;
        vm.register_irqfd(&com1_irq, COM1_IRQ)?;
        let com1 = SerialDevice::new(IrqLine(Some(com1_irq)), cfg.console);
        let bus_err = |e: crate::bus::BusError| MachineError::Setup(e.to_string());
        buses.pio.insert(COM1_PORT, PORT_COUNT, Arc::new(Mutex::new(com1))).map_err(bus_err)?;

        // Virtio devices, each in its own MMIO slot with its own IRQ line.
        let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
        for d in &cfg.disks {
            let id = d.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            devices.push(Box::new(Block::open(&d.path, d.read_only, &id)?));
        }
        if let Some(v) = &cfg.vsock {
            devices.push(Box::new(Vsock::new(v.guest_cid, &v.uds_path)?));
        }
        let mut slots = Vec::new();
        let mut transports = Vec::new();
        for (i, dev) in devices.into_iter().enumerate() {
            let (addr, irq) = layout::virtio_slot(i)?;
            let irqfd = eventfd("virtio interrupt")?;
            vm.register_irqfd(&irqfd, irq)?;
            let t = MmioTransport::new(dev, mem.clone(), Arc::new(Interrupt::new(Some(irqfd))))
                .map_err(|e| MachineError::Setup(format!("virtio transport: {e}")))?;
            for (fd, offset, value) in t.ioeventfds() {
                vm.register_ioeventfd(&fd, addr + offset, value)?;
            }
            let t = Arc::new(Mutex::new(t));
            buses.mmio.insert(addr, MMIO_WINDOW, t.clone()).map_err(bus_err)?;
            transports.push(t);
            slots.push((addr, irq));
        }

        let spec = linux::BootSpec {
            kernel: cfg.kernel,
            initrd: cfg.initrd,
            cmdline: linux::command_line(&cfg.cmdline, &slots)?,
            mem_size: cfg.mem_size,
        };
        let boot = linux::load(&mem, &spec)?;
        mptable::write(&mem, cfg.vcpus)?;

        let (tx, exits) = mpsc::channel();
        let mut kickers = Vec::new();
        let mut threads = Vec::new();
        let mut vcpus = Vec::new();
        for id in 0..cfg.vcpus {
            let mut vcpu = vm.create_vcpu(id)?;
            linux::configure_vcpu(vcpu.as_mut(), (id == 0).then_some(&boot))?;
            kickers.push(vcpu.kicker());
            vcpus.push(vcpu);
        }
        // The i8042 reset stops every vCPU.
        let all_kickers = kickers.clone();
        let reset_stop = stop.clone();
        let reset_requested = Arc::new(AtomicBool::new(false));
        let i8042 = I8042::new(
            reset_requested.clone(),
            Box::new(move || {
                reset_stop.store(true, Ordering::SeqCst);
                all_kickers.iter().for_each(|k| k.kick());
            }),
        );
        buses.pio.insert(I8042_PORT, I8042_PORTS, Arc::new(Mutex::new(i8042))).map_err(bus_err)?;

        for (id, mut vcpu) in vcpus.into_iter().enumerate() {
            let (buses, stop, tx, kickers) = (buses.clone(), stop.clone(), tx.clone(), kickers.clone());
            let reset_requested = reset_requested.clone();
            let thread = std::thread::Builder::new()
                .name(format!("kiln-vcpu{id}"))
                .spawn(move || {
                    let limits = RunLimits {
                        timeout: Duration::MAX,
                        max_exits: 0,
                        unclaimed_pio: Unclaimed::Ignore,
                        unclaimed_mmio: Unclaimed::Fail,
                    };
                    let exit = match run_vcpu(vcpu.as_mut(), &buses, &limits, &stop) {
                        Ok((RunOutcome::Shutdown, _)) => MachineExit::GuestReset,
                        // An i8042 reset (reboot=k) stops the vCPUs through the stop flag.
                        Ok((RunOutcome::Stopped, _)) if reset_requested.load(Ordering::SeqCst) => MachineExit::GuestReset,
                        Ok((RunOutcome::Stopped, _)) => MachineExit::Stopped,
                        Ok((RunOutcome::Halted, _)) => MachineExit::Failed(format!("vCPU {id} halted with interrupts off")),
                        Err(VcpuError::Timeout(..)) => MachineExit::Stopped,
                        Err(e) => MachineExit::Failed(format!("vCPU {id}: {e}")),
                    };
                    // One vCPU ending ends the machine. Report first, so the cause (not the
                    // other vCPUs' "stopped") is what `wait` sees first.
                    let _ = tx.send(exit);
                    stop.store(true, Ordering::SeqCst);
                    kickers.iter().for_each(|k| k.kick());
                })
                .map_err(|e| MachineError::Setup(format!("starting vCPU thread {id}: {e}")))?;
            threads.push(thread);
        }
        let vsock_path = cfg.vsock.map(|v| v.uds_path);
        Ok(Machine { vm, mem, stop, kickers, threads, exits, first_exit: Mutex::new(None), transports, started, vsock_path })
    }

    /// Waits up to `timeout` for the machine to stop by itself. Once it has, every call
    /// returns the same (first) exit at once.
    pub fn wait(&self, timeout: Duration) -> Option<MachineExit> {
        let mut first = self.first_exit.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = self.exits.recv_timeout(timeout).ok();
        }
        first.clone()
    }

    /// Whether every vCPU is still running (for `connect_guest_port`'s `alive`).
    pub fn is_running(&self) -> bool {
        self.wait(Duration::ZERO).is_none()
    }

    /// Stops every vCPU and joins their threads. Returns how the first vCPU ended.
    pub fn stop(mut self) -> MachineExit {
        self.halt_all().unwrap_or(MachineExit::Stopped)
    }

    fn halt_all(&mut self) -> Option<MachineExit> {
        self.stop.store(true, Ordering::SeqCst);
        // Kick until every thread has left the hypervisor (a kick can race a vCPU's entry).
        while self.threads.iter().any(|t| !t.is_finished()) {
            self.kickers.iter().for_each(|k| k.kick());
            std::thread::sleep(Duration::from_millis(2));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.wait(Duration::ZERO)
    }

    /// Guest memory (for diagnostics and measurements, e.g. resident guest pages).
    pub fn guest_memory(&self) -> &Arc<GuestMemoryMmap> {
        &self.mem
    }

    /// The hypervisor VM (for diagnostics).
    pub fn vm(&self) -> &dyn HvVm {
        self.vm.as_ref()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.halt_all();
    }
}
