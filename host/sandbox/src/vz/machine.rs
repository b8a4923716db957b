//! A Virtualization.framework VM from a [`VzPlan`] (macOS only; experimental: type-checked in
//! CI, not yet run on a Mac).
//!
//! Every call on a `VZVirtualMachine` happens on the serial dispatch queue it was made with;
//! completion handlers run there too and report back over channels, each wait bounded. The
//! agent's vsock connection is a socket descriptor owned by its `VZVirtioSocketConnection`:
//! it is duplicated before that object goes, and the duplicate is the agent's stream. The VM is
//! stopped whenever the [`VzVm`] is dropped; the framework's VMs live inside kiln's process, so
//! they also end with it.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use block2::RcBlock;
use dispatch2::{DispatchQueue, DispatchRetained};
use kiln_protocol::Mux;
use kiln_sys::net::UnixStream;
use objc2::rc::Retained;
use objc2::{AllocAnyThread, ClassType};
use objc2_foundation::{NSArray, NSError, NSString, NSURL};
use objc2_virtualization::{
    VZFileSerialPortAttachment, VZLinuxBootLoader, VZNATNetworkDeviceAttachment, VZVirtioNetworkDeviceConfiguration, VZVirtioConsoleDeviceSerialPortConfiguration, VZVirtioEntropyDeviceConfiguration,
    VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketDeviceConfiguration, VZVirtualMachine, VZVirtualMachineConfiguration,
    VZVirtualMachineState,
};

use super::plan::{plan, VzPlan};
use crate::agent::{AgentClient, GuestInfo};
use crate::{Backend, GuestArch, GuestImage, SandboxError, Vm, VmConfig};

/// From start to the agent's hello (a native arm64 boot takes well under a second).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a framework call may take to report back.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(what: &str, why: impl std::fmt::Display) -> SandboxError {
    SandboxError::BackendUnusable(format!("--backend vz (Virtualization.framework, experimental): {what}: {why}; use --backend qemu"))
}

fn ns_error(e: *mut NSError) -> String {
    // SAFETY: the framework passes either null or a valid NSError for the block's duration.
    match unsafe { e.as_ref() } {
        Some(e) => e.localizedDescription().to_string(),
        None => "unknown error".into(),
    }
}

/// Starts guests with Virtualization.framework.
#[derive(Debug, Clone, Default)]
pub struct VzBackend;

/// The backend (always there on macOS; whether this Mac supports it is checked at start).
pub fn backend() -> Result<Box<dyn Backend>, String> {
    Ok(Box::new(VzBackend))
}

/// The VM object, whose methods are only ever called on its queue.
struct OnQueue(Retained<VZVirtualMachine>);
// SAFETY: the VZVirtualMachine is made with `queue`, and every method call on it (start, state,
// socket devices, stop) is submitted to that serial queue, as the framework requires. Other
// threads only move the handle, retain it (`clone`: Objective-C reference counting is
// thread-safe) and release it; the last release is sent to the queue too (Machine's Drop).
unsafe impl Send for OnQueue {}
// SAFETY: as above: shared references are used only inside closures run on the VM's queue.
unsafe impl Sync for OnQueue {}

/// A started VM and its queue; stopped when dropped.
struct Machine {
    /// Always `Some` until Drop hands it to the queue.
    vm: Option<OnQueue>,
    queue: DispatchRetained<DispatchQueue>,
}

/// A running Virtualization.framework guest.
pub struct VzVm {
    agent: AgentClient,
    pub info: GuestInfo,
    boot_time: Duration,
    // Held for its Drop, after the agent's: stops the VM.
    _machine: Machine,
    _dir: tempfile::TempDir,
}

fn configuration(p: &VzPlan, console_log: &Path) -> Result<Retained<VZVirtualMachineConfiguration>, SandboxError> {
    let url = |path: &Path| NSURL::from_file_path(path).ok_or_else(|| failed("a path", format!("{} is not a file URL", path.display())));
    // SAFETY: plain constructors and setters of configuration objects this function owns; the
    // framework copies the configuration when the VM is made.
    unsafe {
        let boot = VZLinuxBootLoader::initWithKernelURL(VZLinuxBootLoader::alloc(), &*url(&p.kernel)?);
        boot.setInitialRamdiskURL(Some(&*url(&p.initrd)?));
        boot.setCommandLine(&NSString::from_str(&p.cmdline));

        let config = VZVirtualMachineConfiguration::new();
        config.setBootLoader(Some(boot.as_super()));
        config.setCPUCount(p.cpus as usize);
        config.setMemorySize(p.memory_bytes);

        let log = VZFileSerialPortAttachment::initWithURL_append_error(VZFileSerialPortAttachment::alloc(), &*url(console_log)?, false)
            .map_err(|e| failed("the console log", e.localizedDescription()))?;
        let console = VZVirtioConsoleDeviceSerialPortConfiguration::new();
        console.setAttachment(Some(log.as_super()));
        config.setSerialPorts(&NSArray::from_slice(&[console.as_super()]));
        let vsock = VZVirtioSocketDeviceConfiguration::new();
        config.setSocketDevices(&NSArray::from_slice(&[vsock.as_super()]));
        let nat = VZNATNetworkDeviceAttachment::new();
        let net = VZVirtioNetworkDeviceConfiguration::new();
        net.setAttachment(Some(nat.as_super()));
        config.setNetworkDevices(&NSArray::from_slice(&[net.as_super()]));
        let entropy = VZVirtioEntropyDeviceConfiguration::new();
        config.setEntropyDevices(&NSArray::from_slice(&[entropy.as_super()]));

        config.validateWithError().map_err(|e| failed("the VM configuration", e.localizedDescription()))?;
        Ok(config)
    }
}

impl Machine {
    /// Runs `f` on the VM's queue and waits (bounded) for what it sends back.
    fn on_queue<T: Send + 'static>(&self, f: impl FnOnce(&VZVirtualMachine, mpsc::Sender<T>) + Send + 'static) -> Option<T> {
        on_queue(&self.queue, self.vm.as_ref()?, f)
    }

    fn stop(&self) {
        let _ = self.on_queue(|vm, done: mpsc::Sender<()>| {
            // SAFETY: on the VM's queue (see OnQueue).
            unsafe {
                if vm.canStop() {
                    let block = RcBlock::new(move |_e: *mut NSError| {
                        let _ = done.send(());
                    });
                    vm.stopWithCompletionHandler(&block);
                } else {
                    let _ = done.send(());
                }
            }
        });
    }
}

fn on_queue<T: Send + 'static>(
    queue: &DispatchQueue,
    vm: &OnQueue,
    f: impl FnOnce(&VZVirtualMachine, mpsc::Sender<T>) + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    let vm = OnQueue(vm.0.clone());
    // `let vm = vm` moves the whole Send wrapper in (a closure would otherwise capture only
    // the non-Send field it uses).
    queue.exec_async(move || {
        let vm = vm;
        f(&vm.0, tx)
    });
    rx.recv_timeout(CALL_TIMEOUT).ok()
}

/// One attempt to reach the agent's port: the connected socket, or why not.
fn connect(queue: &DispatchQueue, vm: &OnQueue, port: u32) -> Result<UnixStream, String> {
    let answer = on_queue(queue, vm, move |vm, tx: mpsc::Sender<Result<OwnedFd, String>>| {
        // SAFETY: on the VM's queue; the socket device list and the connection are valid for
        // the block's duration, and the descriptor is duplicated before the connection goes.
        unsafe {
            let devices = vm.socketDevices();
            let Some(device) = devices.firstObject() else {
                let _ = tx.send(Err("the VM has no vsock device".into()));
                return;
            };
            let Some(device) = device.downcast_ref::<VZVirtioSocketDevice>() else {
                let _ = tx.send(Err("the VM's socket device is not virtio-vsock".into()));
                return;
            };
            let block = RcBlock::new(move |conn: *mut VZVirtioSocketConnection, e: *mut NSError| {
                let result = match conn.as_ref() {
                    Some(conn) => {
                        let fd = libc::dup(conn.fileDescriptor());
                        if fd < 0 {
                            Err(std::io::Error::last_os_error().to_string())
                        } else {
                            Ok(OwnedFd::from_raw_fd(fd))
                        }
                    }
                    None => Err(ns_error(e)),
                };
                let _ = tx.send(result);
            });
            device.connectToPort_completionHandler(port, &block);
        }
    });
    answer.ok_or_else(|| "no answer from the framework".to_string())?.map(UnixStream::from)
}

impl Backend for VzBackend {
    fn start(&self, image: &GuestImage, config: &VmConfig) -> Result<Box<dyn Vm>, SandboxError> {
        let p = plan(image, config, GuestArch::of_host())?;
        // SAFETY: a class method with no arguments.
        if !unsafe { VZVirtualMachine::isSupported() } {
            return Err(failed("this Mac", "Virtualization.framework is not supported here"));
        }
        let started = Instant::now();
        let dir = tempfile::Builder::new().prefix("kiln-vz-").tempdir().map_err(|e| SandboxError::io("creating the VM's temp dir", e))?;
        let log = dir.path().join("console.log");
        let configuration = configuration(&p, &log)?;
        let queue = DispatchQueue::new("dev.kiln.vz", None);
        // SAFETY: a valid configuration (validated above) and a serial queue, which the VM
        // uses for every later call (see OnQueue).
        let vm = OnQueue(unsafe { VZVirtualMachine::initWithConfiguration_queue(VZVirtualMachine::alloc(), &configuration, &queue) });
        // From here on, any return stops the VM (Machine's Drop), a start still under way included.
        let machine = Machine { vm: Some(vm), queue };
        let started_ok = machine.on_queue(|vm, tx: mpsc::Sender<Result<(), String>>| {
            let block = RcBlock::new(move |e: *mut NSError| {
                let _ = tx.send(if e.is_null() { Ok(()) } else { Err(ns_error(e)) });
            });
            // SAFETY: on the VM's queue.
            unsafe { vm.startWithCompletionHandler(&block) };
        });
        match started_ok {
            Some(Ok(())) => {}
            Some(Err(why)) => return Err(failed("starting the VM", why)),
            None => return Err(failed("starting the VM", "the framework did not answer")),
        }
        let deadline = started + READY_TIMEOUT;
        let stream = loop {
            let Some(vm) = machine.vm.as_ref() else { return Err(failed("the VM", "it is gone")) };
            match connect(&machine.queue, vm, p.agent_port) {
                Ok(s) => break s,
                Err(why) if Instant::now() >= deadline => {
                    let console = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = console.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
                    return Err(failed("no agent on vsock", format!("{why}; guest console:\n{}", tail.join("\n"))));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            let state = machine.on_queue(|vm, tx| {
                // SAFETY: on the VM's queue.
                let _ = tx.send(unsafe { vm.state() });
            });
            if state == Some(VZVirtualMachineState::Stopped) || state == Some(VZVirtualMachineState::Error) {
                return Err(failed("the guest", "it stopped before its agent answered"));
            }
        };
        let reader = stream.try_clone().map_err(|e| SandboxError::io("cloning the agent socket", e))?;
        let agent = AgentClient::new(Mux::host(reader, stream));
        let info = agent.hello(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))?;
        agent.watch(None);
        Ok(Box::new(VzVm { agent, info, boot_time: started.elapsed(), _machine: machine, _dir: dir }))
    }
}

impl Vm for VzVm {
    fn agent(&self) -> &AgentClient {
        &self.agent
    }

    fn shutdown(self: Box<Self>) -> Result<(), SandboxError> {
        let result = self.agent.power_off(Duration::from_secs(10));
        self.agent.close();
        result
    }

    fn describe(&self) -> String {
        format!("vz/Virtualization.framework, experimental (guest kernel {}, booted in {:.2} s)", self.info.kernel, self.boot_time.as_secs_f64())
    }
}

impl Drop for VzVm {
    fn drop(&mut self) {
        self.agent.close();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
        // The last reference goes on the VM's queue, so the VM is torn down there.
        if let Some(last) = self.vm.take() {
            self.queue.exec_async(move || drop(last));
        }
    }
}
