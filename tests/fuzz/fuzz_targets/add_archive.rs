//! `ADD` of a local file from the build context: an archive view (whatever the compression), a
//! plain file, or an error, never a panic, and the expansion stays within its bound (the
//! fuzzer's RSS limit catches a decompression that holds too much in memory).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("input");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(Some(view)) = kiln_solver::open_add_archive(&path) {
        // Walk what the view offers, as a COPY from it would.
        let _ = view.read_file("/etc/passwd", 1 << 20);
    }
});
