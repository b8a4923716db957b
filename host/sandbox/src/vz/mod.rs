//! The Virtualization.framework backend (`--backend vz`, macOS only, experimental): Apple's own
//! hypervisor API, as Apple's `container`, vfkit and Docker Desktop use it, so a Mac needs no
//! QEMU. The guest boots directly from the arm64 guest's uncompressed `Image` and initramfs
//! (`VZLinuxBootLoader`), its agent is reached over virtio-vsock (`VZVirtioSocketDevice`), its
//! console goes to a file, entropy comes from a virtio-rng device, and RUN steps reach the
//! network through Apple's NAT (`VZNATNetworkDeviceAttachment`), whose address the agent
//! leases by DHCP (`kiln.net=dhcp`, tested under QEMU's slirp with `KILN_GUEST_NET=dhcp`).
//!
//! [`plan`] turns a VM request into the machine's settings (pure, unit-tested on every host);
//! `machine` (macOS only) builds the `VZVirtualMachineConfiguration` from a plan and runs it,
//! written against `objc2-virtualization` (the maintained, generated bindings of the objc2
//! project). It has been type-checked in CI but not yet run on a Mac: `kiln doctor` and
//! `--backend vz` say so, and any failure names the backend and `--backend qemu`.
//!
//! Not yet: shared directories (`-v`), published ports, snapshots.

pub mod plan;

#[cfg(target_os = "macos")]
mod machine;
#[cfg(target_os = "macos")]
pub use machine::{backend, VzBackend};

#[cfg(not(target_os = "macos"))]
mod unsupported;
#[cfg(not(target_os = "macos"))]
pub use unsupported::backend;
