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
    match GuestImage::locate() {
        Ok(img) => line(true, "guest image", &format!("{} + {}", img.kernel.display(), img.initrd.display())),
        Err(e) => line(false, "guest image", &e.to_string()),
    }
    #[cfg(target_os = "linux")]
    match kiln_sandbox::builtin::can_boot_linux(&cache) {
        Ok(()) => line(true, "built-in VMM", "KVM can boot Linux guests here"),
        Err(why) => line(false, "built-in VMM", &why),
    }
    let qemu = std::env::var("KILN_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    match std::process::Command::new(&qemu).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            line(true, "QEMU", text.lines().next().unwrap_or("").trim());
        }
        _ => line(false, "QEMU", &format!("{qemu} not found (Debian: apt-get install qemu-system-x86)")),
    }
    match choose_backend(BackendKind::Auto, &cache) {
        Ok((_, why)) => println!("\nbuilds will use: {why}"),
        Err(e) => println!("\nno usable backend: {e}"),
    }
    Ok(())
}
