//! What a Virtualization.framework VM for a request looks like: kernel, initramfs, kernel
//! command line, CPUs, memory, the agent's vsock port. Pure: checked against the framework's
//! rules that are known without a Mac (guest architecture, no shares yet, size bounds).

use std::path::PathBuf;

use crate::{GuestArch, GuestImage, SandboxError, VmConfig};

/// The vsock port the agent listens on (as under the built-in VMM).
pub const AGENT_PORT: u32 = 1024;
/// Virtualization.framework's smallest VM (`minimumAllowedMemorySize`, 128 MiB).
const MIN_MEMORY_MIB: u32 = 128;

/// A VM's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzPlan {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub agent_port: u32,
}

fn unusable(why: String) -> SandboxError {
    SandboxError::BackendUnusable(format!("--backend vz (Virtualization.framework): {why}; use --backend qemu"))
}

/// The plan for `image` under `config` on a Mac of architecture `host`.
pub fn plan(image: &GuestImage, config: &VmConfig, host: Option<GuestArch>) -> Result<VzPlan, SandboxError> {
    if host != Some(image.arch) {
        return Err(unusable(format!(
            "it runs guests of the Mac's own architecture only, and this is the {} guest on a {} Mac",
            image.arch.name(),
            host.map_or(std::env::consts::ARCH, GuestArch::name)
        )));
    }
    if image.arch != GuestArch::Arm64 {
        // The x86_64 guest kernel is a PVH vmlinux without PCI or ACPI, which an Intel Mac's
        // Virtualization.framework needs to find its devices.
        return Err(unusable("it runs the arm64 guest (Apple silicon) only; on an Intel Mac use QEMU with HVF".into()));
    }
    if !config.shares.is_empty() {
        return Err(unusable("it has no shared directories yet (-v, volumes)".into()));
    }
    if config.memory_mib < MIN_MEMORY_MIB {
        return Err(unusable(format!("it needs at least {MIN_MEMORY_MIB} MiB of guest memory, not {}", config.memory_mib)));
    }
    if config.cpus == 0 {
        return Err(unusable("a VM needs at least one CPU".into()));
    }
    // hvc0: the virtio console. reboot=t + kiln.poweroff=reboot as under the other backends:
    // the agent's power-off ends the VM, which the host then sees stopped.
    let quiet = if config.debug { "" } else { " quiet" };
    // kiln.net=dhcp: Apple's NAT hands out the guest's address by DHCP.
    let cmdline = format!("console=hvc0{quiet} panic=-1 reboot=t kiln.poweroff=reboot kiln.transport=vsock:{AGENT_PORT} kiln.net=dhcp");
    Ok(VzPlan {
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        cmdline,
        cpus: config.cpus,
        memory_bytes: u64::from(config.memory_mib) << 20,
        agent_port: AGENT_PORT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(arch: GuestArch) -> GuestImage {
        GuestImage { kernel: "/g/kernel".into(), initrd: "/g/initramfs.cpio".into(), arch }
    }

    fn config() -> VmConfig {
        VmConfig { memory_mib: 1024, cpus: 2, cache_dir: "/c".into(), debug: false, shares: vec![] }
    }

    #[test]
    fn an_apple_silicon_mac_boots_the_arm64_guest_with_the_agent_on_vsock() {
        let p = plan(&image(GuestArch::Arm64), &config(), Some(GuestArch::Arm64)).expect("plan");
        assert_eq!(p.cmdline, "console=hvc0 quiet panic=-1 reboot=t kiln.poweroff=reboot kiln.transport=vsock:1024 kiln.net=dhcp");
        assert_eq!((p.cpus, p.memory_bytes, p.agent_port), (2, 1 << 30, 1024));
        assert_eq!((p.kernel.to_str(), p.initrd.to_str()), (Some("/g/kernel"), Some("/g/initramfs.cpio")));
    }

    #[test]
    fn what_the_framework_cannot_do_is_refused_naming_the_backend_to_use() {
        let intel = plan(&image(GuestArch::X86_64), &config(), Some(GuestArch::X86_64)).expect_err("intel");
        assert!(intel.to_string().contains("arm64 guest (Apple silicon) only"), "{intel}");
        let other = plan(&image(GuestArch::X86_64), &config(), Some(GuestArch::Arm64)).expect_err("x86 on arm");
        assert_eq!(
            other.to_string(),
            "--backend vz (Virtualization.framework): it runs guests of the Mac's own architecture only, and this is the x86_64 guest on a arm64 Mac; use --backend qemu"
        );
        let mut shared = config();
        shared.shares.push(crate::Share { tag: "v0".into(), host_path: "/h".into(), readonly: false, keep_owners: false, virtiofs: false });
        assert!(plan(&image(GuestArch::Arm64), &shared, Some(GuestArch::Arm64)).expect_err("shares").to_string().contains("no shared directories"));
        let small = VmConfig { memory_mib: 64, ..config() };
        assert!(plan(&image(GuestArch::Arm64), &small, Some(GuestArch::Arm64)).expect_err("small").to_string().contains("128 MiB"));
    }
}
