//! Layer verification (what every layer from a guest, a registry or an archive goes
//! through), compressed or not: an answer, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_store::layer_verify::check_layer(data);
});
