//! The whole `Machine` path on real KVM — in-kernel irqchip and PIT, irqfd/ioeventfd wiring,
//! ELF loading, boot information, entry registers, COM1, reset handling — with tiny hand-made
//! ELF "kernels" instead of Linux (which cannot boot on kiln's nested-PVM CI machines).
//!
//! Each kernel checks the register its boot protocol promises (PVH: `ebx` = start_info;
//! 64-bit Linux protocol: `rsi` = zero page), prints "hello" on COM1 if it holds, and resets
//! the machine by triple-faulting (`ud2` with no IDT), as a guest booted with `reboot=t` does.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::time::Duration;

use kiln_vmm::boot::layout;
use kiln_vmm::machine::{Machine, MachineConfig, MachineExit, VsockConfig};
use kiln_vmm::serial::SharedBuffer;

const LOAD: u64 = 0x10_0000;

/// A minimal ELF64 executable: one PT_LOAD of `code` at `LOAD` (entry = `LOAD`), plus a
/// PT_NOTE carrying the Xen PVH entry (XEN_ELFNOTE_PHYS32_ENTRY = 18, name "Xen") if asked.
fn tiny_elf(code: &[u8], pvh: bool) -> Vec<u8> {
    let phnum: u16 = if pvh { 2 } else { 1 };
    let note_off = 64 + 56 * u64::from(phnum);
    let note_len = if pvh { 12 + 4 + 4 } else { 0 };
    let code_off = (note_off + note_len + 15) & !15;
    let mut f = Vec::new();
    // ELF header: magic, 64-bit, little-endian, version 1; ET_EXEC, EM_X86_64.
    f.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend(2u16.to_le_bytes());
    f.extend(0x3eu16.to_le_bytes());
    f.extend(1u32.to_le_bytes());
    f.extend(LOAD.to_le_bytes()); // e_entry
    f.extend(64u64.to_le_bytes()); // e_phoff
    f.extend(0u64.to_le_bytes()); // e_shoff
    f.extend(0u32.to_le_bytes()); // e_flags
    f.extend([64, 0, 56, 0]); // e_ehsize, e_phentsize
    f.extend(phnum.to_le_bytes());
    f.extend([64, 0, 0, 0, 0, 0]); // e_shentsize, e_shnum, e_shstrndx
    // PT_LOAD, flags R+X.
    f.extend(1u32.to_le_bytes());
    f.extend(5u32.to_le_bytes());
    for v in [code_off, LOAD, LOAD, code.len() as u64, code.len() as u64, 0x1000] {
        f.extend(v.to_le_bytes());
    }
    if pvh {
        // PT_NOTE.
        f.extend(4u32.to_le_bytes());
        f.extend(4u32.to_le_bytes());
        for v in [note_off, 0, 0, note_len, note_len, 4] {
            f.extend(v.to_le_bytes());
        }
        // Note: namesz 4, descsz 4, type 18, "Xen\0", entry.
        for v in [4u32, 4, 18] {
            f.extend(v.to_le_bytes());
        }
        f.extend(b"Xen\0");
        f.extend((LOAD as u32).to_le_bytes());
    }
    f.resize(code_off as usize, 0);
    f.extend(code);
    f
}

/// `check` (a compare that sets ZF when the boot register is right), then:
/// 75 rel8         jne fail
/// 66 BA F8 03     mov dx, 0x3f8
/// (B0 c; EE) x5   mov al, c; out dx, al
/// fail: 0F 0B     ud2 -> no IDT -> triple fault -> reset
fn kernel_code(check: &[u8]) -> Vec<u8> {
    let mut print = vec![0x66, 0xba, 0xf8, 0x03];
    for &c in b"hello" {
        print.extend([0xb0, c, 0xee]);
    }
    let mut code = check.to_vec();
    code.extend([0x75, print.len() as u8]);
    code.extend(print);
    code.extend([0x0f, 0x0b]);
    code
}

fn boot(kernel: &[u8], vcpus: u8) -> Option<(MachineExit, String)> {
    let hv = common::hypervisor_or_skip()?;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernel");
    std::fs::File::create(&path).unwrap().write_all(kernel).unwrap();
    let console = SharedBuffer::default();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let cfg = MachineConfig {
        mem_size: layout::MIN_MEMORY,
        vcpus,
        kernel: path,
        initrd: None,
        cmdline: "console=ttyS0 reboot=t".into(),
        console: Box::new(console.clone()),
        vsock: Some(VsockConfig { guest_cid: 3, uds_path: dir.path().join("v.sock") }),
        disks: vec![kiln_vmm::machine::DiskConfig { path: disk, read_only: false }],
    };
    let machine = Machine::start(hv.as_ref(), cfg).expect("start");
    let exit = machine.wait(Duration::from_secs(30)).unwrap_or_else(|| machine.stop());
    let out = String::from_utf8_lossy(&console.contents()).into_owned();
    Some((exit, out))
}

#[test]
fn pvh_kernel_gets_start_info_in_ebx_prints_and_resets() {
    // 81 FB imm32   cmp ebx, PVH_INFO_START   (32-bit protected mode at the PVH entry)
    let mut check = vec![0x81, 0xfb];
    check.extend((layout::PVH_INFO_START as u32).to_le_bytes());
    let Some((exit, out)) = boot(&tiny_elf(&kernel_code(&check), true), 1) else { return };
    assert!(matches!(exit, MachineExit::GuestReset), "{exit:?}");
    assert_eq!(out, "hello");
}

#[test]
fn linux64_kernel_gets_the_zero_page_in_rsi_prints_and_resets_with_two_vcpus() {
    // 48 81 FE imm32   cmp rsi, ZERO_PAGE_START   (64-bit long mode, Linux boot protocol)
    let mut check = vec![0x48, 0x81, 0xfe];
    check.extend((layout::ZERO_PAGE_START as u32).to_le_bytes());
    let Some((exit, out)) = boot(&tiny_elf(&kernel_code(&check), false), 2) else { return };
    assert!(matches!(exit, MachineExit::GuestReset), "{exit:?}");
    assert_eq!(out, "hello");
}

#[test]
fn i8042_reset_is_reported_as_a_guest_reset() {
    // 64-bit Linux protocol, no check:
    // B0 FE        mov al, 0xfe
    // E6 64        out 0x64, al     (keyboard controller: pulse reset, as reboot=k does)
    // EB FE        jmp $            (never reached if the reset is honoured)
    let Some((exit, _)) = boot(&tiny_elf(&[0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe], false), 1) else { return };
    assert!(matches!(exit, MachineExit::GuestReset), "{exit:?}");
}
