//! Fuzzes the layer checker (plain, gzip and zstd tar streams): it must never panic, and what
//! it accepts must hash to the digest it reports.
#![no_main]

use kiln_store::{layer_verify, Digest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(checked) = layer_verify::check_layer(data) {
        assert_eq!(checked.digest, Digest::of(data));
        assert_eq!(checked.size, data.len() as u64);
    }
});
