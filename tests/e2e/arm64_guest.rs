//! The arm64 guest (issue 15): `KILN_GUEST_ARCH=arm64` boots `qemu-system-aarch64 -M virt` with
//! the arm64 kernel and a static aarch64 agent (full-system TCG here; HVF or KVM on arm64
//! hosts). Through the real CLI: a multi-stage build whose RUN steps record `uname -m` =
//! aarch64 with no user-mode emulation, a cached rebuild, `kiln run` and `exec` in the arm64
//! guest, and a clean error for a platform the arm64 guest cannot run. The guest image is
//! `$KILN_GUEST_DIR_ARM64` (tests/run.sh sets it), else the checkout's `images/out-arm64`.

mod harness;

use std::fs;
use std::path::{Path, PathBuf};

use harness::containers::{ok, p};
use harness::{text, TestEnv};

/// The arm64 guest image directory, or a failure saying how to make it.
fn arm64_guest() -> PathBuf {
    let dir = std::env::var_os("KILN_GUEST_DIR_ARM64")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/out-arm64"));
    assert!(
        dir.join("kernel").is_file() && dir.join("initramfs.cpio").is_file(),
        "no arm64 guest in {}: run examples/setup-and-build.sh (it builds it with KILN_GUEST_ARCH=arm64 images/build.sh)",
        dir.display()
    );
    dir
}

#[test]
fn builds_and_containers_run_natively_in_the_arm64_guest() {
    harness::require_tool("qemu-system-aarch64");
    let guest = arm64_guest();
    let env = TestEnv::new("arm64-guest");
    let vars = [("KILN_GUEST_ARCH", "arm64"), ("KILN_GUEST_DIR", guest.to_str().expect("utf8"))];
    let kiln = |args: &[&str]| env.kiln_with(args, &vars);

    let dockerfile = "FROM scratch AS base\n\
        COPY busybox /bin/busybox\n\
        RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
        FROM base AS probe\n\
        ARG TARGETPLATFORM BUILDPLATFORM\n\
        RUN echo \"$(uname -m) $TARGETPLATFORM $BUILDPLATFORM\" | cat > /arch && ls /bin | grep -c '^sh$' > /count\n\
        FROM base\n\
        COPY --from=probe /arch /count /\n\
        CMD [\"cat\", \"/arch\"]\n";
    let ctx = env.context("ctx", dockerfile, &[], false);
    let arm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/arm64/busybox");
    assert!(arm.is_file(), "{} is missing: run examples/setup-and-build.sh", arm.display());
    fs::copy(&arm, ctx.join("busybox")).expect("copy");
    env.give_to_user(&ctx);
    let out = kiln(&["build", "--progress", "plain", "-t", "native", p(&ctx)]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("emulating"), "no user-mode emulation in the arm64 guest: {stderr}");
    assert!(stderr.contains("qemu/tcg"), "{stderr}");
    // The image is linux/arm64, its RUN ran on aarch64, and the guest's platform is the build's.
    let inspected: serde_json::Value = serde_json::from_str(&ok(&kiln(&["inspect", "native"]))).expect("json");
    assert_eq!(inspected[0]["Architecture"], "arm64");
    assert_eq!(ok(&kiln(&["run", "--rm", "native"])).trim(), "aarch64 linux/arm64 linux/arm64");
    assert_eq!(ok(&kiln(&["run", "--rm", "native", "cat", "/count"])).trim(), "1", "pipelines in the guest");

    // A second build is all cache hits and boots nothing.
    let again = kiln(&["build", "--progress", "plain", "-t", "native", p(&ctx)]);
    let stderr = text(&again.stderr);
    assert!(again.status.success() && stderr.contains("no VM needed"), "{stderr}");

    // A long-running container and exec in it.
    ok(&kiln(&["run", "-d", "--name", "arm-box", "native", "sleep", "300"]));
    assert_eq!(ok(&kiln(&["exec", "arm-box", "uname", "-m"])).trim(), "aarch64");
    ok(&kiln(&["rm", "-f", "arm-box"]));

    // What the arm64 guest cannot run is a clean error before anything runs.
    harness::assert_clean_error(&kiln(&["build", "--platform", "linux/amd64", p(&ctx)]), "the arm64 guest runs arm64 binaries only");
    // The x86_64 guest's directory is refused for the arm64 guest, and the other way round.
    let x86 = std::env::var("KILN_GUEST_DIR").unwrap_or_else(|_| format!("{}/../../images/out", env!("CARGO_MANIFEST_DIR")));
    let wrong = env.kiln_with(&["build", "--no-cache", p(&ctx)], &[("KILN_GUEST_ARCH", "arm64"), ("KILN_GUEST_DIR", &x86)]);
    harness::assert_clean_error(&wrong, "the x86_64 guest, and the arm64 guest is wanted");
    harness::containers::no_vm_left(&env);
}
