//! The board QEMU emulates for each guest architecture: its binary, machine and CPU flags, and
//! the console device the kernel writes to. Everything else on QEMU's command line (memory,
//! the agent's virtio-serial port, the network, shares) is the same on both: `-M microvm` and
//! `-M virt` both take virtio-mmio devices. Pure; never starts anything.

use crate::accel::Accel;
use crate::guest::GuestArch;

/// QEMU's binary for guests of `arch` (`KILN_QEMU` overrides it).
pub fn qemu_binary(arch: GuestArch) -> &'static str {
    match arch {
        GuestArch::X86_64 => "qemu-system-x86_64",
        GuestArch::Arm64 => "qemu-system-aarch64",
    }
}

/// The serial console's name in the guest (`console=`).
pub fn console(arch: GuestArch) -> &'static str {
    match arch {
        GuestArch::X86_64 => "ttyS0",
        GuestArch::Arm64 => "ttyAMA0",
    }
}

/// `-M`, `-accel` and `-cpu` for `arch` under `accel`.
pub fn board(arch: GuestArch, accel: Accel) -> Vec<String> {
    let native = accel.is_native();
    let (machine, cpu) = match arch {
        // The PIT, PIC and RTC stay on: without the PIT/PIC a TCG guest hangs at boot, without
        // the RTC it boots ~1 s slower and has no wall clock. acpi=off makes QEMU announce the
        // virtio-mmio devices on the kernel command line (the guest kernel has no ACPI).
        GuestArch::X86_64 => ("microvm,x-option-roms=off,isa-serial=on,acpi=off", if native { "host" } else { "max" }),
        // virt describes its devices in the device tree it generates; no firmware is run
        // (`-kernel` boots the Image directly). cortex-a72 is the quickest CPU under TCG that
        // has everything the guest's binaries use; a native accelerator takes the host's.
        GuestArch::Arm64 => ("virt,gic-version=max", if native { "host" } else { "cortex-a72" }),
    };
    vec!["-M".into(), machine.into(), "-accel".into(), accel.qemu_arg(arch), "-cpu".into(), cpu.into()]
}

/// Kernel arguments only one architecture understands, for a boot under `accel`.
pub fn kernel_args(arch: GuestArch, accel: Accel, tsc_khz: Option<u64>) -> String {
    match arch {
        // Under TCG the kernel often fails to calibrate the TSC and falls back to 10 ms
        // jiffies; telling it the TSC is reliable, and its rate, keeps a precise clock.
        GuestArch::X86_64 if !accel.is_native() => match tsc_khz {
            Some(khz) => format!(" tsc=reliable tsc_early_khz={khz}"),
            None => " tsc=reliable".to_string(),
        },
        GuestArch::X86_64 | GuestArch::Arm64 => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_per_architecture() {
        assert_eq!(board(GuestArch::X86_64, Accel::Tcg), ["-M", "microvm,x-option-roms=off,isa-serial=on,acpi=off", "-accel", "tcg", "-cpu", "max"]);
        assert_eq!(board(GuestArch::Arm64, Accel::Hvf)[3..], ["hvf", "-cpu", "host"]);
        assert_eq!(board(GuestArch::X86_64, Accel::Whpx)[3..], ["whpx,kernel-irqchip=off", "-cpu", "host"]);
        assert_eq!(board(GuestArch::Arm64, Accel::Tcg)[1], "virt,gic-version=max");
        assert_eq!((qemu_binary(GuestArch::Arm64), console(GuestArch::Arm64)), ("qemu-system-aarch64", "ttyAMA0"));
        assert_eq!(kernel_args(GuestArch::X86_64, Accel::Tcg, Some(2_600_000)), " tsc=reliable tsc_early_khz=2600000");
        assert_eq!(kernel_args(GuestArch::X86_64, Accel::Kvm, Some(1)), "");
        assert_eq!(kernel_args(GuestArch::Arm64, Accel::Tcg, None), "");
    }
}
