//! Hand-made guests on real KVM: serial output, halt, triple fault, unmapped MMIO, hangs.
//!
//! These need a usable /dev/kvm (tests run as root here and in CI). On the nested PVM KVM of
//! kiln's CI machines, ring-0 guest code is emulated (slow) and ring-3 code runs natively; both
//! kinds are covered.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))] // the VMM runs on x86_64 Linux only
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use kiln_vmm::vcpu::{RunOutcome, VcpuError};

const T: Duration = Duration::from_secs(20);

#[test]
fn real_mode_guest_writes_hello_and_halts() {
    let Some(mut vm) = tiny_vm() else { return };
    // mov dx, 0x3f8        BA F8 03
    // (mov al, c; out dx, al) x5
    // hlt                  F4
    let mut code = vec![0xba, 0xf8, 0x03];
    code.extend(out_bytes(b"hello"));
    code.push(0xf4);
    // Real mode addresses 64 KiB per segment: load where a boot sector would go.
    vm.load(0x7c00, &code);
    vm.enter_real_mode(0x7c00);
    let (outcome, stats) = vm.run(T).expect("run");
    assert_eq!(outcome, RunOutcome::Halted);
    assert_eq!(vm.output(), "hello");
    eprintln!("real mode: {} exits, first exit after {:?}", stats.exits, stats.first_exit);
}

#[test]
fn long_mode_ring0_guest_writes_hello_and_halts() {
    let Some(mut vm) = tiny_vm() else { return };
    // 66 BA F8 03          mov dx, 0x3f8
    // (B0 c; EE) x5        mov al, c; out dx, al
    // F4                   hlt
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    code.extend(out_bytes(b"hello"));
    code.push(0xf4);
    vm.load(CODE_ADDR, &code);
    vm.enter_long_mode(CODE_ADDR, false);
    let start = Instant::now();
    let (outcome, stats) = vm.run(T).expect("run");
    assert_eq!(outcome, RunOutcome::Halted);
    assert_eq!(vm.output(), "hello");
    eprintln!("long mode ring 0: {} exits in {:?}, first after {:?}", stats.exits, start.elapsed(), stats.first_exit);
}

#[test]
fn long_mode_ring3_guest_writes_hello_and_reports_its_end_through_mmio() {
    let Some(mut vm) = tiny_vm() else { return };
    // Ring 3 with IOPL 3 may use out; it may not hlt, so it ends by writing an unclaimed MMIO
    // address, which the run loop reports.
    // 66 BA F8 03               mov dx, 0x3f8
    // (B0 c; EE) x5             mov al, c; out dx, al
    // B8 2A 00 00 00            mov eax, 42
    // A3 00 00 00 D0 00 00 00 00  mov [0xd0000000], eax   (movabs moffs64)
    // EB FE                     jmp $
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    code.extend(out_bytes(b"hello"));
    code.extend([0xb8, 0x2a, 0, 0, 0]);
    code.extend([0xa3, 0, 0, 0, 0xd0, 0, 0, 0, 0]);
    code.extend([0xeb, 0xfe]);
    vm.load(CODE_ADDR, &code);
    vm.enter_long_mode(CODE_ADDR, true);
    let err = vm.run(T).expect_err("unclaimed MMIO must end the run");
    assert!(
        matches!(err, VcpuError::Unclaimed { space: "MMIO", kind: "write", addr: 0xd000_0000, len: 4 }),
        "{err}"
    );
    assert_eq!(vm.output(), "hello");
}

#[test]
fn triple_fault_is_reported_as_shutdown() {
    let Some(mut vm) = tiny_vm() else { return };
    // 0F 0B   ud2   -> #UD with an empty IDT -> #DF -> triple fault
    vm.load(CODE_ADDR, &[0x0f, 0x0b]);
    vm.enter_long_mode(CODE_ADDR, false);
    match vm.run(T) {
        Ok((RunOutcome::Shutdown, _)) => {}
        // Some nested KVMs report the fault as an internal error instead: also a report.
        Err(VcpuError::Internal(detail)) => eprintln!("triple fault reported as: {detail}"),
        other => panic!("expected a shutdown report, got {other:?}"),
    }
}

#[test]
fn spinning_guest_is_stopped_by_the_deadline() {
    let Some(mut vm) = tiny_vm() else { return };
    // EB FE   jmp $   (ring 3, so it spins natively even on nested PVM)
    vm.load(CODE_ADDR, &[0xeb, 0xfe]);
    vm.enter_long_mode(CODE_ADDR, true);
    let start = Instant::now();
    let err = vm.run(Duration::from_millis(300)).expect_err("must time out");
    assert!(matches!(err, VcpuError::Timeout(..)), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn unclaimed_port_is_reported() {
    let Some(mut vm) = tiny_vm() else { return };
    // 66 BA 34 12   mov dx, 0x1234 ; EC   in al, dx
    vm.load(CODE_ADDR, &[0x66, 0xba, 0x34, 0x12, 0xec]);
    vm.enter_long_mode(CODE_ADDR, false);
    let err = vm.run(T).expect_err("unclaimed PIO");
    assert!(matches!(err, VcpuError::Unclaimed { space: "PIO", kind: "read", addr: 0x1234, len: 1 }), "{err}");
}
