//! Harness for hand-made guests on real KVM: guest memory, one vCPU, buses with a COM1 that
//! records output, and helpers to enter real mode or long mode (ring 0 or ring 3).
//!
//! Guests are machine-code bytes written in each test, with their assembly in comments.
#![allow(dead_code)]

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_vmm::boot::cpu;
use kiln_vmm::hypervisor::{self, HvVcpu, HvVm, Regs, Segment, SpecialRegs};
use kiln_vmm::serial::{IrqLine, SerialDevice, SharedBuffer, COM1_PORT, PORT_COUNT};
use kiln_vmm::vcpu::{run_vcpu, Buses, RunLimits, RunOutcome, RunStats, Unclaimed, VcpuError};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const MEM_SIZE: usize = 4 << 20;
/// Where test code is loaded.
pub const CODE_ADDR: u64 = 0x10000;
pub const STACK_TOP: u64 = 0x8000;

pub struct TinyVm {
    pub mem: Arc<GuestMemoryMmap>,
    pub vm: Box<dyn HvVm>,
    pub vcpu: Box<dyn HvVcpu>,
    pub buses: Buses,
    pub serial: SharedBuffer,
}

/// Opens the hypervisor. Without a usable /dev/kvm a test prints "skipped: <reason>" and
/// returns — except under CI (`CI` set), where KVM is required and its absence fails the test.
pub fn hypervisor_or_skip() -> Option<Arc<dyn hypervisor::Hypervisor>> {
    match hypervisor::open_default() {
        Ok(hv) => Some(hv),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("KVM is required under CI: {e}"),
    }
}

/// A one-vCPU VM with 4 MiB of memory and COM1, or `None` (skipped) without KVM.
pub fn tiny_vm() -> Option<TinyVm> {
    let hv = hypervisor_or_skip()?;
    let mut vm = hv.create_vm().expect("create VM");
    let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory"));
    vm.map_memory(mem.clone()).expect("map memory");
    let vcpu = vm.create_vcpu(0).expect("create vCPU");
    let serial = SharedBuffer::default();
    let buses = Buses::default();
    let com1 = Arc::new(Mutex::new(SerialDevice::new(IrqLine(None), Box::new(serial.clone()))));
    buses.pio.insert(COM1_PORT, PORT_COUNT, com1).expect("COM1 on PIO bus");
    Some(TinyVm { mem, vm, vcpu, buses, serial })
}

impl TinyVm {
    pub fn load(&self, addr: u64, code: &[u8]) {
        self.mem.write_slice(code, GuestAddress(addr)).expect("load code");
    }

    /// 16-bit real mode, CS = DS = SS = 0, at `rip`.
    pub fn enter_real_mode(&mut self, rip: u64) {
        let mut s = self.vcpu.special_regs().expect("sregs");
        let flat = |sel: u16, type_: u8| Segment { base: 0, limit: 0xffff, selector: sel, type_, present: true, s: true, ..Default::default() };
        s.cs = flat(0, 0xb);
        for seg in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
            *seg = flat(0, 0x3);
        }
        self.vcpu.set_special_regs(&s).expect("set sregs");
        self.vcpu.set_regs(&Regs { rip, rsp: STACK_TOP, rflags: 0x2, ..Default::default() }).expect("set regs");
    }

    /// 64-bit long mode with identity paging; `user` selects ring 3 (with IOPL 3, so the
    /// guest may use `in`/`out`).
    pub fn enter_long_mode(&mut self, rip: u64, user: bool) {
        cpu::write_gdt(&self.mem).expect("GDT");
        let cr3 = cpu::write_identity_page_tables(&self.mem).expect("page tables");
        let sregs: SpecialRegs = cpu::long_mode_sregs(cr3, user);
        self.vcpu.set_special_regs(&sregs).expect("set sregs");
        let rflags = if user { 0x2 | (3 << 12) } else { 0x2 };
        self.vcpu.set_regs(&Regs { rip, rsp: STACK_TOP, rflags, ..Default::default() }).expect("set regs");
    }

    pub fn run(&mut self, timeout: Duration) -> Result<(RunOutcome, RunStats), VcpuError> {
        let limits = RunLimits { timeout, max_exits: 100_000, unclaimed_pio: Unclaimed::Fail, unclaimed_mmio: Unclaimed::Fail };
        run_vcpu(self.vcpu.as_mut(), &self.buses, &limits, &AtomicBool::new(false))
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.serial.contents()).into_owned()
    }
}

/// `mov al, b; out dx, al` for each byte (dx must already hold the port). Same encoding in
/// 16- and 64-bit mode: B0 ib (mov al, imm8), EE (out dx, al).
pub fn out_bytes(text: &[u8]) -> Vec<u8> {
    text.iter().flat_map(|&b| [0xb0, b, 0xee]).collect()
}
