//! `kiln doctor`: what kiln found on this machine, and what it will use, with reasons.

use std::path::Path;

use anyhow::Result;
use kiln_sandbox::accel::{self, Accel, HostOs};
use kiln_sandbox::{choose_backend, BackendKind, GuestArch, GuestImage};
use kiln_sys::hv::Native;

fn line(ok: bool, what: &str, detail: &str) {
    println!("{} {what}: {detail}", if ok { "[ok]  " } else { "[--]  " });
}

pub fn run(root: &Path) -> Result<()> {
    let cache = crate::paths::cache_dir()?;
    println!("kiln {}", env!("CARGO_PKG_VERSION"));
    line(true, "store", &root.display().to_string());
    let guest = GuestImage::locate();
    match &guest {
        Ok(img) => {
            let how = if img.arch.is_host() { "native" } else { "full-system emulation: KILN_GUEST_ARCH" };
            line(true, "guest image", &format!("{} guest ({how}): {} + {}", img.arch.name(), img.kernel.display(), img.initrd.display()));
        }
        Err(e) => line(false, "guest image", &e.to_string()),
    }
    let arch = guest.as_ref().map_or(GuestArch::of_host().unwrap_or(GuestArch::X86_64), |g| g.arch);
    let qemu = std::env::var("KILN_QEMU").unwrap_or_else(|_| kiln_sandbox::qemu_binary(arch).into());
    let qemu_version = match std::process::Command::new(&qemu).arg("--version").output() {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_string()),
        _ => None,
    };
    let forced = match std::env::var("KILN_QEMU_ACCEL").ok().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match Accel::parse(&a) {
            Some(accel) => Some(accel),
            None => {
                line(false, "KILN_QEMU_ACCEL", &format!("{a:?} is not kvm, hvf, whpx or tcg: every QEMU start fails until it is fixed"));
                None
            }
        },
    };
    let probe = Probe { os: HostOs::current(), host_arch: GuestArch::of_host(), native: kiln_sys::hv::native(), builtin: kiln_sandbox::builtin_status(&cache) };
    for (ok, what, detail) in backend_lines(&probe, arch, &qemu, qemu_version.as_deref(), forced) {
        line(ok, what, &detail);
    }
    match kiln_sandbox::virtiofs::find(&cache) {
        _ if HostOs::current() == HostOs::Windows => line(false, "shared directories (run -v)", kiln_sandbox::qemu::NO_SHARES_ON_WINDOWS),
        Ok(None) if HostOs::current() == HostOs::MacOs => line(true, "shared directories (run -v)", "virtio-9p (virtiofsd runs on Linux only)"),
        Ok(Some(p)) => line(true, "shared directories (run -v)", &format!("virtiofs with {}", p.display())),
        Ok(None) => line(false, "shared directories (run -v)", "virtio-9p (slow on many files): no virtiofsd (examples/setup-and-build.sh builds one, or set KILN_VIRTIOFSD)"),
        Err(e) => line(false, "shared directories (run -v)", &e.to_string()),
    }
    match kiln_sandbox::snapshot::enabled() {
        Ok(false) => line(false, "VM snapshots", "off (KILN_SNAPSHOT=0): every VM boots"),
        Err(e) => line(false, "VM snapshots", &e.to_string()),
        Ok(true) => {
            let saved = kiln_sandbox::snapshot::survey(&cache);
            let detail = match saved.iter().max_by_key(|(len, _)| *len) {
                None => "on (QEMU backend): the first VM of each kind boots and is saved, later ones are restored from it".to_string(),
                Some((len, made)) => format!(
                    "on (QEMU backend): {} saved, up to {:.0} MiB, made in {:.2} s; VMs of those kinds are restored instead of booted",
                    saved.len(),
                    *len as f64 / 1048576.0,
                    made.as_secs_f64()
                ),
            };
            line(true, "VM snapshots", &detail);
        }
    }
    let (ready, missing): (Vec<_>, Vec<_>) = kiln_solver::emulator_survey().into_iter().partition(|(_, r)| r.is_ok());
    let names = |v: &[(String, Result<std::path::PathBuf, String>)]| v.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", ");
    let native = format!("linux/{} (native)", kiln_runtime::emulate::host_arch());
    if missing.is_empty() {
        line(true, "build platforms", &format!("{native}, {} (user-mode emulation)", names(&ready)));
    } else if ready.is_empty() {
        line(false, "build platforms", &format!("{native} only (why not the others: below)"));
    } else {
        line(true, "build platforms", &format!("{native}, {} (user-mode emulation)", names(&ready)));
    }
    for (platform, why) in &missing {
        if let Err(why) = why {
            line(false, &format!("  not {platform}"), why);
        }
    }
    match std::process::Command::new("git").arg("--version").output() {
        Ok(out) if out.status.success() => line(true, "git (ADD of git URLs)", String::from_utf8_lossy(&out.stdout).trim()),
        _ => line(false, "git (ADD of git URLs)", "not found (Debian: apt-get install git)"),
    }
    match choose_backend(BackendKind::Auto, &cache) {
        Ok((_, why)) => println!("\nbuilds will use: {why}"),
        Err(e) => println!("\nno usable backend: {e}"),
    }
    Ok(())
}

/// What the host offers for running guests (probed, or simulated in tests).
struct Probe {
    os: HostOs,
    host_arch: Option<GuestArch>,
    native: Native,
    builtin: Result<(), String>,
}

/// The doctor's lines about backends: the built-in VMM, QEMU, and QEMU's accelerator for the
/// `guest` architecture's guest.
fn backend_lines(p: &Probe, guest: GuestArch, qemu: &str, qemu_version: Option<&str>, forced: Option<Accel>) -> Vec<(bool, &'static str, String)> {
    let mut lines = vec![match &p.builtin {
        Ok(()) => (true, "built-in VMM", "KVM can boot Linux guests here".to_string()),
        Err(why) => (false, "built-in VMM", why.clone()),
    }];
    lines.push(match qemu_version {
        Some(v) => (true, "QEMU", v.to_string()),
        None => (false, "QEMU", format!("{qemu} not found ({})", p.os.qemu_install_hint())),
    });
    let plan = accel::plan(p.os, p.host_arch, &p.native, guest, forced);
    lines.push((plan.accel.is_native(), "QEMU accelerator", plan.why));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(lines: &[(bool, &str, String)]) -> String {
        lines.iter().map(|(ok, what, d)| format!("{} {what}: {d}\n", if *ok { "[ok]" } else { "[--]" })).collect()
    }

    #[test]
    fn an_apple_silicon_mac_without_qemu_is_told_what_to_install_and_what_runs_where() {
        let mac = Probe {
            os: HostOs::MacOs,
            host_arch: Some(GuestArch::Arm64),
            native: Native::Available,
            builtin: Err("kiln's built-in VMM is not available on this host: its Hypervisor.framework seam is not implemented yet; use --backend qemu (QEMU with -accel hvf)".into()),
        };
        let text = render(&backend_lines(&mac, GuestArch::Arm64, "qemu-system-aarch64", None, None));
        assert_eq!(
            text,
            "[--] built-in VMM: kiln's built-in VMM is not available on this host: its Hypervisor.framework seam is not implemented yet; use --backend qemu (QEMU with -accel hvf)\n\
             [--] QEMU: qemu-system-aarch64 not found (Homebrew: brew install qemu)\n\
             [ok] QEMU accelerator: hvf (one boot confirms it, then cached); experimental: not yet run on real hardware, KILN_QEMU_ACCEL=tcg avoids it\n"
        );
    }

    #[test]
    fn a_windows_host_without_the_hypervisor_platform_runs_under_tcg_and_says_why() {
        let windows = Probe {
            os: HostOs::Windows,
            host_arch: Some(GuestArch::X86_64),
            native: Native::Unavailable("the Windows Hypervisor Platform is not enabled".into()),
            builtin: Err("not here".into()),
        };
        let lines = backend_lines(&windows, GuestArch::X86_64, "qemu-system-x86_64", Some("QEMU emulator version 9.2.0"), None);
        assert_eq!(lines[1], (true, "QEMU", "QEMU emulator version 9.2.0".to_string()));
        assert_eq!(lines[2], (false, "QEMU accelerator", "tcg (about 10x slower), because the Windows Hypervisor Platform is not enabled".to_string()));
        let missing = backend_lines(&windows, GuestArch::X86_64, "qemu-system-x86_64", None, None);
        assert!(missing[1].2.contains("winget install"), "{:?}", missing[1]);
    }
}
