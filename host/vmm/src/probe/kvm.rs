//! The KVM probe (x86_64 Linux): `/dev/kvm` opens and has what kiln needs; the KVM module is
//! not the nested PVM implementation (`kvm_pvm`, which runs guest ring 3 natively but emulates
//! ring 0, so an unmodified kernel cannot boot); and a tiny ring-0 guest loop runs at hardware
//! speed. The timing guest also measures VMM start to first guest instruction.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ProbeReport;
use crate::boot::cpu;
use crate::hypervisor::{self, Regs};
use crate::vcpu::{run_vcpu, Buses, RunLimits, RunOutcome, Unclaimed};

/// Loop iterations of the timing guest; natively well under a millisecond.
const LOOP_ITERATIONS: u32 = 200_000;
/// Above this the ring-0 loop was emulated, not run on hardware.
const NATIVE_BOUND: Duration = Duration::from_millis(100);

/// Runs the probe (a few milliseconds on a capable host; bounded at a few seconds otherwise).
pub fn probe() -> ProbeReport {
    let mut report = ProbeReport { linux_boot: Ok(()), start_to_first_instruction: None, ring0_loop: None };
    let start = Instant::now();
    let hv = match hypervisor::open_default() {
        Ok(hv) => hv,
        Err(e) => {
            report.linux_boot = Err(e.to_string());
            return report;
        }
    };
    match time_ring0_guest(hv.as_ref(), start) {
        Ok((first, looped)) => {
            report.start_to_first_instruction = Some(first);
            report.ring0_loop = Some(looped);
            if looped > NATIVE_BOUND {
                report.linux_boot = Err(format!(
                    "KVM present but ring-0 guest code is emulated ({LOOP_ITERATIONS} loop iterations took {looped:?}): \
                     a Linux guest cannot boot; use the QEMU backend"
                ));
            }
        }
        Err(e) => report.linux_boot = Err(format!("KVM present but cannot run a tiny guest: {e}")),
    }
    if report.linux_boot.is_ok() && Path::new("/sys/module/kvm_pvm").exists() {
        report.linux_boot = Err("KVM present but cannot run a Linux guest: it is the nested PVM implementation \
                                 (kvm_pvm), which emulates guest ring 0; use the QEMU backend"
            .into());
    }
    report
}

/// Runs: `out 0x80, al` (marks the first instruction), a `dec ecx; jnz` loop, `out` again,
/// `hlt`. Returns (start to first exit, loop time).
fn time_ring0_guest(hv: &dyn hypervisor::Hypervisor, start: Instant) -> Result<(Duration, Duration), String> {
    let mut vm = hv.create_vm().map_err(|e| e.to_string())?;
    let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).map_err(|e| e.to_string())?);
    vm.map_memory(mem.clone()).map_err(|e| e.to_string())?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| e.to_string())?;
    // E6 80            out 0x80, al
    // B9 imm32         mov ecx, LOOP_ITERATIONS
    // FF C9            dec ecx
    // 75 FC            jnz -4
    // E6 80            out 0x80, al
    // F4               hlt
    let mut code = vec![0xe6, 0x80, 0xb9];
    code.extend(LOOP_ITERATIONS.to_le_bytes());
    code.extend([0xff, 0xc9, 0x75, 0xfc, 0xe6, 0x80, 0xf4]);
    let entry = 0x1_0000;
    mem.write_slice(&code, GuestAddress(entry)).map_err(|e| e.to_string())?;
    cpu::write_gdt(&mem).map_err(|e| e.to_string())?;
    let cr3 = cpu::write_identity_page_tables(&mem).map_err(|e| e.to_string())?;
    vcpu.set_special_regs(&cpu::long_mode_sregs(cr3, false)).map_err(|e| e.to_string())?;
    vcpu.set_regs(&Regs { rip: entry, rsp: 0x8000, rflags: 2, ..Default::default() }).map_err(|e| e.to_string())?;

    let buses = Buses::default();
    let limits = RunLimits { timeout: Duration::from_secs(5), max_exits: 16, unclaimed_pio: Unclaimed::Ignore, unclaimed_mmio: Unclaimed::Fail };
    let stop = AtomicBool::new(false);
    // First exit: the first `out`.
    let first_limits = RunLimits { max_exits: 1, ..limits.clone() };
    let first = match run_vcpu(vcpu.as_mut(), &buses, &first_limits, &stop) {
        Err(crate::vcpu::VcpuError::TooManyExits(_)) => start.elapsed(),
        other => return Err(format!("timing guest ended early: {other:?}")),
    };
    let loop_start = Instant::now();
    match run_vcpu(vcpu.as_mut(), &buses, &limits, &stop) {
        Ok((RunOutcome::Halted, _)) => Ok((first, loop_start.elapsed())),
        Err(crate::vcpu::VcpuError::Timeout(..)) => Ok((first, loop_start.elapsed())),
        other => Err(format!("timing guest: {other:?}")),
    }
}
