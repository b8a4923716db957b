//! `kiln load` of a docker or OCI archive, into a store of its own: an image or an error,
//! never a panic (and nothing written outside the store).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let Ok(store) = kiln_store::Store::open(dir.path()) else { return };
    let _ = kiln_store::load::load_archive(&store, data);
});
