//! The whole `Machine` path on real KVM — in-kernel irqchip and PIT, irqfd/ioeventfd wiring,
//! ELF loading, boot information, entry registers, COM1, reset handling — with tiny hand-made
//! ELF "kernels" instead of Linux (which cannot boot on kiln's nested-PVM CI machines).
//!
//! Each kernel checks the register its boot protocol promises (PVH: `ebx` = start_info;
//! 64-bit Linux protocol: `rsi` = zero page), prints "hello" on COM1 if it holds, and resets
//! the machine by triple-faulting (`ud2` with no IDT), as a guest booted with `reboot=t` does.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))] // the VMM runs on x86_64 Linux only
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
    let exit = machine.wait(Duration::from_secs(30)).expect("the tiny kernel stops the machine by itself");
    assert!(!machine.is_running());
    assert_eq!(machine.wait(Duration::ZERO).as_ref(), Some(&exit), "the exit is sticky");
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

#[test]
fn serial_interrupt_reaches_the_guest_through_irqfd_and_the_in_kernel_pic() {
    // Image: code at LOAD, IDTR at LOAD+0x800, IDT at LOAD+0x1000 (vectors 0..0x24).
    const IDTR: u64 = LOAD + 0x800;
    const IDT: u64 = LOAD + 0x1000;
    const VECTOR: u64 = 0x24; // PIC master remapped to 0x20; COM1 is IRQ 4
    let mut code = Vec::new();
    // Program the 8259s (ICW1..4), master base 0x20 with only IRQ 4 unmasked, slave masked:
    // B0 v; E6 port   mov al, v; out port, al
    for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0x21, 0xef), (0xa0, 0x11), (0xa1, 0x28), (0xa1, 0x02), (0xa1, 0x01), (0xa1, 0xff)] {
        code.extend([0xb0, v, 0xe6, port]);
    }
    // 0F 01 1C 25 disp32   lidt [IDTR]
    code.extend([0x0f, 0x01, 0x1c, 0x25]);
    code.extend((IDTR as u32).to_le_bytes());
    // 66 BA F9 03; B0 02; EE   IER = THR-empty interrupt enabled: the UART raises IRQ 4 now
    // FB                       sti
    // F4; EB FD                spin: hlt; jmp spin
    code.extend([0x66, 0xba, 0xf9, 0x03, 0xb0, 0x02, 0xee, 0xfb, 0xf4, 0xeb, 0xfd]);
    let handler = LOAD + code.len() as u64;
    // handler: 66 BA F8 03; B0 'I'; EE   print "I"
    //          B0 FE; E6 64              i8042 reset -> the machine stops with GuestReset
    //          EB FE                     jmp $
    code.extend([0x66, 0xba, 0xf8, 0x03, 0xb0, b'I', 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe]);
    let mut image = code;
    image.resize(0x800, 0);
    let limit = ((VECTOR + 1) * 16 - 1) as u16;
    image.extend(limit.to_le_bytes());
    image.extend(IDT.to_le_bytes());
    image.resize(0x1000, 0);
    let mut idt = vec![0u8; ((VECTOR + 1) * 16) as usize];
    // 64-bit interrupt gate: offset 15:0, selector 0x08, IST 0, type 0x8E, offset 31:16, 63:32.
    let gate = &mut idt[(VECTOR * 16) as usize..];
    gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    gate[2..4].copy_from_slice(&0x08u16.to_le_bytes());
    gate[5] = 0x8e;
    gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    gate[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    image.extend(idt);
    let Some((exit, out)) = boot(&tiny_elf(&image, false), 1) else { return };
    assert!(matches!(exit, MachineExit::GuestReset), "{exit:?}");
    assert_eq!(out, "I", "the handler ran");
}
