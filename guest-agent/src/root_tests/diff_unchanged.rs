//! Root test of the diff's lower-aware mode: directories that were only copied up and are
//! unchanged stay out of the layer; changed ones, and the parents of changed entries, stay in.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::{busybox_tar, list_tar, receive_tar, Scratch};

#[test]
fn diff_leaves_out_unchanged_copied_up_dirs() {
    let Some(s) = Scratch::new("diff-unchanged") else {
        return;
    };
    let Some(rootfs) = busybox_tar() else { return };
    let lower = s.0.join("lower");
    receive_tar(rootfs.as_slice(), &lower).expect("receive");
    fs::create_dir_all(lower.join("usr/share/doc")).expect("mkdir");
    fs::write(lower.join("usr/share/doc/readme"), b"old").expect("write");
    symlink("usr", lower.join("lnk")).expect("symlink");
    let (upper, work, merged) = (s.0.join("upper"), s.0.join("work"), s.0.join("merged"));
    let p = |p: &Path| p.display().to_string();
    crate::mounts::mount_overlay(&[p(&lower)], &p(&upper), &p(&work), &p(&merged)).expect("mount");

    // etc: a temporary file comes and goes, and its times are put back (as mount stubs do).
    let etc_times = fs::metadata(lower.join("etc")).expect("etc").modified().expect("mtime");
    fs::write(merged.join("etc/tmp"), b"x").expect("write");
    fs::remove_file(merged.join("etc/tmp")).expect("rm");
    fs::File::open(merged.join("etc"))
        .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(etc_times).set_accessed(etc_times)))
        .expect("restore times");
    // A file deep down changes: its unchanged parents are copied up and must stay.
    fs::write(merged.join("usr/share/doc/readme"), b"new").expect("write");
    // A symlink replaced by a directory (opaque in the upper dir).
    fs::remove_file(merged.join("lnk")).expect("rm");
    fs::create_dir_all(merged.join("lnk/share")).expect("mkdir");
    // A directory whose mode changed.
    fs::set_permissions(merged.join("bin"), fs::Permissions::from_mode(0o700)).expect("chmod");

    let diff = |lowers: &[std::path::PathBuf]| {
        let mut out = Vec::new();
        crate::diff::write_diff(&upper, lowers, &mut out, None).expect("diff");
        list_tar(&out).into_keys().collect::<Vec<_>>()
    };
    let with_lowers = diff(std::slice::from_ref(&lower));
    let without = diff(&[]);
    crate::mounts::unmount(&p(&merged)).expect("unmount");
    assert!(upper.join("etc").is_dir(), "etc was copied up");
    assert_eq!(
        with_lowers,
        [
            "bin/",
            "lnk/",
            "lnk/.wh..wh..opq",
            "lnk/share/",
            "usr/",
            "usr/share/",
            "usr/share/doc/",
            "usr/share/doc/readme"
        ]
    );
    assert!(without.contains(&"etc/".to_string()), "{without:?}");
}
