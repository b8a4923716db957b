//! Whether this host offers its hardware hypervisor to user processes: KVM (`/dev/kvm`) on
//! Linux, Hypervisor.framework (`kern.hv_support`) on macOS, the Windows Hypervisor Platform on
//! Windows. A cheap check that never starts a VM; the QEMU backend still confirms with one real
//! boot before it trusts the answer.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::native;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::native;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::native;

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod other;
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub use other::native;

/// What the cheap check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Native {
    /// The hypervisor is there and this user may use it.
    Available,
    /// It is not, with the one-line reason and what to do.
    Unavailable(String),
    /// No cheap check exists here: a real start decides.
    Unknown(String),
}
