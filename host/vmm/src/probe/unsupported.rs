//! The probe on hosts the VMM does not run on yet (macOS, Windows, arm64 Linux).
//!
//! The hypervisor seam ([`crate`]'s `hypervisor` module, KVM only) has no Hypervisor.framework
//! or WHPX implementation yet: this says so, and names the backends that do work there. It must
//! never claim the VMM can boot a guest.

use super::ProbeReport;

/// Why the built-in VMM cannot run on this host, with what to use instead.
pub fn reason() -> String {
    let instead = if cfg!(target_os = "macos") {
        "its Hypervisor.framework seam is not implemented yet; use --backend qemu (QEMU with -accel hvf)"
    } else if cfg!(windows) {
        "its WHPX seam is not implemented yet; use --backend qemu (QEMU with -accel whpx)"
    } else {
        "it runs on x86_64 Linux with KVM only; use --backend qemu"
    };
    format!("kiln's built-in VMM is not available on this host: {instead}")
}

/// Always "no", with [`reason`].
pub fn probe() -> ProbeReport {
    ProbeReport { linux_boot: Err(reason()), start_to_first_instruction: None, ring0_loop: None }
}
