//! x86-64 CPU state for entering a guest in 64-bit long mode: GDT, identity page tables and
//! the matching segment/control registers.
//!
//! Used by the Linux boot path (PVH / 64-bit boot protocol) and by the hand-made test guests,
//! so both enter long mode exactly the same way. Only writes guest memory and builds plain
//! [`SpecialRegs`]; never touches the hypervisor.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::hypervisor::{Segment, SpecialRegs, TableReg};

/// Where the boot GDT lives (below the real-mode IVT's end is free after boot).
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT: any exception before the guest loads its own triple-faults.
pub const IDT_ADDR: u64 = 0x520;
/// Page-table pages: PML4, one PDPT, four PDs of 2 MiB pages (identity map of 0..4 GiB).
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Bytes of guest memory the identity map covers.
pub const IDENTITY_MAPPED: u64 = 4 << 30;

/// GDT selectors of [`write_gdt`]'s table.
pub const KERNEL_CODE: u16 = 0x08;
pub const KERNEL_DATA: u16 = 0x10;
pub const TSS: u16 = 0x18;
/// User data and code (RPL 3 included).
pub const USER_DATA: u16 = 0x23;
pub const USER_CODE: u16 = 0x2b;

/// Flags (access byte + high nibble of the flags byte) of each GDT entry, in selector order.
const GDT_FLAGS: [u16; 6] = [
    0,      // null
    0xa09b, // kernel code: G, L, present, DPL 0, code exec/read accessed
    0xc093, // kernel data: G, D/B, present, DPL 0, data read/write accessed
    0x808b, // TSS: G, present, busy 64-bit TSS
    0xc0f3, // user data: DPL 3
    0xa0fb, // user code: L, DPL 3
];

/// Encodes one GDT descriptor.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// Decodes a GDT descriptor into the segment register it loads as `selector`.
pub fn segment_from_entry(entry: u64, selector: u16) -> Segment {
    let g = (entry >> 55) & 1 == 1;
    let raw_limit = ((entry >> 32) & 0x000f_0000) as u32 | (entry & 0xffff) as u32;
    Segment {
        base: ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff),
        limit: if g { (raw_limit << 12) | 0xfff } else { raw_limit },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: (entry >> 47) & 1 == 1,
        dpl: ((entry >> 45) & 3) as u8,
        db: (entry >> 54) & 1 == 1,
        s: (entry >> 44) & 1 == 1,
        l: (entry >> 53) & 1 == 1,
        g,
    }
}

/// The boot GDT's entries (flat 4 GiB segments).
pub fn gdt() -> [u64; 6] {
    GDT_FLAGS.map(|f| if f == 0 { 0 } else { gdt_entry(f, 0, 0xfffff) })
}

/// Errors writing boot structures into guest memory.
#[derive(Debug, thiserror::Error)]
#[error("writing the {what} at guest address {addr:#x}: {source}")]
pub struct WriteError {
    pub what: &'static str,
    pub addr: u64,
    #[source]
    pub source: vm_memory::GuestMemoryError,
}

fn put(mem: &GuestMemoryMmap, what: &'static str, addr: u64, value: u64) -> Result<(), WriteError> {
    mem.write_obj(value, GuestAddress(addr)).map_err(|source| WriteError { what, addr, source })
}

/// Writes the long-mode GDT and an empty IDT.
pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), WriteError> {
    write_gdt_table(mem, &gdt())
}

/// Writes `table` as the GDT and an empty IDT.
pub fn write_gdt_table(mem: &GuestMemoryMmap, table: &[u64]) -> Result<(), WriteError> {
    for (i, entry) in table.iter().enumerate() {
        put(mem, "GDT", GDT_ADDR + 8 * i as u64, *entry)?;
    }
    put(mem, "IDT", IDT_ADDR, 0)
}

/// The GDT for a PVH entry: flat 32-bit code (0x08) and data (0x10), and a TSS (0x18).
pub fn pvh_gdt() -> [u64; 4] {
    [0, gdt_entry(0xc09b, 0, 0xfffff), gdt_entry(0xc093, 0, 0xfffff), gdt_entry(0x008b, 0, 0x67)]
}

/// Register state for the PVH entry point: 32-bit protected mode, paging off (the PVH boot
/// ABI, xen/include/public/arch-x86/hvm/start_info.h).
pub fn protected_mode_sregs() -> SpecialRegs {
    let table = pvh_gdt();
    let seg = |sel: u16| segment_from_entry(table[usize::from(sel >> 3)], sel);
    let data = seg(KERNEL_DATA);
    SpecialRegs {
        cs: seg(KERNEL_CODE),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: seg(TSS),
        gdt: TableReg { base: GDT_ADDR, limit: (table.len() * 8 - 1) as u16 },
        idt: TableReg { base: IDT_ADDR, limit: 7 },
        cr0: 1 | (1 << 4),
        cr3: 0,
        cr4: 0,
        efer: 0,
    }
}

/// Writes page tables identity-mapping 0..4 GiB with 2 MiB pages, user-accessible (so ring-3
/// test guests can use them; the boot kernel replaces them at once). Returns CR3.
pub fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<u64, WriteError> {
    const PRESENT_RW_USER: u64 = 0x7;
    const HUGE: u64 = 0x80;
    put(mem, "PML4", PML4_ADDR, PDPT_ADDR | PRESENT_RW_USER)?;
    for gib in 0..4u64 {
        let pd = PD_ADDR + gib * 0x1000;
        put(mem, "PDPT", PDPT_ADDR + gib * 8, pd | PRESENT_RW_USER)?;
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            put(mem, "page directory", pd + i * 8, phys | PRESENT_RW_USER | HUGE)?;
        }
    }
    Ok(PML4_ADDR)
}

/// Register state for 64-bit long mode with paging on, flat segments, at ring 0 or ring 3.
pub fn long_mode_sregs(cr3: u64, user: bool) -> SpecialRegs {
    let table = gdt();
    let seg = |sel: u16| segment_from_entry(table[usize::from(sel >> 3)], sel);
    let (code, data) = if user { (seg(USER_CODE), seg(USER_DATA)) } else { (seg(KERNEL_CODE), seg(KERNEL_DATA)) };
    const CR0_PE: u64 = 1;
    const CR0_ET: u64 = 1 << 4;
    const CR0_PG: u64 = 1 << 31;
    const CR4_PAE: u64 = 1 << 5;
    const EFER_LME: u64 = 1 << 8;
    const EFER_LMA: u64 = 1 << 10;
    SpecialRegs {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: seg(TSS),
        gdt: TableReg { base: GDT_ADDR, limit: (table.len() * 8 - 1) as u16 },
        idt: TableReg { base: IDT_ADDR, limit: 7 },
        cr0: CR0_PE | CR0_ET | CR0_PG,
        cr3,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_match_the_architecture_manual() {
        // Well-known encodings of flat 64-bit kernel code and data descriptors.
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        let code = segment_from_entry(gdt()[1], KERNEL_CODE);
        assert!(code.l && code.present && code.s && code.g && !code.db);
        assert_eq!((code.type_, code.dpl, code.limit, code.base), (0xb, 0, 0xffff_ffff, 0));
        let user = segment_from_entry(gdt()[5], USER_CODE);
        assert_eq!(user.dpl, 3);
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_identity_page_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(cr3)).unwrap();
        assert_eq!(pml4 & !0xfff, PDPT_ADDR);
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPT_ADDR + 24)).unwrap();
        assert_eq!(pdpt3 & !0xfff, PD_ADDR + 0x3000);
        let last: u64 = mem.read_obj(GuestAddress(PD_ADDR + 0x3000 + 511 * 8)).unwrap();
        assert_eq!(last & !0xfff, IDENTITY_MAPPED - (2 << 20));
        assert_eq!(last & 0x80, 0x80);
    }

    #[test]
    fn writing_outside_memory_is_an_error() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let err = write_identity_page_tables(&mem).unwrap_err();
        assert!(err.to_string().contains("PML4"), "{err}");
    }
}
