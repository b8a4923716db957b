//! kiln-vmm: kiln's own microVM monitor.
//!
//! Layers, each knowing only the ones below it:
//! - [`hypervisor`]: the accelerator seam (KVM today, Hypervisor.framework later);
//! - [`bus`]: guest-physical / port address ranges mapped to devices;
//! - [`vcpu`]: the run loop that turns exits into bus accesses, bounded by a deadline;
//! - devices ([`serial`], [`virtio`]) that see only offsets and bytes, never hypervisor types;
//! - [`boot`]: direct Linux boot (memory layout, zero page, page tables, registers).
//!
//! - [`machine`]: all of it assembled: one call boots a guest, one call stops it;
//! - [`probe`]: whether this host can boot Linux guests at all, with the reason if not.
//!
//! This crate knows nothing of images, builds or the agent protocol.
//!
//! # Using it as a sandbox backend
//!
//! A `VmBackend` implementing `kiln_sandbox::Backend` needs only [`probe`], [`hypervisor`] and
//! [`machine`]:
//!
//! ```text
//! // once per machine, cached like the QEMU KVM probe; Err is the one line `kiln doctor` prints
//! kiln_vmm::probe::probe().linux_boot?;                 // "KVM present but ... use the QEMU backend"
//! let hv = kiln_vmm::hypervisor::open_default()?;        // one-line error for absent/denied /dev/kvm
//! let machine = Machine::start(hv.as_ref(), MachineConfig {
//!     mem_size: u64::from(config.memory_mib) << 20,      // >= 64 MiB, else a one-line error
//!     vcpus: config.cpus as u8,                          // 1..=32 (MP table, in-kernel LAPIC)
//!     kernel: image.kernel.clone(),                      // PVH vmlinux, plain vmlinux or bzImage
//!     initrd: Some(image.initramfs.clone()),
//!     cmdline: "console=ttyS0 panic=-1 reboot=t kiln.poweroff=reboot kiln.transport=vsock:1024".into(),
//!     console: if config.debug { Box::new(std::io::stderr()) } else { Box::new(std::io::sink()) },
//!     vsock: Some(VsockConfig { guest_cid: 3, uds_path: private_dir.join("vsock") }),
//!     disks: vec![],                                     // DiskConfig { path, read_only } -> /dev/vda..
//! })?;
//! // Agent connection: virtio::vsock::client::connect_guest_port(uds_path, 1024, timeout, alive)
//! // writes "CONNECT 1024\n", reads "OK <port>\n", retries until the agent listens, and asks
//! // `alive` between attempts (`&|| machine.is_running()`). Give the stream to
//! // the protocol's Mux / AgentClient exactly as the QEMU backend does.
//! // Shutdown: agent.power_off() -> the guest resets (reboot=t) -> machine.wait(t) returns
//! // MachineExit::GuestReset; otherwise machine.stop(). Dropping the Machine also stops it,
//! // joins the vCPU threads and removes the vsock socket.
//! ```

// Tests unwrap freely: a failed unwrap there is a failed test, not a guest-triggered panic.
#![cfg_attr(test, allow(clippy::unwrap_used))]

// The VMM itself runs on x86_64 Linux (KVM) only; on every other host the crate is just its
// [`probe`], which says why not and what to use instead.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod boot;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod bus;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod hypervisor;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod legacy;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod machine;
pub mod probe;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod serial;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod vcpu;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod virtio;
