//! Direct Linux boot: CPU state for long mode ([`cpu`]).
pub mod cpu;
