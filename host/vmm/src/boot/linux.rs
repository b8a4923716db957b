//! Direct Linux boot: load the kernel (PVH-capable ELF vmlinux, plain ELF vmlinux, or bzImage)
//! and initrd into guest memory, write the boot information (PVH start_info or zero page, with
//! the memory map and command line), and produce the boot vCPU's registers.
//!
//! Uses linux-loader for parsing and for writing boot structures. Knows the layout
//! ([`super::layout`]) but nothing of devices or the hypervisor beyond plain register values.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use linux_loader::loader::{self, BzImage, Cmdline, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::cpu;
use super::layout::{self, LayoutError};
use crate::hypervisor::{HvError, HvVcpu, Regs, SpecialRegs};

/// Errors of a boot, each naming the file or structure at fault.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read guest kernel {path}: {source}")]
    KernelRead { path: PathBuf, source: std::io::Error },
    #[error("guest kernel {path} is neither an ELF vmlinux nor a bzImage (elf: {elf}; bzImage: {bzimage})")]
    KernelFormat { path: PathBuf, elf: String, bzimage: String },
    #[error("cannot read guest initrd {path}: {source}")]
    InitrdRead { path: PathBuf, source: std::io::Error },
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("writing boot structures into guest memory: {0}")]
    Write(String),
    #[error("setting up the boot vCPU: {0}")]
    Vcpu(#[from] HvError),
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Complete command line (see [`command_line`]).
    pub cmdline: String,
    pub mem_size: u64,
}

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryProtocol {
    /// 32-bit PVH entry with `ebx` = start_info.
    Pvh,
    /// 64-bit Linux boot protocol with `rsi` = zero page.
    Linux64,
}

/// The boot vCPU's starting state.
#[derive(Debug, Clone)]
pub struct BootState {
    pub protocol: EntryProtocol,
    pub regs: Regs,
    pub sregs: SpecialRegs,
    pub kernel_end: u64,
}

/// Builds the command line: `base`, then `virtio_mmio.device=` for each `(addr, irq)`.
pub fn command_line(base: &str, virtio: &[(u64, u32)]) -> Result<String, BootError> {
    let mut c = Cmdline::new(layout::CMDLINE_MAX).map_err(|e| BootError::Cmdline(e.to_string()))?;
    c.insert_str(base).map_err(|e| BootError::Cmdline(format!("{e}: {base:?}")))?;
    for &(addr, irq) in virtio {
        c.add_virtio_mmio_device(layout::VIRTIO_MMIO_SIZE, GuestAddress(addr), irq, None)
            .map_err(|e| BootError::Cmdline(e.to_string()))?;
    }
    let s = c.as_cstring().map_err(|e| BootError::Cmdline(e.to_string()))?;
    s.into_string().map_err(|e| BootError::Cmdline(e.to_string()))
}

fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<KernelLoaderResult, BootError> {
    let read_err = |source| BootError::KernelRead { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(read_err)?;
    let elf = match Elf::load(mem, None, &mut file, Some(GuestAddress(layout::HIMEM_START))) {
        Ok(r) => return Ok(r),
        Err(e) => e.to_string(),
    };
    let mut file = File::open(path).map_err(read_err)?;
    match BzImage::load(mem, None, &mut file, Some(GuestAddress(layout::HIMEM_START))) {
        Ok(r) => Ok(r),
        Err(e) => Err(BootError::KernelFormat { path: path.to_path_buf(), elf, bzimage: e.to_string() }),
    }
}

/// Loads everything into `mem` (which must have the layout of [`layout::ram_ranges`]).
pub fn load(mem: &GuestMemoryMmap, spec: &BootSpec) -> Result<BootState, BootError> {
    let kernel = load_kernel(mem, &spec.kernel)?;
    let kernel_end = kernel.kernel_end;

    let initrd = match &spec.initrd {
        Some(path) => {
            let data = std::fs::read(path).map_err(|source| BootError::InitrdRead { path: path.clone(), source })?;
            let addr = layout::initrd_address(spec.mem_size, kernel_end, data.len() as u64)?;
            mem.write_slice(&data, GuestAddress(addr)).map_err(|e| BootError::Write(format!("initrd: {e}")))?;
            Some((addr, data.len() as u64))
        }
        None => None,
    };

    let cmdline = Cmdline::try_from(spec.cmdline.as_str(), layout::CMDLINE_MAX)
        .map_err(|e| BootError::Cmdline(format!("{e} ({} bytes, at most {})", spec.cmdline.len(), layout::CMDLINE_MAX - 1)))?;
    loader::load_cmdline(mem, GuestAddress(layout::CMDLINE_START), &cmdline)
        .map_err(|e| BootError::Write(format!("command line: {e}")))?;
    let map = layout::memory_map(spec.mem_size);
    let write = |e: String| BootError::Write(e);

    match kernel.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            let mut start = hvm_start_info {
                magic: 0x336e_c578, // XEN_HVM_START_MAGIC_VALUE
                version: 1,
                cmdline_paddr: layout::CMDLINE_START,
                memmap_paddr: layout::PVH_MEMMAP_START,
                memmap_entries: map.len() as u32,
                ..Default::default()
            };
            let entries: Vec<hvm_memmap_table_entry> =
                map.iter().map(|r| hvm_memmap_table_entry { addr: r.start, size: r.size, type_: r.kind, reserved: 0 }).collect();
            let modules: Vec<hvm_modlist_entry> =
                initrd.iter().map(|&(paddr, size)| hvm_modlist_entry { paddr, size, ..Default::default() }).collect();
            if !modules.is_empty() {
                start.nr_modules = modules.len() as u32;
                start.modlist_paddr = layout::PVH_MODLIST_START;
            }
            let mut params = BootParams::new(&start, GuestAddress(layout::PVH_INFO_START));
            params.set_sections(&entries, GuestAddress(layout::PVH_MEMMAP_START));
            if !modules.is_empty() {
                params.set_modules(&modules, GuestAddress(layout::PVH_MODLIST_START));
            }
            PvhBootConfigurator::write_bootparams(&params, mem).map_err(|e| write(format!("PVH start_info: {e}")))?;
            cpu::write_gdt_table(mem, &cpu::pvh_gdt()).map_err(|e| write(e.to_string()))?;
            Ok(BootState {
                protocol: EntryProtocol::Pvh,
                regs: Regs { rip: entry.0, rbx: layout::PVH_INFO_START, rflags: 2, ..Default::default() },
                sregs: cpu::protected_mode_sregs(),
                kernel_end,
            })
        }
        _ => {
            let mut bp = boot_params::default();
            if let Some(hdr) = kernel.setup_header {
                bp.hdr = hdr;
            } else {
                bp.hdr.boot_flag = 0xaa55;
                bp.hdr.header = 0x5372_6448; // "HdrS"
                bp.hdr.kernel_alignment = 0x0100_0000;
            }
            bp.hdr.type_of_loader = 0xff;
            bp.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
            bp.hdr.cmdline_size = spec.cmdline.len() as u32;
            if let Some((addr, size)) = initrd {
                bp.hdr.ramdisk_image = addr as u32;
                bp.hdr.ramdisk_size = size as u32;
            }
            for (slot, r) in bp.e820_table.iter_mut().zip(&map) {
                *slot = boot_e820_entry { addr: r.start, size: r.size, r#type: r.kind };
            }
            bp.e820_entries = map.len() as u8;
            let params = BootParams::new(&bp, GuestAddress(layout::ZERO_PAGE_START));
            LinuxBootConfigurator::write_bootparams(&params, mem).map_err(|e| write(format!("zero page: {e}")))?;
            cpu::write_gdt(mem).map_err(|e| write(e.to_string()))?;
            let cr3 = cpu::write_identity_page_tables(mem).map_err(|e| write(e.to_string()))?;
            // bzImage: the 64-bit entry is 0x200 past the protected-mode code; ELF: e_entry.
            let rip = kernel.kernel_load.0 + if kernel.setup_header.is_some() { 0x200 } else { 0 };
            Ok(BootState {
                protocol: EntryProtocol::Linux64,
                regs: Regs {
                    rip,
                    rsp: layout::BOOT_STACK_POINTER,
                    rbp: layout::BOOT_STACK_POINTER,
                    rsi: layout::ZERO_PAGE_START,
                    rflags: 2,
                    ..Default::default()
                },
                sregs: cpu::long_mode_sregs(cr3, false),
                kernel_end,
            })
        }
    }
}

/// Puts a vCPU in its boot state: CPUID, FPU/MSRs, then (boot vCPU only) the entry registers.
/// Application processors wait for INIT/SIPI from the boot CPU through the in-kernel LAPIC.
pub fn configure_vcpu(vcpu: &mut dyn HvVcpu, boot: Option<&BootState>) -> Result<(), BootError> {
    vcpu.set_supported_cpuid()?;
    vcpu.setup_fpu_and_msrs()?;
    if let Some(b) = boot {
        vcpu.set_special_regs(&b.sregs)?;
        vcpu.set_regs(&b.regs)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "linux_tests.rs"]
mod tests;
