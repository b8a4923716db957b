//! `RegisterBinfmt`: running foreign-architecture binaries (cross-platform builds) through a
//! user-mode emulator the host uploaded, registered with the kernel's binfmt_misc.
//!
//! The registration uses the `F` (fix binary) flag: the kernel opens the interpreter at
//! registration time, in the agent's mount namespace, so the emulator also serves processes
//! chrooted into an image's root where its path does not exist; and `P` (preserve argv[0]), as
//! Debian's qemu-user-static registers itself: without it a program exec'd under another
//! name than its path loses that name (busybox's shell runs a pipeline's applets by exec'ing
//! `/proc/self/exe` with the applet's name as argv[0]: `ls | wc -l` ran the wrong program).
//! The emulator must read that flag from the auxiliary vector (`AT_FLAGS`), as Debian 12's
//! QEMU 7.2 does (tests/e2e/multiplatform.rs runs a pipeline under it); an older one would see
//! its arguments shifted by one, so emulators given with `KILN_QEMU_USER_DIR` must do too.

use std::fs;
use std::path::Path;

use nix::mount::{mount, MsFlags};

use crate::error::{Context, Error, Result};

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The registration line, after checking every field (the kernel splits it on `:`).
pub fn registration(name: &str, magic: &str, mask: &str, interpreter: &str) -> Result<String> {
    let escaped = |what: &str, v: &str| -> Result<()> {
        let bytes = v.as_bytes();
        let ok = !v.is_empty()
            && bytes.len().is_multiple_of(4)
            && bytes.chunks(4).all(|c| c[0] == b'\\' && c[1] == b'x' && c[2].is_ascii_hexdigit() && c[3].is_ascii_hexdigit());
        if ok {
            Ok(())
        } else {
            Err(Error::msg(format!("binfmt: {what} must be \\xHH bytes, got {v:?}")))
        }
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Error::msg(format!("binfmt: bad name {name:?}")));
    }
    escaped("magic", magic)?;
    escaped("mask", mask)?;
    if magic.len() != mask.len() {
        return Err(Error::msg("binfmt: magic and mask differ in length".to_string()));
    }
    if !interpreter.starts_with('/') || interpreter.contains(':') || interpreter.chars().any(char::is_whitespace) {
        return Err(Error::msg(format!("binfmt: bad interpreter path {interpreter:?}")));
    }
    Ok(format!(":{name}:M:0:{magic}:{mask}:{interpreter}:FP"))
}

pub fn register(name: &str, magic: &str, mask: &str, interpreter: &str) -> Result<()> {
    let line = registration(name, magic, mask, interpreter)?;
    let dir = Path::new(BINFMT_DIR);
    if !dir.join("register").exists() {
        mount(
            Some("binfmt_misc"),
            dir,
            Some("binfmt_misc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .ctx(|| format!("mount binfmt_misc on {BINFMT_DIR}"))?;
    }
    if dir.join(name).exists() {
        return Ok(());
    }
    fs::write(dir.join("register"), line.as_bytes())
        .ctx(|| format!("register {interpreter} with binfmt_misc as {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_lines_are_checked() {
        let line = registration("kiln-aarch64", "\\x7f\\x45", "\\xff\\xfe", "/run/kiln/emu/qemu-aarch64-static").expect("ok");
        assert_eq!(line, ":kiln-aarch64:M:0:\\x7f\\x45:\\xff\\xfe:/run/kiln/emu/qemu-aarch64-static:FP");
        assert!(registration("a:b", "\\x7f", "\\xff", "/x").is_err());
        assert!(registration("a", "\\x7f:", "\\xff", "/x").is_err());
        assert!(registration("a", "\\x7f", "\\xff\\xff", "/x").is_err());
        assert!(registration("a", "\\x7f", "\\xff", "rel").is_err());
        assert!(registration("a", "\\x7f", "\\xff", "/x:y").is_err());
    }
}
