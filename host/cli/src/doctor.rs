//! `kiln doctor`: what kiln found on this machine, and what it will use, with reasons.

use std::path::Path;

use anyhow::Result;
use kiln_sandbox::{choose_backend, BackendKind, GuestImage};

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
    #[cfg(target_os = "linux")]
    match kiln_sandbox::builtin::can_boot_linux(&cache) {
        Ok(()) => line(true, "built-in VMM", "KVM can boot Linux guests here"),
        Err(why) => line(false, "built-in VMM", &why),
    }
    let arch = guest.as_ref().map_or(kiln_sandbox::GuestArch::X86_64, |g| g.arch);
    let qemu = std::env::var("KILN_QEMU").unwrap_or_else(|_| kiln_sandbox::qemu_binary(arch).into());
    match std::process::Command::new(&qemu).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            line(true, "QEMU", text.lines().next().unwrap_or("").trim());
        }
        _ => line(false, "QEMU", &format!("{qemu} not found (Debian: apt-get install qemu-system-x86 qemu-system-arm)")),
    }
    match kiln_sandbox::virtiofs::find(&cache) {
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
