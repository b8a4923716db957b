//! Other hosts: no known hypervisor for QEMU to use.

use super::Native;

pub fn native() -> Native {
    Native::Unavailable("kiln knows no hardware hypervisor on this OS".into())
}
