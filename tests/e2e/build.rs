//! Real builds through the real CLI: a QEMU guest, the guest agent, overlayfs, the store, and
//! the saved archive checked by skopeo and umoci.

mod harness;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{require_tool, text, TestEnv};

const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

const APP: &str = r#"FROM kiln-e2e/base
WORKDIR /work
RUN echo hello > hello.txt && mkdir -p /data && echo x > /data/gone && echo keep > /data/keep && echo out-line && echo err-line >&2
RUN rm /data/gone && ln -s /work/hello.txt /data/link
RUN <<EOT
echo "from a heredoc $((40+2))" > /data/heredoc
EOT
COPY note.txt /etc/
ENV GREETING=hi
CMD ["/bin/sh", "-c", "cat /work/hello.txt"]
"#;

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn builds_in_the_guest_and_saves_an_archive_skopeo_and_umoci_accept() {
    require_tool("skopeo");
    require_tool("umoci");
    let env = TestEnv::new("build");
    let base = env.context("base", BASE, &[], true);
    let out = env.kiln(&["build", "-t", "kiln-e2e/base", base.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "base build failed:\n{stderr}");
    assert!(stderr.contains("VM ready: qemu/"), "the RUN step must have booted a guest:\n{stderr}");

    let app = env.context("app", APP, &[("note.txt", "a note\n")], false);
    let out = env.kiln(&["build", "-t", "kiln-e2e/app:v1", app.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "app build failed:\n{stderr}");
    assert!(stderr.contains("out-line") && stderr.contains("err-line"), "RUN output must be shown:\n{stderr}");

    // The same build again: every step hits the cache and no VM boots.
    let local = env.dir.path().join("local-out");
    let out_spec = format!("type=local,dest={}", local.display());
    let out = env.kiln(&["build", "-t", "kiln-e2e/app:again", "--output", &out_spec, app.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "cached rebuild failed:\n{stderr}");
    // --output type=local: the flattened root filesystem, whiteouts applied.
    assert_eq!(fs::read_to_string(local.join("work/hello.txt")).expect("hello"), "hello\n");
    assert_eq!(fs::read_to_string(local.join("data/keep")).expect("keep"), "keep\n");
    assert!(!local.join("data/gone").exists(), "type=local must apply the whiteout of the later RUN");
    assert_eq!(fs::read_link(local.join("data/link")).expect("link"), Path::new("/work/hello.txt"));
    // WORKDIR, three RUNs and the COPY (WORKDIR makes its directory as a layer, as in BuildKit).
    assert!(stderr.contains("5 steps cached; no VM needed"), "{stderr}");
    assert!(!stderr.contains("VM ready"), "a fully cached build must not boot a guest:\n{stderr}");
    // Change the COPY'd file: that COPY reruns (on the host), the RUNs before it stay cached.
    fs::write(app.join("note.txt"), "another note\n").expect("write");
    env.give_to_user(&app.join("note.txt"));
    let out = env.kiln(&["build", "-t", "kiln-e2e/app:changed", app.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("4 steps cached; no VM needed"), "{stderr}");
    assert!(stderr.lines().any(|l| l.contains("COPY note.txt /etc/") && !l.contains("CACHED")), "{stderr}");
    fs::write(app.join("note.txt"), "a note\n").expect("write");

    let listing = text(&env.kiln(&["images"]).stdout);
    assert!(listing.contains("kiln-e2e/app") && listing.contains("v1"), "{listing}");

    // Save, then let independent tools read the archive.
    let archive = env.dir.path().join("app.tar");
    let out = env.kiln(&["save", "-o", archive.to_str().expect("utf8"), "kiln-e2e/app:v1"]);
    assert!(out.status.success(), "save failed: {}", text(&out.stderr));
    let inspect = run_ok(Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", archive.display())]));
    let info: serde_json::Value = serde_json::from_str(&inspect).expect("skopeo json");
    // busybox COPY, busybox --install, WORKDIR's directory, three RUNs, one COPY.
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(7), "{inspect}");
    let env_list = info["Env"].to_string();
    assert!(env_list.contains("GREETING=hi") && env_list.contains("PATH=/usr/local/sbin"), "{inspect}");
    let config = run_ok(Command::new("skopeo").args(["inspect", "--config", &format!("oci-archive:{}", archive.display())]));
    let config: serde_json::Value = serde_json::from_str(&config).expect("config json");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh", "-c", "cat /work/hello.txt"]));
    assert_eq!(config["config"]["WorkingDir"], "/work");
    assert_eq!(config["history"].as_array().map(Vec::len), Some(9), "{config}");

    // Unpack with umoci and look at the root filesystem file by file.
    let layout = env.dir.path().join("layout");
    fs::create_dir(&layout).expect("mkdir");
    run_ok(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&layout));
    let bundle = env.dir.path().join("bundle");
    run_ok(Command::new("umoci").args(["unpack", "--rootless", "--image"]).arg(format!("{}:v1", layout.display())).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(fs::read_to_string(rootfs.join("work/hello.txt")).expect("hello"), "hello\n");
    assert_eq!(fs::read_to_string(rootfs.join("data/keep")).expect("keep"), "keep\n");
    assert!(!rootfs.join("data/gone").exists(), "a file deleted by a later RUN must be gone");
    assert_eq!(fs::read_to_string(rootfs.join("data/heredoc")).expect("heredoc"), "from a heredoc 42\n");
    assert_eq!(fs::read_link(rootfs.join("data/link")).expect("link"), Path::new("/work/hello.txt"));
    assert_eq!(fs::read_to_string(rootfs.join("etc/note.txt")).expect("note"), "a note\n");
    assert_eq!(fs::read_link(rootfs.join("bin/sh")).expect("sh"), Path::new("/bin/busybox"));
    for stub in ["proc", "dev", "sys"] {
        assert!(!rootfs.join(stub).exists(), "/{stub} is a mount point the agent made; it must not be in the image");
    }

    assert!(env.store_files_not_owned_by_user().is_empty(), "root-owned files in the store: {:?}", env.store_files_not_owned_by_user());
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}

#[test]
fn failing_run_shows_step_and_output_and_keeps_the_state_before_it() {
    let env = TestEnv::new("fail");
    assert!(env.kiln(&["images"]).status.success());
    let before = env.store_snapshot();
    let ctx = env.context(
        "ctx",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo made-by-step-3 > /step3\"]\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo before-the-failure; touch /half-done; exit 3\"]\n",
        &[],
        true,
    );
    let out = env.kiln(&["build", "-t", "willfail", ctx.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kiln: error: Dockerfile:4: RUN"), "{stderr}");
    assert!(stderr.contains("exit code 3"), "{stderr}");
    assert!(stderr.contains("before-the-failure"), "{stderr}");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
    // The state before the failed step is an untagged image the user can run and look around in.
    let hint = stderr.lines().find(|l| l.contains("the state before the failed step is kept as image")).unwrap_or_else(|| panic!("no hint:\n{stderr}"));
    let id = hint.split("kept as image ").nth(1).and_then(|r| r.split(':').next()).expect("id in the hint").to_string();
    assert_eq!(id.len(), 12, "{hint}");
    let look = env.kiln(&["run", "--rm", "--entrypoint", "/bin/busybox", &id, "sh", "-c", "cat /step3; ls /half-done 2>&1 || echo not-there"]);
    assert!(look.status.success(), "{}", text(&look.stderr));
    assert_eq!(text(&look.stdout), "made-by-step-3\nls: /half-done: No such file or directory\nnot-there\n");
    assert!(!text(&env.kiln(&["images"]).stdout).contains("willfail"), "the tag is not moved by a failed build");
    // It is dangling: a prune takes it and the store is as it was.
    assert!(env.kiln(&["image", "prune", "-f"]).status.success());
    let blobs = |s: &std::collections::BTreeMap<String, u64>| s.keys().filter(|k| k.starts_with("blobs/") || k.starts_with("images/")).cloned().collect::<Vec<_>>();
    assert_eq!(blobs(&env.store_snapshot()), blobs(&before), "after a prune, nothing of the failed build is left");

    // A command that does not exist in the image fails like a shell would.
    let ctx = env.context("ctx2", "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/no/such/program\"]\n", &[], true);
    let out = env.kiln(&["build", "-t", "willfail", ctx.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("exit code 127"), "{stderr}");
}

#[test]
fn interrupt_during_run_stops_the_vm_and_changes_nothing() {
    let env = TestEnv::new("sigint");
    assert!(env.kiln(&["images"]).status.success());
    let before = env.store_snapshot();
    let ctx = env.context("ctx", "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"120\"]\n", &[], true);
    let mut child = env.spawn(&["build", "-t", "sleepy", ctx.to_str().expect("utf8")]);
    // Wait for the VM to be up, then give the RUN a moment to start.
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.vm_processes().is_empty() {
        assert!(Instant::now() < deadline, "no VM appeared");
        assert!(child.try_wait().expect("wait").is_none(), "kiln ended before the VM started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));
    // SIGINT to kiln itself: what Ctrl-C delivers (QEMU is in its own process group).
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let sent = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(sent, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "kiln did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(130), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(200));
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
    let after = env.store_snapshot();
    assert_eq!(after.keys().filter(|k| k.starts_with("blobs/sha256/") && !k.ends_with('/')).count(), 0, "{after:?}");
    assert_eq!(after.get("refs.json"), before.get("refs.json"));
}

#[test]
fn source_date_epoch_makes_builds_reproducible() {
    let env = TestEnv::new("repro");
    let ctx = env.context(
        "ctx",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir /d && /bin/busybox touch /d/f\"]\nCOPY note.txt /\n",
        &[("note.txt", "n\n")],
        true,
    );
    let ctx_s = ctx.to_str().expect("utf8");
    let build = || {
        let out = env.kiln_with(&["build", "--no-cache", "-q", "-t", "repro", ctx_s], &[("SOURCE_DATE_EPOCH", "1700000000")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    let first = build();
    std::thread::sleep(Duration::from_millis(1100));
    let second = build();
    assert!(first.starts_with("sha256:"), "{first}");
    assert_eq!(first, second, "same inputs + SOURCE_DATE_EPOCH must give the same image id");
    let out = env.kiln_with(&["build", "--no-cache", "-q", "-t", "repro", ctx_s], &[("SOURCE_DATE_EPOCH", "soon")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("invalid SOURCE_DATE_EPOCH"), "{}", text(&out.stderr));
}

#[test]
fn copy_only_build_boots_no_vm_and_honours_dockerignore_labels_and_iidfile() {
    let env = TestEnv::new("copyonly");
    let ctx = env.context(
        "ctx",
        "FROM scratch\nMAINTAINER kiln team <t@example.org>\nCOPY . /app/\nCMD [\"/app/run\"]\n",
        &[("run", "#!/bin/sh\n"), ("notes.md", "x"), ("README.md", "r"), ("build/out.o", "o"), (".dockerignore", "*.md\n!README.md\nbuild\n")],
        false,
    );
    let iid = env.dir.path().join("iid");
    let out = env.kiln(&[
        "build", "-t", "copyonly", "--label", "org.example.team=kiln", "--iidfile",
        iid.to_str().expect("utf8"), ctx.to_str().expect("utf8"),
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no VM needed") && !stderr.contains("VM ready"), "{stderr}");
    let id = fs::read_to_string(&iid).expect("iidfile");
    assert!(stderr.contains(&format!("writing image {id}")), "iidfile {id} vs {stderr}");

    // --output type=tar and type=oci, from the cache.
    let rootfs_tar = env.dir.path().join("rootfs.tar");
    let oci_tar = env.dir.path().join("oci.tar");
    for spec in [format!("type=tar,dest={}", rootfs_tar.display()), format!("type=oci,dest={}", oci_tar.display())] {
        let out = env.kiln(&["build", "-t", "copyonly-out", "--output", &spec, ctx.to_str().expect("utf8")]);
        assert!(out.status.success(), "{spec}: {}", text(&out.stderr));
    }
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&rootfs_tar));
    // A directory entry is marked by its type flag; the trailing slash is optional.
    let mut names: Vec<&str> = listing.lines().map(|l| l.trim_end_matches('/')).collect();
    names.sort();
    assert_eq!(names, vec!["app", "app/.dockerignore", "app/Dockerfile", "app/README.md", "app/run"], "{listing}");
    run_ok(Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", oci_tar.display())]));
    let out = env.kiln(&["build", "-t", "copyonly-out", "--output", "type=zip,dest=x", ctx.to_str().expect("utf8")]);
    harness::assert_clean_error(&out, "invalid --output type");

    // -f -: the Dockerfile on stdin; the context's .dockerignore still applies.
    let mut child = env
        .command(&["build", "-f", "-", "-t", "fromstdin", "--output", &format!("type=tar,dest={}", rootfs_tar.display()), ctx.to_str().expect("utf8")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"FROM scratch\nCOPY . /stdin/\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&rootfs_tar));
    assert!(listing.contains("stdin/run") && !listing.contains("notes.md"), "{listing}");

    let archive = env.dir.path().join("c.tar");
    assert!(env.kiln(&["save", "-o", archive.to_str().expect("utf8"), "copyonly"]).status.success());
    let config = run_ok(Command::new("skopeo").args(["inspect", "--config", &format!("oci-archive:{}", archive.display())]));
    let config: serde_json::Value = serde_json::from_str(&config).expect("json");
    assert_eq!(config["config"]["Labels"]["org.example.team"], "kiln");
    // As BuildKit: MAINTAINER sets the image's author, CMD marks ArgsEscaped.
    assert_eq!(config["author"], "kiln team <t@example.org>", "{config}");
    assert_eq!(config["config"]["ArgsEscaped"], true, "{config}");
    let layout = env.dir.path().join("layout");
    fs::create_dir(&layout).expect("mkdir");
    run_ok(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&layout));
    let bundle = env.dir.path().join("bundle");
    run_ok(Command::new("umoci").args(["unpack", "--rootless", "--image"]).arg(format!("{}:latest", layout.display())).arg(&bundle));
    let mut files: Vec<String> = fs::read_dir(bundle.join("rootfs/app")).expect("app").map(|e| e.expect("e").file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, vec![".dockerignore", "Dockerfile", "README.md", "run"], ".dockerignore must hide *.md (but README.md) and build/");
}

/// The built-in VMM end to end: where the probe says this host can boot Linux guests, a real
/// build runs under it; elsewhere (e.g. a nested-PVM KVM) the test says "skipped: <reason>"
/// and checks that `--backend vm` fails with that one-line reason instead of hanging.
#[test]
fn builtin_vmm_builds_where_the_host_can_boot_linux() {
    let env = TestEnv::new("vmm");
    let doctor = text(&env.kiln(&["doctor"]).stdout);
    let ctx = env.context("ctx", BASE, &[], true);
    let out = env.kiln(&["build", "--backend", "vm", "-t", "vmm", ctx.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    match doctor.lines().find(|l| l.contains("built-in VMM:")) {
        Some(l) if l.starts_with("[ok]") => {
            assert!(out.status.success(), "{stderr}");
            assert!(stderr.contains("VM ready: kiln-vmm/kvm"), "{stderr}");
        }
        Some(l) => {
            let reason = l.split_once("built-in VMM:").map(|x| x.1.trim()).unwrap_or("");
            println!("skipped: the built-in VMM cannot boot Linux guests here: {reason}");
            harness::assert_clean_error(&out, "--backend vm: the built-in VMM cannot be used here");
        }
        None => panic!("kiln doctor does not report the built-in VMM:\n{doctor}"),
    }
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}

#[test]
fn build_cache_outlives_image_prune_until_builder_prune() {
    let env = TestEnv::new("cacheprune");
    let ctx = env.context("ctx", "FROM scratch\nCOPY data.bin /data.bin\n", &[("data.bin", &"x".repeat(100_000))], false);
    let build = |tag: &str| {
        let out = env.kiln(&["build", "-t", tag, ctx.to_str().expect("utf8")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    assert!(build("c1").contains("0 steps cached"));
    let out = env.kiln(&["image", "prune", "-a", "-f"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The image is gone, but its layer is pinned by the build cache: the rebuild hits.
    assert!(build("c2").contains("1 steps cached; no VM needed"));
    assert!(env.kiln(&["rmi", "c2"]).status.success());
    let out = env.kiln(&["builder", "prune", "-f", "--keep-storage", "1GB"]);
    assert!(out.status.success() && text(&out.stdout).contains("Deleted build cache entries: 0"), "{}", text(&out.stdout));
    let out = env.kiln(&["builder", "prune", "-a", "-f"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success() && stdout.contains("Deleted build cache entries: 1"), "{stdout}");
    assert!(!stdout.contains("Total reclaimed space: 0B"), "the cache-only layer must be collected: {stdout}");
    assert!(build("c3").contains("0 steps cached"));
    let out = env.kiln(&["builder", "prune", "-f", "--keep-storage", "lots"]);
    harness::assert_clean_error(&out, "invalid size");
}

/// `COPY --link`: its layer does not depend on what is below it, so after the base changes it
/// comes from the cache (BuildKit's rebasing), while a plain COPY after it reruns.
#[test]
fn copy_link_is_reused_on_a_changed_base() {
    let env = TestEnv::new("copylink");
    let dockerfile = "FROM scratch\nCOPY base.txt /\nCOPY --link linked.txt /l/\nCOPY plain.txt /p/\n";
    let ctx = env.context("ctx", dockerfile, &[("base.txt", "one"), ("linked.txt", "L"), ("plain.txt", "P")], false);
    let dest = env.dir.path().join("out");
    let out_arg = format!("type=local,dest={}", dest.display());
    let build = || {
        let out = env.kiln(&["build", "--progress", "plain", "-o", &out_arg, ctx.to_str().expect("utf8")]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    build();
    fs::write(ctx.join("base.txt"), "two").expect("write");
    let stderr = build();
    let line = |needle: &str| stderr.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?}:\n{stderr}")).to_string();
    assert!(!line("COPY base.txt").contains("CACHED"), "{stderr}");
    assert!(line("COPY --link linked.txt").contains("CACHED"), "the linked layer is reused:\n{stderr}");
    assert!(!line("COPY plain.txt").contains("CACHED"), "a plain COPY above a changed layer reruns:\n{stderr}");
    for (path, want) in [("base.txt", "two"), ("l/linked.txt", "L"), ("p/plain.txt", "P")] {
        assert_eq!(fs::read_to_string(dest.join(path)).expect(path), want);
    }
}
