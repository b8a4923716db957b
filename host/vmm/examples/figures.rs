//! Prints kiln-vmm's figures on this host: VMM start to first guest instruction, machine
//! start time with kiln's guest kernel, and the VMM's resident memory beyond guest memory
//! (Firecracker's published bound: 5 MiB).
//!
//! `cargo run --release -p kiln-vmm --example figures` (needs /dev/kvm; the machine figures
//! also need images/out/kernel, or KILN_GUEST_DIR).

use std::path::PathBuf;
use std::time::Duration;

use kiln_vmm::machine::{Machine, MachineConfig, VsockConfig};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

/// Resident bytes of this process (VmRSS).
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident bytes within `[start, start+len)` (mincore over the guest mapping).
fn resident(start: *mut u8, len: usize) -> Option<u64> {
    let page = 4096usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `start..start+len` is a live mapping owned by the machine's guest memory for the
    // duration of this call; `vec` has one byte per page of it, as mincore requires.
    let rc = unsafe { libc::mincore(start.cast(), len, vec.as_mut_ptr()) };
    (rc == 0).then(|| vec.iter().filter(|b| **b & 1 == 1).count() as u64 * page as u64)
}

fn main() {
    let report = kiln_vmm::probe::probe();
    println!("linux boot here: {:?}", report.linux_boot);
    if let Some(t) = report.start_to_first_instruction {
        println!("VMM start (open /dev/kvm) to first guest instruction: {t:?}");
    }
    if let Some(t) = report.ring0_loop {
        println!("ring-0 loop of 200000 iterations: {t:?}");
    }
    let guest = std::env::var_os("KILN_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../images/out"));
    let Ok(hv) = kiln_vmm::hypervisor::open_default() else { return };
    if !guest.join("kernel").exists() {
        println!("no guest kernel in {}: machine figures skipped", guest.display());
        return;
    }
    let dir = std::env::temp_dir().join(format!("kiln-vmm-figures-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let before = rss().unwrap_or(0);
    let machine = match Machine::start(
        hv.as_ref(),
        MachineConfig {
            mem_size: 512 << 20,
            vcpus: 1,
            kernel: guest.join("kernel"),
            initrd: Some(guest.join("initramfs.cpio")),
            cmdline: "console=ttyS0 panic=-1 reboot=t kiln.poweroff=reboot kiln.transport=vsock:1024".into(),
            console: Box::new(std::io::sink()),
            vsock: Some(VsockConfig { guest_cid: 3, uds_path: dir.join("vsock") }),
            disks: vec![],
        },
    ) {
        Ok(m) => m,
        Err(e) => {
            println!("machine start failed: {e}");
            return;
        }
    };
    println!("Machine::start (512 MiB, kernel + initramfs loaded, vCPU running): {:?}", machine.started.elapsed());
    std::thread::sleep(Duration::from_millis(200));
    let after = rss().unwrap_or(0);
    let guest_resident: u64 = machine
        .guest_memory()
        .iter()
        .filter_map(|r| resident(r.get_host_address(MemoryRegionAddress(0)).ok()?, r.len() as usize))
        .sum();
    let overhead = after.saturating_sub(before).saturating_sub(guest_resident);
    println!(
        "RSS: +{:.1} MiB after start, of which guest memory {:.1} MiB: VMM overhead {:.2} MiB",
        after.saturating_sub(before) as f64 / 1048576.0,
        guest_resident as f64 / 1048576.0,
        overhead as f64 / 1048576.0
    );
    println!("process RSS before the machine (binary, probe): {:.1} MiB", before as f64 / 1048576.0);
    drop(machine);
    let _ = std::fs::remove_dir_all(&dir);
}
