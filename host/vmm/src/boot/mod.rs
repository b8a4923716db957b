//! Direct Linux boot: memory layout ([`layout`]), CPU state for protected and long mode
//! ([`cpu`]), kernel/initrd loading and boot information ([`linux`]).
pub mod cpu;
pub mod layout;
pub mod linux;
pub mod mptable;
