//! Cross-platform builds through the real CLI and a real guest: an arm64 busybox image (from
//! Debian's busybox-static:arm64, fetched by the setup script) is built on with
//! `FROM --platform=linux/arm64` and with `kiln build --platform linux/arm64`; its RUN steps
//! execute under QEMU user-mode emulation in the guest (`uname -m` says aarch64) and the
//! image is recorded as linux/arm64. A base of the wrong platform is a clean error.

mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{text, TestEnv};

fn arm64_busybox() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/arm64/busybox");
    assert!(p.is_file(), "{} is missing: run examples/setup-and-build.sh (it fetches busybox-static:arm64)", p.display());
    p
}

/// A rootfs tar holding only `bin/busybox`, imported as `name` for `platform`.
fn import_busybox(env: &TestEnv, binary: &Path, platform: &str, name: &str) {
    let root = env.dir.path().join(format!("root-{name}"));
    fs::create_dir_all(root.join("bin")).expect("mkdir");
    fs::copy(binary, root.join("bin/busybox")).expect("copy");
    let tar = env.dir.path().join(format!("{name}.tar"));
    let out = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").output().expect("tar");
    assert!(out.status.success(), "{}", text(&out.stderr));
    env.give_to_user(&tar);
    let out = kiln(env, &["import", "--platform", platform, tar.to_str().expect("utf8"), name]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));
}

/// kiln with user-mode emulation in the x86_64 guest even where the arm64 guest is there
/// (`KILN_CROSS_GUEST=never`): these tests are about the emulation.
fn kiln(env: &TestEnv, args: &[&str]) -> std::process::Output {
    env.kiln_with(args, &[("KILN_CROSS_GUEST", "never")])
}

fn architecture(env: &TestEnv, image: &str) -> String {
    let out = kiln(env, &["inspect", image]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    format!("{}/{}", v[0]["Os"].as_str().unwrap_or("?"), v[0]["Architecture"].as_str().unwrap_or("?"))
}

#[test]
fn arm64_stages_run_under_emulation() {
    harness::require_tool("qemu-aarch64-static");
    let env = TestEnv::new("platform");
    import_busybox(&env, &arm64_busybox(), "linux/arm64", "bb-arm64");
    import_busybox(&env, Path::new("/bin/busybox"), "linux/amd64", "bb-amd64");

    let dockerfile = "FROM --platform=linux/arm64 bb-arm64\n\
        RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
        ARG TARGETARCH\n\
        RUN echo \"$(uname -m) $TARGETARCH\" > /arch\n";
    let ctx = env.context("ctx", dockerfile, &[], false);
    let dest = env.dir.path().join("out");
    fs::create_dir(&dest).expect("mkdir");
    env.give_to_user(&dest);
    let out_arg = format!("type=local,dest={}", dest.display());
    let out = kiln(&env, &["build", "--progress", "plain", "-t", "cross", "-o", &out_arg, ctx.to_str().expect("utf8")]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("emulating linux/arm64"), "{stderr}");
    // The stage is arm64; TARGETARCH is still the build's target (the host's), as in BuildKit.
    assert_eq!(fs::read_to_string(dest.join("arch")).expect("arch").trim(), "aarch64 amd64");
    assert_eq!(architecture(&env, "cross"), "linux/arm64");

    // --platform makes arm64 the target of every stage, and of TARGETARCH.
    let ctx2 = env.context("ctx2", "FROM bb-arm64\nARG TARGETARCH\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $(/bin/busybox uname -m) $TARGETARCH > /arch\"]\n", &[], false);
    let out = kiln(&env, &["build", "--platform", "linux/arm64", "-t", "cross2", "-o", &out_arg, ctx2.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(dest.join("arch")).expect("arch").trim(), "aarch64 arm64");
    assert_eq!(architecture(&env, "cross2"), "linux/arm64");

    // An amd64 image where arm64 is wanted: kiln tries the registry for the right platform
    // (there is none here) and fails cleanly.
    let bad = env.context("bad", "FROM --platform=linux/arm64 bb-amd64\nRUN true\n", &[], false);
    harness::assert_clean_error(&kiln(&env, &["build", bad.to_str().expect("utf8")]), "bb-amd64");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}

/// `kiln run` of an arm64 image: the main process and `kiln exec` run under emulation in the
/// container's guest; `--platform` picks the image, a local image of another platform with
/// `--pull never` is a clean error.
#[test]
fn arm64_containers_run_under_emulation() {
    harness::require_tool("qemu-aarch64-static");
    let env = TestEnv::new("platform-run");
    import_busybox(&env, &arm64_busybox(), "linux/arm64", "bb-arm64");
    import_busybox(&env, Path::new("/bin/busybox"), "linux/amd64", "bb-amd64");
    let out = kiln(&env, &["run", "--rm", "bb-arm64", "/bin/busybox", "uname", "-m"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "aarch64\n");
    assert!(text(&out.stderr).contains("does not match the detected host platform"), "Docker's warning: {}", text(&out.stderr));
    let out = kiln(&env, &["run", "--rm", "--platform", "linux/arm64", "bb-arm64", "/bin/busybox", "uname", "-m"]);
    assert_eq!((text(&out.stdout).as_str(), text(&out.stderr).contains("WARNING")), ("aarch64\n", false), "{}", text(&out.stderr));
    let out = kiln(&env, &["run", "-d", "--name", "arm", "bb-arm64", "/bin/busybox", "sleep", "300"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = kiln(&env, &["exec", "arm", "/bin/busybox", "uname", "-m"]);
    assert_eq!(text(&out.stdout), "aarch64\n", "exec runs under the same emulator: {}", text(&out.stderr));
    assert!(kiln(&env, &["rm", "-f", "arm"]).status.success());
    harness::containers::assert_run_error(&kiln(&env, &["run", "--rm", "--platform", "linux/arm64", "--pull", "never", "bb-amd64", "true"]), "is a linux/amd64 image, but linux/arm64 is wanted");
    harness::containers::assert_run_error(&kiln(&env, &["run", "--rm", "--platform", "linux/", "bb-amd64", "true"]), "invalid --platform");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}
