//! The Dockerfile parser, instruction parsing and variable expansion (graph resolution with
//! the default build options): any text ends in a graph or a ParseError, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(dockerfile) = kiln_frontend::graph::parse_full(text) {
        let _ = dockerfile.resolve(&kiln_frontend::graph::BuildOptions::default());
    }
});
