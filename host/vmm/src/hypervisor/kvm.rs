//! The KVM backend of the hypervisor seam (`/dev/kvm` through `kvm-ioctls`).
//!
//! Translates between the seam's plain types and KVM's, and turns KVM exits into
//! [`VmExit`]s. It knows nothing of devices or boot layout.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};

use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_pit_config, kvm_segment, kvm_userspace_memory_region, Msrs,
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm as KvmSys, VcpuExit, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::{HvError, HvVcpu, HvVm, Hypervisor, Regs, Segment, SpecialRegs, TableReg, VcpuKicker, VmExit};

const KVM_PATH: &str = "/dev/kvm";

/// Why `/dev/kvm` cannot be used, as one line naming the cause and the fix.
fn open_error(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => format!(
            "{KVM_PATH} is absent: KVM is not available on this host (load kvm_intel or kvm_amd, \
             or enable nested virtualization); use the QEMU backend instead"
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied opening {KVM_PATH}: add your user to the 'kvm' group \
             (usermod -aG kvm $USER, then log in again) or use the QEMU backend"
        ),
        _ => format!("cannot open {KVM_PATH}: {err}"),
    }
}

/// An open `/dev/kvm`.
pub struct Kvm {
    kvm: KvmSys,
}

impl Kvm {
    /// Opens `/dev/kvm` and checks the API version and the capabilities kiln relies on.
    pub fn open() -> Result<Self, HvError> {
        let kvm = KvmSys::new().map_err(|e| HvError::Unavailable(open_error(&e.into())))?;
        let version = kvm.get_api_version();
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(HvError::Unavailable(format!(
                "{KVM_PATH} speaks KVM API version {version}, kiln needs {}",
                kvm_bindings::KVM_API_VERSION
            )));
        }
        for (cap, name) in [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::Irqfd, "KVM_CAP_IRQFD"),
            (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(HvError::Unavailable(format!("{KVM_PATH} lacks {name}, which kiln needs")));
            }
        }
        Ok(Kvm { kvm })
    }
}

impl Hypervisor for Kvm {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn create_vm(&self) -> Result<Box<dyn HvVm>, HvError> {
        let fd = self.kvm.create_vm().map_err(|e| HvError::op("KVM_CREATE_VM", e))?;
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| HvError::op("KVM_GET_SUPPORTED_CPUID", e))?;
        Ok(Box::new(KvmVm { fd: Arc::new(fd), memory: Vec::new(), next_slot: 0, cpuid }))
    }
}

/// A KVM VM. Keeps the guest memory it mapped alive.
pub struct KvmVm {
    fd: Arc<VmFd>,
    memory: Vec<Arc<GuestMemoryMmap>>,
    next_slot: u32,
    cpuid: kvm_bindings::CpuId,
}

impl HvVm for KvmVm {
    fn map_memory(&mut self, mem: Arc<GuestMemoryMmap>) -> Result<(), HvError> {
        for region in mem.iter() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| HvError::Memory(format!("region at {:#x}: {e}", region.start_addr().0)))?;
            let slot = kvm_userspace_memory_region {
                slot: self.next_slot,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `host..host+len` is a live mmap owned by `mem`, which this VM keeps
            // (self.memory) for as long as the VM fd exists, so KVM never sees freed memory.
            unsafe { self.fd.set_user_memory_region(slot) }
                .map_err(|e| HvError::Memory(format!("KVM_SET_USER_MEMORY_REGION at {:#x}: {e}", region.start_addr().0)))?;
            self.next_slot += 1;
        }
        self.memory.push(mem);
        Ok(())
    }

    fn create_irqchip(&mut self) -> Result<(), HvError> {
        // The TSS and identity-map pages must sit in a hole below 4 GiB that guest RAM does not
        // use; the boot layout reserves 0xfffb_c000..0xffff_f000 for them.
        self.fd.set_identity_map_address(0xfffb_c000).map_err(|e| HvError::op("KVM_SET_IDENTITY_MAP_ADDR", e))?;
        self.fd.set_tss_address(0xfffb_d000).map_err(|e| HvError::op("KVM_SET_TSS_ADDR", e))?;
        self.fd.create_irq_chip().map_err(|e| HvError::op("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        self.fd.create_pit2(pit).map_err(|e| HvError::op("KVM_CREATE_PIT2", e))
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), HvError> {
        self.fd.register_irqfd(fd, gsi).map_err(|e| HvError::op("KVM_IRQFD", e))
    }

    fn register_ioeventfd(&self, fd: &EventFd, addr: u64, value: u32) -> Result<(), HvError> {
        self.fd
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), value)
            .map_err(|e| HvError::op("KVM_IOEVENTFD", e))
    }

    fn create_vcpu(&self, id: u8) -> Result<Box<dyn HvVcpu>, HvError> {
        let fd = self.fd.create_vcpu(u64::from(id)).map_err(|e| HvError::op("KVM_CREATE_VCPU", e))?;
        install_kick_handler()?;
        let kicker = Arc::new(KvmKicker { thread: AtomicU64::new(0), kicked: AtomicBool::new(false) });
        Ok(Box::new(KvmVcpu { fd, id, cpuid: self.cpuid.clone(), kicker }))
    }
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<(), HvError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| HvError::op("installing the vCPU kick signal handler", e));
    });
    result
}

/// Kicks a vCPU: raises a flag checked before each `KVM_RUN` and signals the thread running it.
struct KvmKicker {
    /// `pthread_t` of the thread inside `run`, 0 when none.
    thread: AtomicU64,
    kicked: AtomicBool,
}

impl VcpuKicker for KvmKicker {
    fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        let thread = self.thread.load(Ordering::SeqCst);
        if thread != 0 {
            // SAFETY: `thread` was stored by the vCPU thread from pthread_self() while inside
            // `run`; the handler for this signal is a no-op, so delivery only interrupts KVM_RUN.
            unsafe { libc::pthread_kill(thread as libc::pthread_t, kick_signal()) };
        }
    }
}

/// A KVM vCPU.
pub struct KvmVcpu {
    fd: VcpuFd,
    id: u8,
    cpuid: kvm_bindings::CpuId,
    kicker: Arc<KvmKicker>,
}

fn seg_to_kvm(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: u8::from(s.present),
        dpl: s.dpl,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: 0,
        unusable: u8::from(!s.present),
        padding: 0,
    }
}

fn seg_from_kvm(s: &kvm_segment) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present != 0,
        dpl: s.dpl,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
    }
}

impl HvVcpu for KvmVcpu {
    fn regs(&self) -> Result<Regs, HvError> {
        let r = self.fd.get_regs().map_err(|e| HvError::op("KVM_GET_REGS", e))?;
        Ok(Regs {
            rax: r.rax, rbx: r.rbx, rcx: r.rcx, rdx: r.rdx, rsi: r.rsi, rdi: r.rdi,
            rsp: r.rsp, rbp: r.rbp, rip: r.rip, rflags: r.rflags,
        })
    }

    fn set_regs(&mut self, r: &Regs) -> Result<(), HvError> {
        let k = kvm_bindings::kvm_regs {
            rax: r.rax, rbx: r.rbx, rcx: r.rcx, rdx: r.rdx, rsi: r.rsi, rdi: r.rdi,
            rsp: r.rsp, rbp: r.rbp, rip: r.rip, rflags: r.rflags,
            ..Default::default()
        };
        self.fd.set_regs(&k).map_err(|e| HvError::op("KVM_SET_REGS", e))
    }

    fn special_regs(&self) -> Result<SpecialRegs, HvError> {
        let s = self.fd.get_sregs().map_err(|e| HvError::op("KVM_GET_SREGS", e))?;
        Ok(SpecialRegs {
            cs: seg_from_kvm(&s.cs), ds: seg_from_kvm(&s.ds), es: seg_from_kvm(&s.es),
            fs: seg_from_kvm(&s.fs), gs: seg_from_kvm(&s.gs), ss: seg_from_kvm(&s.ss),
            tr: seg_from_kvm(&s.tr),
            gdt: TableReg { base: s.gdt.base, limit: s.gdt.limit },
            idt: TableReg { base: s.idt.base, limit: s.idt.limit },
            cr0: s.cr0, cr3: s.cr3, cr4: s.cr4, efer: s.efer,
        })
    }

    fn set_special_regs(&mut self, n: &SpecialRegs) -> Result<(), HvError> {
        // Start from KVM's view so fields the seam does not model (LDT, APIC base, ...) keep
        // their reset values.
        let mut s = self.fd.get_sregs().map_err(|e| HvError::op("KVM_GET_SREGS", e))?;
        s.cs = seg_to_kvm(&n.cs);
        s.ds = seg_to_kvm(&n.ds);
        s.es = seg_to_kvm(&n.es);
        s.fs = seg_to_kvm(&n.fs);
        s.gs = seg_to_kvm(&n.gs);
        s.ss = seg_to_kvm(&n.ss);
        s.tr = seg_to_kvm(&n.tr);
        s.gdt.base = n.gdt.base;
        s.gdt.limit = n.gdt.limit;
        s.idt.base = n.idt.base;
        s.idt.limit = n.idt.limit;
        s.cr0 = n.cr0;
        s.cr3 = n.cr3;
        s.cr4 = n.cr4;
        s.efer = n.efer;
        self.fd.set_sregs(&s).map_err(|e| HvError::op("KVM_SET_SREGS", e))
    }

    fn set_supported_cpuid(&mut self) -> Result<(), HvError> {
        let mut cpuid = self.cpuid.clone();
        for entry in cpuid.as_mut_slice() {
            match entry.function {
                // EBX[31:24] = initial APIC id; ECX bit 31 = running under a hypervisor.
                1 => {
                    entry.ebx = (entry.ebx & 0x00ff_ffff) | (u32::from(self.id) << 24);
                    entry.ecx |= 1 << 31;
                }
                // x2APIC id.
                0xb => entry.edx = u32::from(self.id),
                _ => {}
            }
        }
        self.fd.set_cpuid2(&cpuid).map_err(|e| HvError::op("KVM_SET_CPUID2", e))
    }

    fn setup_fpu_and_msrs(&mut self) -> Result<(), HvError> {
        let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
        self.fd.set_fpu(&fpu).map_err(|e| HvError::op("KVM_SET_FPU", e))?;
        // IA32_MISC_ENABLE: fast strings on, as firmware would leave it.
        let entries = [kvm_msr_entry { index: 0x1a0, data: 1, ..Default::default() }];
        let msrs = Msrs::from_entries(&entries).map_err(|e| HvError::Memory(format!("building MSR list: {e:?}")))?;
        let written = self.fd.set_msrs(&msrs).map_err(|e| HvError::op("KVM_SET_MSRS", e))?;
        if written != entries.len() {
            return Err(HvError::op("KVM_SET_MSRS", io::Error::other(format!("only {written} of {} MSRs set", entries.len()))));
        }
        Ok(())
    }

    fn run(&mut self) -> Result<VmExit<'_>, HvError> {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        self.kicker.thread.store(me, Ordering::SeqCst);
        if self.kicker.kicked.swap(false, Ordering::SeqCst) {
            self.kicker.thread.store(0, Ordering::SeqCst);
            return Ok(VmExit::Interrupted);
        }
        // Read only after a KVM_EXIT_INTERNAL_ERROR, when the returned exit borrows nothing.
        let run_page: *const kvm_bindings::kvm_run = self.fd.get_kvm_run();
        let result = self.fd.run();
        self.kicker.thread.store(0, Ordering::SeqCst);
        let exit = match result {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.kicker.kicked.store(false, Ordering::SeqCst);
                return Ok(VmExit::Interrupted);
            }
            Err(e) => return Err(HvError::op("KVM_RUN", e)),
        };
        Ok(match exit {
            VcpuExit::IoIn(port, data) => VmExit::PioRead { port, data },
            VcpuExit::IoOut(port, data) => VmExit::PioWrite { port, data },
            VcpuExit::MmioRead(addr, data) => VmExit::MmioRead { addr, data },
            VcpuExit::MmioWrite(addr, data) => VmExit::MmioWrite { addr, data },
            VcpuExit::Hlt => VmExit::Halt,
            VcpuExit::Shutdown => VmExit::Shutdown,
            VcpuExit::Intr => VmExit::Interrupted,
            VcpuExit::InternalError => {
                // SAFETY: `run_page` points into the kvm_run mapping owned by `self.fd`, alive for
                // this whole call; KVM_RUN has returned, so nothing writes it concurrently; the
                // exit is KVM_EXIT_INTERNAL_ERROR, for which KVM fills the `internal` member of
                // the union, whose fields are plain integers (any bit pattern is valid).
                let internal = unsafe { (*run_page).__bindgen_anon_1.internal };
                let n = (internal.ndata as usize).min(internal.data.len());
                VmExit::InternalError(format!(
                    "KVM internal error, suberror {} ({}), data {:x?}",
                    internal.suberror,
                    match internal.suberror {
                        1 => "emulation failure",
                        2 => "simultaneous exception",
                        3 => "delivery event",
                        _ => "other",
                    },
                    &internal.data[..n]
                ))
            }
            VcpuExit::FailEntry(reason, cpu) => {
                VmExit::InternalError(format!("VM entry failed: hardware reason {reason:#x} on cpu {cpu}"))
            }
            other => VmExit::Other(format!("{other:?}")),
        })
    }

    fn kicker(&self) -> Arc<dyn VcpuKicker> {
        self.kicker.clone()
    }
}
