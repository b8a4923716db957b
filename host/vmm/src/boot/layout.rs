//! The guest-physical memory map kiln's VMM uses for a direct Linux boot.
//!
//! ```text
//! 0x0000_0500  boot GDT (+ empty IDT at 0x520)
//! 0x0000_6000  PVH start_info, module list (0x6040), memory map (0x6080)
//! 0x0000_7000  zero page (Linux boot protocol)
//! 0x0000_8ff0  boot stack (grows down)
//! 0x0000_9000  page tables: PML4, PDPT (0xa000), 4 PDs (0xb000..0xf000)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA .. 1 MiB: reserved (legacy video/BIOS)
//! 0x0010_0000  kernel, then free RAM; the initrd goes at the top of low RAM
//! 0xc000_0000  MMIO gap to 4 GiB: virtio-mmio devices at 0xd000_0000 (4 KiB apart),
//!              IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000, KVM TSS/identity map 0xfffb_c000
//! 4 GiB ..     RAM beyond 3 GiB of guest memory continues here
//! ```
//! Pure arithmetic: nothing here touches guest memory or the hypervisor.

use vm_memory::GuestAddress;

pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MODLIST_START: u64 = 0x6040;
pub const PVH_MEMMAP_START: u64 = 0x6080;
pub const ZERO_PAGE_START: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const CMDLINE_START: u64 = 0x2_0000;
/// x86's COMMAND_LINE_SIZE in Linux 6.1.
pub const CMDLINE_MAX: usize = 2048;
pub const EBDA_START: u64 = 0x9_fc00;
pub const HIMEM_START: u64 = 0x10_0000;
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 1 << 32;
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First legacy IRQ line for virtio devices (COM1 uses 4).
pub const VIRTIO_FIRST_IRQ: u32 = 5;
/// Legacy PIC lines available to virtio devices: 5..=15 minus 8 (RTC) and 12, 14, 15 kept free.
pub const VIRTIO_MAX_DEVICES: usize = 6;
/// Smallest guest kiln will boot: kernel + initramfs + agent need room.
pub const MIN_MEMORY: u64 = 64 << 20;

/// E820 types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// Layout errors.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("guest memory of {got} MiB is too little: kiln needs at least {} MiB", MIN_MEMORY >> 20)]
    TooLittleMemory { got: u64 },
    #[error("guest memory of {got} MiB does not fit the 64-bit address space")]
    TooMuchMemory { got: u64 },
    #[error("initrd of {size} bytes does not fit between the kernel end {kernel_end:#x} and {limit:#x}")]
    InitrdTooLarge { size: u64, kernel_end: u64, limit: u64 },
    #[error("{0} virtio devices requested, at most {VIRTIO_MAX_DEVICES} fit")]
    TooManyDevices(usize),
}

/// One e820 / PVH memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    pub start: u64,
    pub size: u64,
    pub kind: u32,
}

/// Guest RAM for `mem_size` bytes: one range below the MMIO gap, the rest above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Result<Vec<(GuestAddress, usize)>, LayoutError> {
    if mem_size < MIN_MEMORY {
        return Err(LayoutError::TooLittleMemory { got: mem_size >> 20 });
    }
    let low = mem_size.min(MMIO_GAP_START);
    let mut ranges = vec![(GuestAddress(0), to_usize(low, mem_size)?)];
    if mem_size > low {
        let high = mem_size - low;
        MMIO_GAP_END.checked_add(high).ok_or(LayoutError::TooMuchMemory { got: mem_size >> 20 })?;
        ranges.push((GuestAddress(MMIO_GAP_END), to_usize(high, mem_size)?));
    }
    Ok(ranges)
}

fn to_usize(v: u64, mem_size: u64) -> Result<usize, LayoutError> {
    usize::try_from(v).map_err(|_| LayoutError::TooMuchMemory { got: mem_size >> 20 })
}

/// End of RAM below the MMIO gap.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

/// The memory map the guest kernel is given.
pub fn memory_map(mem_size: u64) -> Vec<MemoryRange> {
    let low_end = low_ram_end(mem_size);
    let mut map = vec![
        MemoryRange { start: 0, size: EBDA_START, kind: E820_RAM },
        MemoryRange { start: EBDA_START, size: HIMEM_START - EBDA_START, kind: E820_RESERVED },
        MemoryRange { start: HIMEM_START, size: low_end - HIMEM_START, kind: E820_RAM },
    ];
    if mem_size > low_end {
        map.push(MemoryRange { start: MMIO_GAP_END, size: mem_size - low_end, kind: E820_RAM });
    }
    map
}

/// Where the initrd goes: page-aligned, as high in low RAM as it fits, above the kernel.
pub fn initrd_address(mem_size: u64, kernel_end: u64, size: u64) -> Result<u64, LayoutError> {
    let limit = low_ram_end(mem_size);
    let err = LayoutError::InitrdTooLarge { size, kernel_end, limit };
    let start = limit.checked_sub(size).ok_or(err.clone())? & !0xfff;
    if start < kernel_end {
        return Err(err);
    }
    Ok(start)
}

/// MMIO base address and IRQ of the `index`-th virtio device.
pub fn virtio_slot(index: usize) -> Result<(u64, u32), LayoutError> {
    if index >= VIRTIO_MAX_DEVICES {
        return Err(LayoutError::TooManyDevices(index + 1));
    }
    Ok((VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE, VIRTIO_FIRST_IRQ + index as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range_with_the_legacy_hole_reserved() {
        let mem = 256 << 20;
        assert_eq!(ram_ranges(mem).unwrap(), vec![(GuestAddress(0), 256 << 20)]);
        let map = memory_map(mem);
        assert_eq!(map[0], MemoryRange { start: 0, size: 0x9_fc00, kind: E820_RAM });
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(map[2], MemoryRange { start: 0x10_0000, size: mem - 0x10_0000, kind: E820_RAM });
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let mem = 4u64 << 30;
        let ranges = ram_ranges(mem).unwrap();
        assert_eq!(ranges, vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]);
        let map = memory_map(mem);
        assert_eq!(map.last(), Some(&MemoryRange { start: 4 << 30, size: 1 << 30, kind: E820_RAM }));
        // Devices sit inside the gap, never in RAM.
        let (addr, irq) = virtio_slot(VIRTIO_MAX_DEVICES - 1).unwrap();
        assert!(addr >= MMIO_GAP_START && addr + VIRTIO_MMIO_SIZE <= 0xfec0_0000);
        assert!(irq <= 15);
    }

    #[test]
    fn too_little_memory_names_the_minimum() {
        let err = ram_ranges(16 << 20).unwrap_err();
        assert_eq!(err.to_string(), "guest memory of 16 MiB is too little: kiln needs at least 64 MiB");
    }

    #[test]
    fn initrd_goes_high_and_must_clear_the_kernel() {
        let mem = 128 << 20;
        assert_eq!(initrd_address(mem, 0x200_0000, 0x1000).unwrap(), mem - 0x1000);
        assert_eq!(initrd_address(mem, 0x200_0000, 0x1001).unwrap(), mem - 0x2000);
        assert!(initrd_address(mem, 0x200_0000, mem).is_err());
        assert!(initrd_address(mem, 0x200_0000, u64::MAX).is_err());
        assert!(virtio_slot(VIRTIO_MAX_DEVICES).is_err());
    }

    #[test]
    fn fixed_structures_do_not_overlap() {
        use crate::boot::cpu::{GDT_ADDR, IDT_ADDR, PD_ADDR, PML4_ADDR};
        let mut spans = [
            (GDT_ADDR, IDT_ADDR + 8),
            (PVH_INFO_START, PVH_MEMMAP_START + 24 * 8),
            (ZERO_PAGE_START, ZERO_PAGE_START + 0x1000),
            (PML4_ADDR, PD_ADDR + 4 * 0x1000),
            (CMDLINE_START, CMDLINE_START + CMDLINE_MAX as u64),
        ];
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:x?} overlaps {:x?}", w[0], w[1]);
        }
        const { assert!(BOOT_STACK_POINTER < PML4_ADDR && BOOT_STACK_POINTER > ZERO_PAGE_START + 0x1000) };
    }
}
