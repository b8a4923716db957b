//! Root tests of `RUN --mount`s and per-process files: on an overlay like a real build step,
//! checking what the process sees and that nothing of it reaches the upper dir (the layer).

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_protocol::{Response, RunFile, RunMount};

use super::{busybox_tar, list_tar, run_with, RunResult, Scratch};

/// A busybox lower dir with an overlay on top.
struct Layer {
    lower: PathBuf,
    upper: PathBuf,
    merged: PathBuf,
}

impl Drop for Layer {
    fn drop(&mut self) {
        let _ = crate::mounts::unmount(&self.merged.display().to_string());
    }
}

fn overlay(s: &Scratch) -> Option<Layer> {
    let tar = busybox_tar()?;
    let l = Layer {
        lower: s.0.join("lower"),
        upper: s.0.join("upper"),
        merged: s.0.join("merged"),
    };
    super::receive_tar(tar.as_slice(), &l.lower).expect("receive");
    let p = |p: &Path| p.display().to_string();
    let work = s.0.join("work");
    crate::mounts::mount_overlay(&[p(&l.lower)], &p(&l.upper), &p(&work), &p(&l.merged))
        .expect("mount overlay");
    Some(l)
}

/// The names in the layer tar of the upper dir (unchanged copied-up directories left out).
fn layer_entries(l: &Layer) -> Vec<String> {
    let mut out = Vec::new();
    crate::diff::write_diff(&l.upper, std::slice::from_ref(&l.lower), &mut out, None).expect("diff");
    list_tar(&out).into_keys().collect()
}

fn exited_ok(r: &RunResult) {
    assert_eq!(
        r.resp,
        Ok(Response::Exited {
            code: Some(0),
            signal: None
        }),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
}

fn file(path: &str, data: &[u8], mode: u32, uid: u32) -> RunFile {
    RunFile {
        path: path.into(),
        data: data.to_vec(),
        mode,
        uid,
        gid: uid,
    }
}

#[test]
fn run_files_live_in_tmpfs_and_never_reach_the_layer() {
    let Some(s) = Scratch::new("runfiles") else {
        return;
    };
    let Some(l) = overlay(&s) else { return };
    let script = b"#!/bin/sh
echo script $1
cat /cache/tmp/sub/in
echo junk > /cache/tmp/junk
echo deep > /cache/tmp/deeper/t2/junk
echo kept > /kept
stat -c '%a %u %g' /dev/pipes/EOF /cache/tmp/sub/in
test -e /dev/.kiln-secrets || echo no-stage
";
    let r = run_with(&l.merged, &["/dev/pipes/EOF", "arg"], "/", |spec| {
        spec.mounts = vec![
            RunMount::Tmpfs {
                target: "/cache/./x/../tmp".into(),
                size_bytes: Some(1 << 20),
            },
            // Nested in the first tmpfs: its mount point is made there, not in the overlay.
            RunMount::Tmpfs {
                target: "/cache/tmp/deeper/t2".into(),
                size_bytes: None,
            },
        ];
        spec.files = vec![
            file("/dev/pipes/EOF", script, 0o755, 0),
            file("/cache/tmp/sub/in", b"input\n", 0o640, 7),
        ];
    });
    exited_ok(&r);
    assert_eq!(
        r.stdout, "script arg\ninput\n755 0 0\n640 7 7\nno-stage\n",
        "{}",
        r.stderr
    );
    assert_eq!(layer_entries(&l), ["kept"]);
    assert!(
        !l.merged.join("cache").exists(),
        "created mount point left behind"
    );
}

#[test]
fn secrets_are_read_only_files_outside_the_layer() {
    let Some(s) = Scratch::new("secrets") else {
        return;
    };
    let Some(l) = overlay(&s) else { return };
    let secrets = || {
        vec![
            RunMount::Secret {
                target: "/run/secrets/x".into(),
                data: b"s3cret\x00!".to_vec(),
                mode: 0o400,
                uid: 1000,
                gid: 1001,
            },
            // Its parent exists in the lower layer only.
            RunMount::Secret {
                target: "/etc/token".into(),
                data: b"tok".to_vec(),
                mode: 0o444,
                uid: 0,
                gid: 0,
            },
        ]
    };
    let r = run_with(
        &l.merged,
        &["sh", "-c", "cat /run/secrets/x /etc/token; echo; stat -c '%a %u %g' /run/secrets/x; cat /dev/null > /etc/token || echo refused"],
        "/",
        |spec| {
            spec.mounts = secrets();
            spec.uid = 1000;
            spec.gid = 1000;
        },
    );
    exited_ok(&r);
    assert!(
        r.stdout
            .as_bytes()
            .starts_with(b"s3cret\x00!tok\n400 1000 1001\nrefused\n"),
        "{:?} {}",
        r.stdout,
        r.stderr
    );
    // As root, file permissions do not stop a write: the read-only mount does.
    let r = run_with(
        &l.merged,
        &["sh", "-c", "grep ' /run/secrets/x ' /proc/self/mounts; echo y > /run/secrets/x || echo refused; test -e /dev/.kiln-secrets || echo no-stage"],
        "/",
        |spec| spec.mounts = secrets(),
    );
    exited_ok(&r);
    let line = r.stdout.lines().next().unwrap_or_default();
    for opt in ["ro,", "nosuid", "nodev", "noexec"] {
        assert!(line.contains(opt), "{opt} missing in {line:?}");
    }
    assert!(r.stdout.ends_with("refused\nno-stage\n"), "{}", r.stdout);
    assert!(!l.merged.join("run").exists(), "created /run left behind");
    assert!(
        !l.merged.join("etc/token").exists(),
        "created stub left behind"
    );
    // /etc was copied up to hold the stub; its times are restored, so it is an unchanged dir
    // and the diff leaves it out.
    let etc = |root: &Path| fs::metadata(root.join("etc")).expect("etc").mtime();
    assert_eq!(etc(&l.merged), etc(&l.lower));
    assert!(l.upper.join("etc").is_dir(), "the stub's parent was copied up");
    assert!(layer_entries(&l).is_empty(), "{:?}", layer_entries(&l));
}

#[test]
fn bind_mounts_write_through_or_refuse_writes() {
    let Some(s) = Scratch::new("binds") else {
        return;
    };
    let Some(l) = overlay(&s) else { return };
    let (rw, ro, one) = (
        s.0.join("cache-src"),
        s.0.join("ro-src"),
        s.0.join("one.txt"),
    );
    fs::create_dir(&rw).expect("mkdir");
    fs::write(rw.join("old"), b"old\n").expect("write");
    fs::create_dir(&ro).expect("mkdir");
    fs::write(ro.join("f"), b"ro\n").expect("write");
    fs::write(&one, b"one\n").expect("write");
    let r = run_with(
        &l.merged,
        &["sh", "-c", "cat /root/.cache/old /ro/f /one; echo new > /root/.cache/new; echo x > /ro/g || echo refused; echo x > /one || echo refused"],
        "/",
        |spec| {
            let bind = |target: &str, source: &Path, readonly| RunMount::Bind {
                target: target.into(),
                source: source.display().to_string(),
                readonly,
            };
            spec.mounts = vec![
                bind("/root/.cache", &rw, false),
                bind("/ro", &ro, true),
                bind("/one", &one, true),
            ];
        },
    );
    exited_ok(&r);
    assert_eq!(r.stdout, "old\nro\none\nrefused\nrefused\n", "{}", r.stderr);
    assert_eq!(fs::read(rw.join("new")).expect("new"), b"new\n");
    assert!(!ro.join("g").exists());
    assert_eq!(fs::read(&one).expect("one"), b"one\n");
    assert!(layer_entries(&l).is_empty(), "{:?}", layer_entries(&l));
    assert!(!l.merged.join("root").exists() && !l.merged.join("one").exists());
}

#[test]
fn mount_targets_resolve_inside_the_rootfs() {
    let Some(s) = Scratch::new("mountesc") else {
        return;
    };
    let Some(l) = overlay(&s) else { return };
    let (outside, src) = (s.0.join("outside"), s.0.join("bsrc"));
    fs::create_dir(&outside).expect("mkdir");
    fs::create_dir(&src).expect("mkdir");
    symlink(&outside, l.lower.join("esc")).expect("symlink");
    symlink("../../../../outside2", l.lower.join("up")).expect("symlink");
    symlink("/dev", l.lower.join("devlink")).expect("symlink");
    let r = run_with(
        &l.merged,
        &["sh", "-c", "echo in > /esc/t/f && cat /esc/t/f; echo b > /up/b/w; test -d /outside2/b && echo inside"],
        "/",
        |spec| {
            spec.mounts = vec![
                RunMount::Tmpfs {
                    target: "/esc/t".into(),
                    size_bytes: None,
                },
                RunMount::Bind {
                    target: "/up/b".into(),
                    source: src.display().to_string(),
                    readonly: false,
                },
            ];
        },
    );
    exited_ok(&r);
    assert_eq!(r.stdout, "in\ninside\n", "{}", r.stderr);
    assert_eq!(
        fs::read_dir(&outside).expect("outside").count(),
        0,
        "escaped the rootfs"
    );
    assert!(!s.0.join("outside2").exists(), "escaped the rootfs");
    assert_eq!(fs::read(src.join("w")).expect("w"), b"b\n");
    assert!(layer_entries(&l).is_empty(), "{:?}", layer_entries(&l));

    for target in ["/proc/x", "/devlink/x", "/"] {
        let r = run_with(&l.merged, &["sh", "-c", "true"], "/", |spec| {
            spec.mounts = vec![RunMount::Tmpfs {
                target: target.into(),
                size_bytes: None,
            }];
        });
        let err = r.resp.expect_err("refused");
        assert!(err.contains("mount"), "{target}: {err}");
    }
    assert!(layer_entries(&l).is_empty(), "{:?}", layer_entries(&l));
}
