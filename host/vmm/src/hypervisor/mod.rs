//! The hypervisor seam: the only place that knows which accelerator runs the guest.
//!
//! Everything above this module (buses, devices, boot, the vCPU loop) speaks these traits and
//! plain-data types; no KVM (or, later, Hypervisor.framework) type crosses this boundary. Each
//! backend is one module behind a `cfg` at the module boundary (`kvm` on Linux; `hvf` on macOS
//! later), in the style of Cloud Hypervisor's `hypervisor` crate, but with a smaller surface:
//! create a VM, map guest memory, create vCPUs, set registers, run until an exit.
//!
//! The register types are x86-64 ones: a Hypervisor.framework backend on Intel Macs fits
//! behind these traits as they are; on Apple silicon the run/exit/bus/device layers carry over
//! unchanged but registers and boot (FDT, GIC, PSCI) need an aarch64 variant of [`Regs`],
//! [`SpecialRegs`] and [`crate::boot`].
//!
//! This module must never dispatch exits to devices: the exit enum carries borrowed data for
//! MMIO/PIO accesses and [`crate::vcpu`] routes them through [`crate::bus::Bus`].

#[cfg(target_os = "linux")]
pub mod kvm;

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Errors of a hypervisor backend. Each names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    /// The accelerator device cannot be used at all; the message says why and what to do.
    #[error("{0}")]
    Unavailable(String),
    /// An operation on an open VM or vCPU failed.
    #[error("{op}: {source}")]
    Op {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Guest memory could not be mapped into the VM.
    #[error("mapping guest memory: {0}")]
    Memory(String),
}

impl HvError {
    pub(crate) fn op(op: &'static str, source: impl Into<std::io::Error>) -> Self {
        HvError::Op { op, source: source.into() }
    }
}

/// Why a vCPU stopped running guest code. Data of I/O exits is borrowed from the vCPU and must
/// be filled (reads) or consumed (writes) before the next [`HvVcpu::run`].
#[derive(Debug)]
pub enum VmExit<'a> {
    /// The guest read `data.len()` bytes from an I/O port.
    PioRead { port: u16, data: &'a mut [u8] },
    /// The guest wrote `data` to an I/O port.
    PioWrite { port: u16, data: &'a [u8] },
    /// The guest read unbacked guest-physical memory (a device register).
    MmioRead { addr: u64, data: &'a mut [u8] },
    /// The guest wrote unbacked guest-physical memory (a device register).
    MmioWrite { addr: u64, data: &'a [u8] },
    /// `hlt` with no interrupt to wait for (without an in-kernel irqchip, every `hlt`).
    Halt,
    /// The guest reset or triple-faulted.
    Shutdown,
    /// The run was interrupted (a signal or an immediate-exit request): check for stop/timeout.
    Interrupted,
    /// The accelerator could not run the guest (emulation failure, failed entry, ...).
    InternalError(String),
    /// Anything else, described for the report.
    Other(String),
}

/// One x86 segment register in the layout every backend understands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    /// Type field of the descriptor (e.g. 0xb = code, execute/read, accessed).
    pub type_: u8,
    pub present: bool,
    pub dpl: u8,
    /// Default operation size (32-bit) flag.
    pub db: bool,
    /// Code/data (true) or system (false) descriptor.
    pub s: bool,
    /// 64-bit code segment.
    pub l: bool,
    /// Granularity: limit in 4 KiB units.
    pub g: bool,
}

/// A descriptor table register (GDTR / IDTR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableReg {
    pub base: u64,
    pub limit: u16,
}

/// General-purpose registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// Segment, control and system registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialRegs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub gdt: TableReg,
    pub idt: TableReg,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// An accelerator: the entry point of a backend.
pub trait Hypervisor: Send + Sync {
    /// Backend name for reports ("kvm").
    fn name(&self) -> &'static str;
    /// Creates an empty VM (no memory, no vCPUs).
    fn create_vm(&self) -> Result<Box<dyn HvVm>, HvError>;
}

/// A VM: guest memory, interrupt controller, and vCPU factory.
pub trait HvVm: Send + Sync {
    /// Maps every region of `mem` at its guest-physical address. The VM keeps `mem` alive for
    /// as long as it exists, so the mapping can never outlive the host memory behind it.
    fn map_memory(&mut self, mem: Arc<GuestMemoryMmap>) -> Result<(), HvError>;
    /// Creates the in-kernel interrupt controllers and timer (x86: PIC + IOAPIC + LAPIC, PIT).
    fn create_irqchip(&mut self) -> Result<(), HvError>;
    /// Makes a write to `fd` raise interrupt line `gsi` (needs [`HvVm::create_irqchip`]).
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), HvError>;
    /// Makes a 4-byte guest write of `value` to MMIO `addr` signal `fd` without a vCPU exit.
    fn register_ioeventfd(&self, fd: &EventFd, addr: u64, value: u32) -> Result<(), HvError>;
    /// Creates vCPU number `id` (0-based).
    fn create_vcpu(&self, id: u8) -> Result<Box<dyn HvVcpu>, HvError>;
}

/// A virtual CPU. Runs on one host thread at a time.
pub trait HvVcpu: Send {
    fn regs(&self) -> Result<Regs, HvError>;
    fn set_regs(&mut self, regs: &Regs) -> Result<(), HvError>;
    fn special_regs(&self) -> Result<SpecialRegs, HvError>;
    fn set_special_regs(&mut self, sregs: &SpecialRegs) -> Result<(), HvError>;
    /// Gives the vCPU the CPUID leaves the accelerator supports, with the APIC id set to the
    /// vCPU number and the hypervisor bit on.
    fn set_supported_cpuid(&mut self) -> Result<(), HvError>;
    /// Sets up the FPU (x87 control word, MXCSR) and boot MSRs as Linux expects them.
    fn setup_fpu_and_msrs(&mut self) -> Result<(), HvError>;
    /// Runs guest code until the next exit.
    fn run(&mut self) -> Result<VmExit<'_>, HvError>;
    /// A handle that makes a running [`HvVcpu::run`] return [`VmExit::Interrupted`] soon.
    fn kicker(&self) -> Arc<dyn VcpuKicker>;
}

/// Stops a vCPU's current or next run from another thread.
pub trait VcpuKicker: Send + Sync {
    fn kick(&self);
}

/// Opens the best accelerator for this host, or says in one line why there is none.
pub fn open_default() -> Result<Arc<dyn Hypervisor>, HvError> {
    #[cfg(target_os = "linux")]
    {
        Ok(Arc::new(kvm::Kvm::open()?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(HvError::Unavailable("no hypervisor backend for this OS yet (Hypervisor.framework is planned)".into()))
    }
}
