//! Foreign-architecture binaries in the guest: an image for another architecture (a build's
//! `--platform`, `kiln run` of an arm64 image) runs under QEMU's user-mode emulator inside the
//! guest, registered with binfmt_misc. Shared by builds and containers.
//!
//! The emulator is the host's static `qemu-<arch>-static` (Debian's qemu-user-static), with
//! the ELF magic and mask from its binfmt description (`/usr/share/binfmts/qemu-<arch>`).
//! `KILN_QEMU_USER_DIR` points at another directory holding both kinds of files. Nothing here
//! decides whether to emulate: callers compare platforms.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use kiln_frontend::graph::Platform;
use kiln_sandbox::AgentClient;
use serde_json::Value;

use crate::RuntimeError;

/// The architecture the guest runs natively (OCI naming; see [`kiln_store::platform::native_arch`]).
pub fn host_arch() -> &'static str {
    kiln_store::platform::native_arch()
}

/// The platform a stored image is for.
pub fn image_platform(img: &kiln_store::ImageRecord) -> Platform {
    let variant = img.config.extra.get("variant").and_then(Value::as_str).map(str::to_string);
    Platform { os: img.config.os.clone(), arch: img.config.architecture.clone(), variant }
}

/// Whether an image for `have` runs where `want` is asked for (variants are not compared).
pub fn same_platform(have: &Platform, want: &Platform) -> bool {
    have.os == want.os && have.arch == want.arch
}

/// QEMU's name for an OCI architecture.
fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "riscv64" => "riscv64",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// An emulator found on the host.
#[derive(Debug)]
pub struct Emulator {
    pub name: String,
    pub binary: PathBuf,
    pub magic: String,
    pub mask: String,
}

/// `magic` and `mask` lines of a binfmt-support description.
fn parse_binfmts(text: &str) -> Option<(String, String)> {
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()));
    Some((field("magic ")?, field("mask ")?))
}

/// The emulator for `platform`, or `None` when it runs natively.
pub fn find(platform: &Platform) -> Result<Option<Emulator>, RuntimeError> {
    if platform.os != "linux" {
        return Err(RuntimeError::Invalid(format!("platform {platform}: only linux images can run")));
    }
    if platform.arch == host_arch() {
        return Ok(None);
    }
    // The emulators are this machine's binaries: they run in a guest of its own architecture.
    let machine = kiln_store::platform::machine_arch();
    if host_arch() != machine {
        return Err(RuntimeError::Invalid(format!(
            "platform {platform}: the {} guest runs {} binaries only (this machine's qemu-*-static emulators are {machine} binaries); use the {machine} guest (KILN_GUEST_ARCH) for other platforms",
            host_arch(),
            host_arch()
        )));
    }
    let q = qemu_name(&platform.arch).ok_or_else(|| RuntimeError::Invalid(format!("platform {platform}: no emulator known for {}", platform.arch)))?;
    let dir = std::env::var_os("KILN_QEMU_USER_DIR").map(PathBuf::from);
    let binary = dir.clone().unwrap_or_else(|| PathBuf::from("/usr/bin")).join(format!("qemu-{q}-static"));
    let conf = dir.unwrap_or_else(|| PathBuf::from("/usr/share/binfmts")).join(format!("qemu-{q}"));
    let missing = |what: &Path| {
        RuntimeError::Invalid(format!(
            "running {platform} binaries needs a user-mode emulator, and {} is missing: install Debian's qemu-user-static (or set KILN_QEMU_USER_DIR)",
            what.display()
        ))
    };
    if !binary.is_file() {
        return Err(missing(&binary));
    }
    let text = std::fs::read_to_string(&conf).map_err(|_| missing(&conf))?;
    let (magic, mask) = parse_binfmts(&text).ok_or_else(|| RuntimeError::Invalid(format!("{}: no magic/mask lines", conf.display())))?;
    Ok(Some(Emulator { name: format!("kiln-{q}"), binary, magic, mask }))
}

/// For `kiln doctor`: each foreign architecture kiln knows, with its emulator or why not.
pub fn survey() -> Vec<(String, Result<PathBuf, String>)> {
    ["arm64", "arm", "riscv64", "ppc64le", "s390x", "386"]
        .into_iter()
        .filter(|a| *a != host_arch())
        .map(|arch| {
            let p = Platform { os: "linux".into(), arch: arch.into(), variant: None };
            let found = match find(&p) {
                Ok(Some(e)) => Ok(e.binary),
                Ok(None) => Err("runs natively".to_string()),
                Err(e) => Err(e.to_string()),
            };
            (format!("linux/{arch}"), found)
        })
        .collect()
}

/// Where the guest keeps uploaded emulators.
const GUEST_DIR: &str = "/run/kiln/emu";

/// Uploads `emu` into the guest behind `agent` and registers it with binfmt_misc (for the
/// whole guest kernel: processes in any root and namespace, execs included).
pub fn install(agent: &AgentClient, emu: &Emulator) -> Result<(), RuntimeError> {
    let file_name = emu.binary.file_name().and_then(|n| n.to_str()).unwrap_or("qemu-static").to_string();
    let packing = |e: std::io::Error| RuntimeError::io(format!("packing the emulator {}", emu.binary.display()), e);
    // Through a temp file: the emulator is some 10 MB, no need to hold it in memory.
    let mut f = std::fs::File::open(&emu.binary).map_err(packing)?;
    let mut tar = tar::Builder::new(tempfile::tempfile().map_err(packing)?);
    let mut h = tar::Header::new_gnu();
    h.set_size(f.metadata().map_err(packing)?.len());
    h.set_mode(0o755);
    h.set_cksum();
    tar.append_data(&mut h, &file_name, &mut f).map_err(packing)?;
    let mut file = tar.into_inner().map_err(packing)?;
    file.rewind().map_err(packing)?;
    agent.receive_tar(GUEST_DIR, &mut std::io::BufReader::new(file) as &mut dyn Read)?;
    agent.register_binfmt(&emu.name, &emu.magic, &emu.mask, &format!("{GUEST_DIR}/{file_name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binfmt_descriptions_parse() {
        let text = "package qemu-user-static\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nmagic \\x7f\\x45\\x4c\\x46\nmask \\xff\\xff\\xff\\xff\n";
        assert_eq!(parse_binfmts(text), Some(("\\x7f\\x45\\x4c\\x46".into(), "\\xff\\xff\\xff\\xff".into())));
        assert_eq!(parse_binfmts("magic \\x7f\n"), None);
    }

    #[test]
    fn native_platforms_need_no_emulator() {
        let native = Platform { os: "linux".into(), arch: host_arch().into(), variant: None };
        assert!(find(&native).expect("native").is_none());
        assert!(find(&Platform { os: "windows".into(), arch: "amd64".into(), variant: None }).is_err());
        assert!(find(&Platform { os: "linux".into(), arch: "vax".into(), variant: None }).is_err());
    }
}
