//! kiln-vmm: kiln's own microVM monitor.
//!
//! Layers, each knowing only the ones below it:
//! - [`hypervisor`]: the accelerator seam (KVM today, Hypervisor.framework later);
//! - [`bus`]: guest-physical / port address ranges mapped to devices;
//! - [`vcpu`]: the run loop that turns exits into bus accesses, bounded by a deadline;
//! - devices ([`serial`], [`virtio`]) that see only offsets and bytes, never hypervisor types;
//! - [`boot`]: direct Linux boot (memory layout, zero page, page tables, registers).
//!
//! This crate knows nothing of images, builds or the agent protocol.

// Tests unwrap freely: a failed unwrap there is a failed test, not a guest-triggered panic.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod boot;
pub mod bus;
pub mod hypervisor;
pub mod legacy;
pub mod machine;
pub mod probe;
pub mod serial;
pub mod vcpu;
pub mod virtio;
