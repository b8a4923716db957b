//! Boot loading against kiln's real guest kernel (images/out/kernel, a PVH-capable vmlinux
//! built by kernel-config/) when it has been built, and against bad inputs always.

use std::io::Write as _;

use super::*;

fn guest_memory(size: u64) -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&layout::ram_ranges(size).unwrap()).unwrap()
}

fn built_kernel() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/out/kernel");
    p.exists().then_some(p)
}

#[test]
fn command_line_announces_virtio_devices() {
    let c = command_line("console=ttyS0 panic=-1", &[(0xd000_0000, 5), (0xd000_1000, 6)]).unwrap();
    assert_eq!(c, "console=ttyS0 panic=-1 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6");
    assert!(command_line(&"x".repeat(3000), &[]).is_err());
}

#[test]
fn garbage_kernel_is_a_clear_error() {
    let mem = guest_memory(64 << 20);
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&[0x42; 8192]).unwrap();
    let spec = BootSpec { kernel: f.path().to_path_buf(), initrd: None, cmdline: "x".into(), mem_size: 64 << 20 };
    let err = load(&mem, &spec).unwrap_err();
    assert!(err.to_string().contains("neither an ELF vmlinux nor a bzImage"), "{err}");
    let missing = BootSpec { kernel: "/nonexistent/kernel".into(), ..spec };
    let err = load(&mem, &missing).unwrap_err();
    assert!(err.to_string().starts_with("cannot read guest kernel /nonexistent/kernel"), "{err}");
}

#[test]
fn real_kernel_loads_for_pvh_with_start_info_memmap_and_initrd() {
    let Some(kernel) = built_kernel() else {
        eprintln!("skipped: images/out/kernel not built (run images/build.sh)");
        return;
    };
    let mem_size = 256 << 20;
    let mem = guest_memory(mem_size);
    let mut initrd = tempfile::NamedTempFile::new().unwrap();
    initrd.write_all(&[0x5a; 10000]).unwrap();
    let spec = BootSpec {
        kernel,
        initrd: Some(initrd.path().to_path_buf()),
        cmdline: command_line("console=ttyS0", &[(0xd000_0000, 5)]).unwrap(),
        mem_size,
    };
    let boot = load(&mem, &spec).unwrap();
    assert_eq!(boot.protocol, EntryProtocol::Pvh, "kiln's kernel config enables PVH");
    assert_eq!(boot.regs.rbx, layout::PVH_INFO_START);
    assert!(boot.regs.rip >= layout::HIMEM_START && boot.regs.rip < boot.kernel_end);
    assert_eq!(boot.sregs.cr0 & 1, 1, "protected mode");
    assert_eq!(boot.sregs.efer, 0, "no long mode at a PVH entry");

    let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
    assert_eq!(info.magic, 0x336e_c578);
    assert_eq!(info.memmap_entries, 3);
    assert_eq!(info.nr_modules, 1);
    let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
    assert_eq!((module.size, module.paddr), (10000, mem_size - 0x3000));
    let mut first = [0u8; 2];
    mem.read_slice(&mut first, GuestAddress(module.paddr)).unwrap();
    assert_eq!(first, [0x5a, 0x5a]);
    let last: hvm_memmap_table_entry = mem.read_obj(GuestAddress(info.memmap_paddr + 2 * 24)).unwrap();
    assert_eq!((last.addr, last.size, last.type_), (layout::HIMEM_START, mem_size - layout::HIMEM_START, 1));
    let mut cmd = vec![0u8; spec.cmdline.len() + 1];
    mem.read_slice(&mut cmd, GuestAddress(info.cmdline_paddr)).unwrap();
    assert_eq!(&cmd[..spec.cmdline.len()], spec.cmdline.as_bytes());
    assert_eq!(cmd[spec.cmdline.len()], 0);
}

#[test]
fn initrd_too_large_for_memory_is_refused() {
    let Some(kernel) = built_kernel() else {
        eprintln!("skipped: images/out/kernel not built");
        return;
    };
    let mem = guest_memory(64 << 20);
    let initrd = tempfile::NamedTempFile::new().unwrap();
    initrd.as_file().set_len(63 << 20).unwrap();
    let spec = BootSpec { kernel, initrd: Some(initrd.path().to_path_buf()), cmdline: "x".into(), mem_size: 64 << 20 };
    let err = load(&mem, &spec).unwrap_err();
    assert!(matches!(err, BootError::Layout(LayoutError::InitrdTooLarge { .. })), "{err}");
}
