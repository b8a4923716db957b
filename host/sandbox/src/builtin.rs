//! The built-in backend: kiln's own VMM (`kiln-vmm`, KVM today) with the agent on vsock.
//!
//! The guest's agent listens on vsock port [`AGENT_PORT`]; kiln reaches it through the VMM's
//! Unix socket with Firecracker's `CONNECT <port>` handshake. Whether this host can boot a
//! Linux guest at all is probed once (a timed ring-0 loop under KVM) and cached per host
//! kernel in the cache dir: on hosts where KVM cannot run a Linux kernel (e.g. nested PVM) the
//! probe says so in one line and `auto` picks QEMU.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_protocol::Mux;
use kiln_vmm::machine::{Machine, MachineConfig, MachineExit, VsockConfig};

use crate::agent::{AgentClient, GuestInfo};
use crate::{children, Backend, GuestImage, SandboxError, Vm, VmConfig};

/// The vsock port the agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// A Linux guest under KVM answers in well under a second; this leaves room for slow hosts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the built-in VMM can boot Linux guests here: `Ok`, or the one-line reason.
/// Cached in `cache_dir` per host kernel (the probe costs up to a few seconds on hosts
/// where it fails).
pub fn can_boot_linux(cache_dir: &Path) -> Result<(), String> {
    let release = kiln_sys::process::os_release();
    let cache = cache_dir.join("vmm-probe").join(release);
    if let Ok(text) = fs::read_to_string(&cache) {
        return match text.strip_prefix("no: ") {
            Some(why) => Err(why.trim().to_string()),
            None => Ok(()),
        };
    }
    let verdict = kiln_vmm::probe::probe().linux_boot;
    if let Some(parent) = cache.parent() {
        let _ = fs::create_dir_all(parent);
        let _ = fs::write(&cache, match &verdict {
            Ok(()) => "yes".to_string(),
            Err(why) => format!("no: {why}"),
        });
    }
    verdict
}

/// Starts guests with the built-in VMM.
#[derive(Debug, Clone, Default)]
pub struct BuiltinBackend;

/// A guest running under the built-in VMM.
pub struct BuiltinVm {
    machine: Option<Machine>,
    agent: AgentClient,
    stopper: u64,
    pub info: GuestInfo,
    pub boot_time: Duration,
    _dir: tempfile::TempDir,
}

fn vm_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::BackendUnusable(format!("built-in VMM: {e}"))
}

impl Backend for BuiltinBackend {
    fn start(&self, image: &GuestImage, config: &VmConfig) -> Result<Box<dyn Vm>, SandboxError> {
        if image.arch != crate::GuestArch::X86_64 {
            return Err(SandboxError::BackendUnusable(format!("the built-in VMM runs the x86_64 guest only, not {} (use --backend qemu)", image.arch.name())));
        }
        if !config.shares.is_empty() {
            return Err(SandboxError::BackendUnusable("the built-in VMM has no shared directories yet: run containers with -v under --backend qemu".into()));
        }
        let started = Instant::now();
        let hv = kiln_vmm::hypervisor::open_default().map_err(vm_err)?;
        let dir = tempfile::Builder::new().prefix("kiln-vmm-").tempdir().map_err(|e| SandboxError::io("creating the VM's temp dir", e))?;
        let uds_path = dir.path().join("vsock");
        let console: Box<dyn std::io::Write + Send> = if config.debug { Box::new(std::io::stderr()) } else { Box::new(std::io::sink()) };
        let vcpus = u8::try_from(config.cpus).map_err(|_| SandboxError::BadSetting { name: "cpus", value: config.cpus.to_string(), why: "at most 32" })?;
        let machine = Machine::start(
            hv.as_ref(),
            MachineConfig {
                mem_size: u64::from(config.memory_mib) << 20,
                vcpus,
                kernel: image.kernel.clone(),
                initrd: Some(image.initrd.clone()),
                cmdline: format!(
                    "console=ttyS0{} panic=-1 reboot=t kiln.poweroff=reboot kiln.transport=vsock:{AGENT_PORT}",
                    if config.debug { "" } else { " quiet" }
                ),
                console,
                vsock: Some(VsockConfig { guest_cid: 3, uds_path: uds_path.clone() }),
                disks: vec![],
            },
        )
        .map_err(vm_err)?;
        let stream = kiln_vmm::virtio::vsock::client::connect_guest_port(&uds_path, AGENT_PORT, READY_TIMEOUT, &|| machine.is_running())
            .map_err(|e| match machine.wait(Duration::ZERO) {
                Some(exit) => vm_err(format!("the guest stopped before its agent answered ({exit:?})")),
                None => vm_err(format!("no agent on vsock port {AGENT_PORT}: {e}")),
            })?;
        let stopper = register_cut(&stream)?;
        let reader = stream.try_clone().map_err(|e| SandboxError::io("cloning the agent socket", e))?;
        let agent = AgentClient::new(Mux::host(reader, stream));
        let left = READY_TIMEOUT.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let info = match agent.hello(left) {
            Ok(info) => info,
            Err(e) => {
                children::unregister_stopper(stopper);
                return Err(e);
            }
        };
        agent.watch(None);
        Ok(Box::new(BuiltinVm { machine: Some(machine), agent, stopper, info, boot_time: started.elapsed(), _dir: dir }))
    }
}

/// Ctrl-C cuts the agent connection, which makes the build unwind and drop the machine.
fn register_cut(stream: &UnixStream) -> Result<u64, SandboxError> {
    let cut = stream.try_clone().map_err(|e| SandboxError::io("cloning the agent socket", e))?;
    Ok(children::register_stopper(Box::new(move || {
        let _ = cut.shutdown(std::net::Shutdown::Both);
    })))
}

impl Vm for BuiltinVm {
    fn agent(&self) -> &AgentClient {
        &self.agent
    }

    fn shutdown(mut self: Box<Self>) -> Result<(), SandboxError> {
        let result = self.agent.power_off(Duration::from_secs(10));
        self.agent.close();
        if let Some(machine) = self.machine.take() {
            // The agent powers off by resetting the guest; anything else is stopped.
            if machine.wait(Duration::from_secs(5)) != Some(MachineExit::GuestReset) {
                machine.stop();
            }
        }
        result
    }

    fn describe(&self) -> String {
        format!("kiln-vmm/kvm (guest kernel {}, booted in {:.2} s)", self.info.kernel, self.boot_time.as_secs_f64())
    }
}

impl Drop for BuiltinVm {
    fn drop(&mut self) {
        children::unregister_stopper(self.stopper);
        self.agent.close();
        if let Some(machine) = self.machine.take() {
            machine.stop();
        }
    }
}
