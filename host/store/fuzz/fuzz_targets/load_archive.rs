//! Fuzzes `kiln load`'s archive reader: any input either fails and leaves the store empty, or
//! loads images that read back (digests, config, layer count all verified by `Store::image`).
#![no_main]

use kiln_store::{load, Store};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    match load::load_archive(&store, data) {
        Ok(_) => {
            for digest in store.image_digests().expect("list images") {
                store.image(&digest).expect("a loaded image reads back");
            }
        }
        Err(_) => {
            assert!(store.refs().expect("refs").is_empty(), "a failed load set a name");
            let blobs = std::fs::read_dir(dir.path().join("blobs/sha256")).expect("blobs").count();
            assert_eq!(blobs, 0, "a failed load left blobs");
        }
    }
});
