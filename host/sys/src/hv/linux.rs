//! Linux: `/dev/kvm` opens read-write for this user.

use super::Native;

pub fn native() -> Native {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Native::Available,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Native::Unavailable("no /dev/kvm (no KVM on this host)".into()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Native::Unavailable("/dev/kvm is not accessible to this user (add it to the kvm group)".into())
        }
        Err(e) => Native::Unavailable(format!("/dev/kvm: {e}")),
    }
}
