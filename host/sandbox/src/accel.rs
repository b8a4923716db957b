//! Which accelerator QEMU runs a guest with, and why: the host's hypervisor (KVM on Linux,
//! Hypervisor.framework on macOS, WHPX on Windows) for a guest of the host's own architecture,
//! TCG emulation otherwise. Pure decisions from a probe result, so every host's outcome (and
//! what `kiln doctor` prints for it) is unit-tested here, on any host. Never starts anything.
//!
//! HVF and WHPX have not run on real hardware yet: plans using them say "experimental", and a
//! failed start under them falls back to TCG with a line naming the accelerator and how to
//! choose another (`KILN_QEMU_ACCEL=tcg`).

use kiln_sys::hv::Native;

use crate::GuestArch;

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Hvf,
    Whpx,
    Tcg,
}

impl Accel {
    /// Its name on QEMU's command line and in `KILN_QEMU_ACCEL`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Hvf => "hvf",
            Self::Whpx => "whpx",
            Self::Tcg => "tcg",
        }
    }

    /// Parses `kvm`, `hvf`, `whpx` or `tcg`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Kvm, Self::Hvf, Self::Whpx, Self::Tcg].into_iter().find(|a| a.name() == s)
    }

    /// A hardware accelerator (not emulation).
    pub fn is_native(self) -> bool {
        self != Self::Tcg
    }

    /// Not yet run on real hardware by kiln's tests.
    pub fn is_experimental(self) -> bool {
        matches!(self, Self::Hvf | Self::Whpx)
    }

    /// `-accel`'s value for a guest of `arch`. WHPX's in-kernel irqchip loses MSIs on many
    /// Windows 10/11 hosts (QEMU issue 346; Lima and minikube turn it off too), but on arm64
    /// Windows QEMU accepts only the in-kernel one.
    pub fn qemu_arg(self, arch: GuestArch) -> String {
        match (self, arch) {
            (Self::Whpx, GuestArch::X86_64) => "whpx,kernel-irqchip=off".into(),
            _ => self.name().into(),
        }
    }
}

/// The host's operating system, as far as accelerators go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOs {
    Linux,
    MacOs,
    Windows,
    Other,
}

impl HostOs {
    /// The OS kiln runs on.
    pub fn current() -> Self {
        match std::env::consts::OS {
            "linux" => Self::Linux,
            "macos" => Self::MacOs,
            "windows" => Self::Windows,
            _ => Self::Other,
        }
    }

    /// How to install QEMU here.
    pub fn qemu_install_hint(self) -> &'static str {
        match self {
            Self::MacOs => "Homebrew: brew install qemu",
            Self::Windows => "winget install SoftwareFreedomConservancy.QEMU, then add its folder to PATH",
            Self::Linux | Self::Other => "Debian: apt-get install qemu-system-x86, or qemu-system-arm for the arm64 guest",
        }
    }

    /// The hypervisor QEMU can use here.
    pub fn accel(self) -> Option<Accel> {
        match self {
            Self::Linux => Some(Accel::Kvm),
            Self::MacOs => Some(Accel::Hvf),
            Self::Windows => Some(Accel::Whpx),
            Self::Other => None,
        }
    }
}

/// What QEMU will run a guest with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub accel: Accel,
    /// One real boot under `accel` must succeed (its result is cached) before it is trusted;
    /// a failed one means TCG.
    pub confirm: bool,
    /// Why, in a few words, for `kiln doctor` and progress output.
    pub why: String,
}

/// The plan for a guest of `guest` on a host `os`/`host_arch` whose hypervisor probe said
/// `native`; `forced` is `KILN_QEMU_ACCEL`.
pub fn plan(os: HostOs, host_arch: Option<GuestArch>, native: &Native, guest: GuestArch, forced: Option<Accel>) -> Plan {
    if let Some(accel) = forced {
        return Plan { accel, confirm: false, why: format!("{} (KILN_QEMU_ACCEL)", accel.name()) };
    }
    let tcg = |why: String| Plan { accel: Accel::Tcg, confirm: false, why };
    if host_arch != Some(guest) {
        let host = host_arch.map_or(std::env::consts::ARCH, GuestArch::name);
        return tcg(format!("tcg: the {} guest on a {host} host is emulated", guest.name()));
    }
    let Some(accel) = os.accel() else { return tcg("tcg: kiln knows no hypervisor QEMU can use on this OS".into()) };
    let note = if accel.is_experimental() { "; experimental: not yet run on real hardware, KILN_QEMU_ACCEL=tcg avoids it" } else { "" };
    match native {
        Native::Available => Plan { accel, confirm: true, why: format!("{} (one boot confirms it, then cached){note}", accel.name()) },
        Native::Unknown(detail) => Plan { accel, confirm: true, why: format!("{}, if a first boot under it works ({detail}){note}", accel.name()) },
        Native::Unavailable(why) => tcg(format!("tcg (about 10x slower), because {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_gets_its_hypervisor_for_its_own_architecture() {
        let yes = Native::Available;
        let linux = plan(HostOs::Linux, Some(GuestArch::X86_64), &yes, GuestArch::X86_64, None);
        assert_eq!((linux.accel, linux.confirm), (Accel::Kvm, true));
        assert!(!linux.why.contains("experimental"), "{}", linux.why);

        // Apple silicon: the arm64 guest under HVF; the x86_64 guest is emulated.
        let mac = plan(HostOs::MacOs, Some(GuestArch::Arm64), &yes, GuestArch::Arm64, None);
        assert_eq!((mac.accel, mac.confirm), (Accel::Hvf, true));
        assert!(mac.why.contains("experimental") && mac.why.contains("KILN_QEMU_ACCEL=tcg"), "{}", mac.why);
        let mac_x86 = plan(HostOs::MacOs, Some(GuestArch::Arm64), &yes, GuestArch::X86_64, None);
        assert_eq!(mac_x86.accel, Accel::Tcg);
        assert_eq!(mac_x86.why, "tcg: the x86_64 guest on a arm64 host is emulated");
        // Intel Macs: the x86_64 guest under HVF.
        assert_eq!(plan(HostOs::MacOs, Some(GuestArch::X86_64), &yes, GuestArch::X86_64, None).accel, Accel::Hvf);

        let windows = plan(HostOs::Windows, Some(GuestArch::X86_64), &Native::Unknown("installed".into()), GuestArch::X86_64, None);
        assert_eq!((windows.accel, windows.confirm), (Accel::Whpx, true));
        assert!(windows.why.starts_with("whpx, if a first boot under it works (installed)"), "{}", windows.why);
    }

    #[test]
    fn no_hypervisor_means_tcg_with_the_reason_and_a_forced_choice_wins() {
        let off = Native::Unavailable("the Windows Hypervisor Platform is not enabled".into());
        let p = plan(HostOs::Windows, Some(GuestArch::X86_64), &off, GuestArch::X86_64, None);
        assert_eq!(p, Plan { accel: Accel::Tcg, confirm: false, why: "tcg (about 10x slower), because the Windows Hypervisor Platform is not enabled".into() });
        assert_eq!(plan(HostOs::Other, Some(GuestArch::X86_64), &Native::Available, GuestArch::X86_64, None).accel, Accel::Tcg);
        let forced = plan(HostOs::Linux, Some(GuestArch::X86_64), &off, GuestArch::Arm64, Some(Accel::Kvm));
        assert_eq!((forced.accel, forced.confirm, forced.why.as_str()), (Accel::Kvm, false, "kvm (KILN_QEMU_ACCEL)"));
    }

    #[test]
    fn accelerator_arguments() {
        assert_eq!(Accel::Whpx.qemu_arg(GuestArch::X86_64), "whpx,kernel-irqchip=off");
        assert_eq!(Accel::Whpx.qemu_arg(GuestArch::Arm64), "whpx");
        assert_eq!(Accel::Hvf.qemu_arg(GuestArch::Arm64), "hvf");
        assert_eq!(Accel::parse("hvf"), Some(Accel::Hvf));
        assert_eq!(Accel::parse("haxm"), None);
        assert!(Accel::Kvm.is_native() && !Accel::Tcg.is_native() && !Accel::Kvm.is_experimental());
    }
}
