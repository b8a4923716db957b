//! The Intel MultiProcessor table (MP spec 1.4) that tells an ACPI-less Linux guest how many
//! CPUs it has and where the IOAPIC is, so vCPUs beyond the first are brought up and device
//! interrupts route through the IOAPIC.
//!
//! Written into the EBDA at [`layout::EBDA_START`], which the e820 map reserves and Linux scans
//! for the `_MP_` signature. Pure byte layout; nothing here touches the hypervisor.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;

/// Most vCPUs the table (1 KiB of EBDA) and 8-bit APIC ids allow here.
pub const MAX_VCPUS: u8 = 32;
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Interrupt lines of the (KVM in-kernel) IOAPIC.
const IOAPIC_PINS: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;

#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("{0} vCPUs requested: between 1 and {MAX_VCPUS} are supported")]
    VcpuCount(u8),
    #[error("writing the MP table at {addr:#x}: {detail}")]
    Write { addr: u64, detail: String },
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The table bytes for `vcpus` CPUs, to be placed at `base`: floating pointer, then the
/// configuration table.
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>, MpTableError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(MpTableError::VcpuCount(vcpus));
    }
    let ioapic_id = vcpus; // APIC ids 0..vcpus belong to the CPUs
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..vcpus {
        // Processor entry: type 0, APIC id, version, flags (enabled; bootstrap for CPU 0),
        // signature (family 6), feature flags (FPU, APIC), 8 reserved bytes.
        entries.extend([0, id, APIC_VERSION, 1 | if id == 0 { 2 } else { 0 }]);
        entries.extend(0x600u32.to_le_bytes());
        entries.extend(0x201u32.to_le_bytes());
        entries.extend([0u8; 8]);
        count += 1;
    }
    // Bus entry: ISA bus 0.
    entries.extend([1, 0]);
    entries.extend(b"ISA   ");
    count += 1;
    // IOAPIC entry: id, version, enabled, address.
    entries.extend([2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend(IOAPIC_ADDR.to_le_bytes());
    count += 1;
    // I/O interrupt entries: ISA IRQ n -> IOAPIC pin n (type INT, conforming polarity/trigger).
    for irq in 0..IOAPIC_PINS {
        entries.extend([3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupts: ExtINT -> LINT0, NMI -> LINT1 of every local APIC.
    entries.extend([4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend([4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = base + 16;
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend(b"PCMP");
    table.extend(((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, set below
    table.extend(b"KILN    "); // OEM id
    table.extend(b"MICROVM     "); // product id
    table.extend(0u32.to_le_bytes()); // OEM table pointer
    table.extend(0u16.to_le_bytes()); // OEM table size
    table.extend(count.to_le_bytes());
    table.extend(LAPIC_ADDR.to_le_bytes());
    table.extend([0u8; 4]); // extended table length, checksum, reserved
    table.extend(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend(b"_MP_");
    fp.extend((table_addr as u32).to_le_bytes());
    fp.extend([1, 4, 0]); // length in 16-byte units, revision, checksum (below)
    fp.extend([0u8; 5]); // feature bytes: 0 = configuration table present
    fp[10] = checksum(&fp);

    fp.extend(table);
    Ok(fp)
}

/// Writes the MP table for `vcpus` CPUs into the EBDA.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MpTableError> {
    let base = layout::EBDA_START;
    let bytes = build(vcpus, base)?;
    if base + bytes.len() as u64 > layout::HIMEM_START {
        return Err(MpTableError::Write { addr: base, detail: format!("{} bytes overflow the EBDA", bytes.len()) });
    }
    mem.write_slice(&bytes, GuestAddress(base)).map_err(|e| MpTableError::Write { addr: base, detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_signatures_and_counts() {
        let base = layout::EBDA_START;
        let b = build(4, base).unwrap();
        assert_eq!(&b[0..4], b"_MP_");
        assert_eq!(sum(&b[..16]), 0, "floating pointer checksum");
        let table_addr = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as u64;
        assert_eq!(table_addr, base + 16);
        let t = &b[16..];
        assert_eq!(&t[0..4], b"PCMP");
        let len = u16::from_le_bytes([t[4], t[5]]) as usize;
        assert_eq!(len, t.len());
        assert_eq!(sum(t), 0, "configuration table checksum");
        let count = u16::from_le_bytes([t[34], t[35]]);
        assert_eq!(count, 4 + 1 + 1 + 24 + 2);
        // First CPU is the bootstrap processor, the others only enabled.
        assert_eq!(t[44 + 3], 3);
        assert_eq!(t[44 + 20 + 3], 1);
    }

    #[test]
    fn largest_table_fits_the_ebda_and_bad_counts_are_refused() {
        let b = build(MAX_VCPUS, layout::EBDA_START).unwrap();
        assert!(layout::EBDA_START + b.len() as u64 <= layout::HIMEM_START, "{} bytes", b.len());
        assert!(build(0, 0).is_err());
        assert!(build(MAX_VCPUS + 1, 0).is_err());
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        write(&mem, 2).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(layout::EBDA_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
