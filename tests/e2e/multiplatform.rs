//! Multi-platform builds through the real CLI, a real guest and a real registry: one
//! `kiln build --platform linux/amd64,linux/arm64` makes one image index (each platform's RUN
//! records `uname -m` and `$TARGETARCH`; arm64 runs in the arm64 guest, arm/v7 under user-mode
//! emulation in the x86_64 guest);
//! the index is one image for `images`, `inspect`, `history`, `run`, `rmi`, `save`/`load` and
//! `push`, checked by skopeo (`inspect --raw`, `--override-arch`, `copy --multi-arch all`
//! byte for byte). A failure on one platform stores nothing; a `FROM` of the index picks the
//! build platform's image; a `--platform=$BUILDPLATFORM` stage runs once for both targets.

mod harness;

use std::fs;
use std::path::Path;
use std::process::Command;

use harness::containers::{ok, p};
use harness::registry::Registry;
use harness::{text, TestEnv};

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("run skopeo");
    assert!(out.status.success(), "skopeo {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A context holding busybox for both architectures (`busybox-amd64`, `busybox-arm64`).
fn context(env: &TestEnv, name: &str, dockerfile: &str) -> std::path::PathBuf {
    let ctx = env.context(name, dockerfile, &[], false);
    let arm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/arm64/busybox");
    assert!(arm.is_file(), "{} is missing: run examples/setup-and-build.sh (it fetches busybox-static:arm64)", arm.display());
    fs::copy("/bin/busybox", ctx.join("busybox-amd64")).expect("copy");
    fs::copy(&arm, ctx.join("busybox-arm64")).expect("copy");
    env.give_to_user(&ctx);
    ctx
}

const DOCKERFILE: &str = "FROM --platform=$BUILDPLATFORM scratch AS tool\n\
    ARG BUILDARCH\n\
    COPY busybox-${BUILDARCH} /bin/busybox\n\
    RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo built-once-on-$(/bin/busybox uname -m) > /tool\"]\n\
    FROM scratch AS base\n\
    ARG TARGETARCH\n\
    COPY busybox-${TARGETARCH} /bin/busybox\n\
    RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
    FROM base\n\
    ARG TARGETARCH TARGETPLATFORM\n\
    COPY --from=tool /tool /tool\n\
    RUN echo \"$(uname -m) $TARGETARCH $TARGETPLATFORM\" | cat > /arch && ls /bin | grep -c busybox > /count\n\
    CMD [\"cat\", \"/arch\"]\n";

#[test]
fn two_platforms_make_one_index_end_to_end() {
    harness::require_tool("qemu-aarch64-static");
    harness::require_tool("skopeo");
    let env = TestEnv::new("multiplatform");
    let ctx = context(&env, "ctx", DOCKERFILE);
    let out = env.kiln(&["build", "--progress", "plain", "--platform", "linux/amd64,linux/arm64", "-t", "multi:1", p(&ctx)]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("[linux/arm64 "), "steps are labelled by platform: {stderr}");
    // The arm64 stages run natively in the arm64 guest (tests/run.sh provides it), not emulated.
    assert!(stderr.contains("starting the arm64 build VM") && !stderr.contains("emulating linux/arm64"), "{stderr}");
    // The $BUILDPLATFORM stage's RUN is the same step for both targets: it runs once.
    assert_eq!(stderr.matches("echo built-once-on").count(), 2, "{stderr}");
    assert!(stderr.lines().any(|l| l.contains("echo built-once-on") && l.contains("CACHED")), "the second target reuses it: {stderr}");

    // One image, two platforms.
    let listed = ok(&env.kiln(&["images", "--format", "json"]));
    let rows: Vec<serde_json::Value> = listed.lines().map(json).collect();
    assert_eq!(rows.len(), 1, "the tag once: {listed}");
    assert_eq!(rows[0]["Platforms"], serde_json::json!(["linux/amd64", "linux/arm64"]));
    let tree = ok(&env.kiln(&["images", "--tree"]));
    assert!(tree.contains("├─ linux/amd64") && tree.contains("└─ linux/arm64"), "{tree}");
    let inspected = json(&ok(&env.kiln(&["inspect", "multi:1"])));
    assert_eq!(inspected[0]["Manifests"].as_array().map(Vec::len), Some(2));
    assert_eq!(inspected[0]["Descriptor"]["mediaType"], "application/vnd.oci.image.index.v1+json");
    let arm = json(&ok(&env.kiln(&["inspect", "--platform", "linux/arm64", "multi:1"])));
    assert_eq!(arm[0]["Architecture"], "arm64");
    let history = ok(&env.kiln(&["history", "--no-trunc", "--platform", "linux/arm64", "multi:1"]));
    assert!(history.contains("TARGETARCH=arm64"), "{history}");

    // Each platform's RUN ran for that platform.
    assert_eq!(ok(&env.kiln(&["run", "--rm", "multi:1"])).trim(), "x86_64 amd64 linux/amd64");
    assert_eq!(ok(&env.kiln(&["run", "--rm", "--platform", "linux/arm64", "multi:1"])).trim(), "aarch64 arm64 linux/arm64");
    // Pipelines work under emulation (busybox's shell execs its applets by name).
    assert_eq!(ok(&env.kiln(&["run", "--rm", "--platform", "linux/arm64", "multi:1", "cat", "/count"])).trim(), "1");
    assert_eq!(ok(&env.kiln(&["run", "--rm", "--platform", "linux/arm64", "multi:1", "cat", "/tool"])).trim(), "built-once-on-x86_64");

    // -o type=local: one directory per platform (BuildKit's layout); the index in OCI archives.
    let dest = env.dir.path().join("out");
    let out_arg = format!("type=local,dest={}", dest.display());
    ok(&env.kiln(&["build", "-q", "--platform", "linux/amd64,linux/arm64", "-o", &out_arg, "-t", "multi:1", p(&ctx)]));
    assert_eq!(fs::read_to_string(dest.join("linux_arm64/arch")).expect("arm64 arch").trim(), "aarch64 arm64 linux/arm64");
    assert_eq!(fs::read_to_string(dest.join("linux_amd64/arch")).expect("amd64 arch").trim(), "x86_64 amd64 linux/amd64");
    // That build dated a new index (the first is now dangling): read the name's again.
    let inspected = json(&ok(&env.kiln(&["inspect", "multi:1"])));
    let manifests = inspected[0]["Manifests"].as_array().expect("Manifests").clone();
    let index_digest = inspected[0]["Descriptor"]["digest"].as_str().expect("digest").to_string();

    // save: skopeo reads both architectures of the OCI archive; the docker-archive's
    // manifest.json carries the host's.
    let oci = env.dir.path().join("multi.oci.tar");
    ok(&env.kiln(&["save", "--format", "oci", "-o", p(&oci), "multi:1"]));
    let raw = json(&skopeo(&["inspect", "--raw", &format!("oci-archive:{}", p(&oci))]));
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(2), "{raw}");
    let arm_seen = json(&skopeo(&["inspect", "--override-arch", "arm64", &format!("oci-archive:{}", p(&oci))]));
    assert_eq!(arm_seen["Architecture"], "arm64");
    let amd_seen = json(&skopeo(&["inspect", "--override-arch", "amd64", &format!("oci-archive:{}", p(&oci))]));
    assert_eq!(amd_seen["Architecture"], "amd64");
    let docker = env.dir.path().join("multi.docker.tar");
    ok(&env.kiln(&["save", "-o", p(&docker), "multi:1"]));
    assert_eq!(json(&skopeo(&["inspect", &format!("docker-archive:{}", p(&docker))]))["Architecture"], "amd64");

    // rmi removes the index and its platform images; load brings the index back whole.
    let before_rmi = env.store_snapshot();
    ok(&env.kiln(&["rmi", "multi:1"]));
    harness::assert_clean_error(&env.kiln(&["inspect", "multi:1"]), "multi:1");
    for part in &manifests {
        let digest = part["Descriptor"]["digest"].as_str().expect("digest").strip_prefix("sha256:").expect("hex").to_string();
        assert!(!env.store_snapshot().contains_key(&format!("blobs/sha256/{digest}")), "rmi removed the platform manifest {digest}");
    }
    ok(&env.kiln(&["load", "-i", p(&oci)]));
    let again = json(&ok(&env.kiln(&["inspect", "multi:1"])));
    assert_eq!(again[0]["Descriptor"]["digest"].as_str(), Some(index_digest.as_str()), "the same index digest after save and load");
    let blobs = |s: &std::collections::BTreeMap<String, u64>| s.keys().filter(|k| k.starts_with("blobs/")).count();
    assert!(blobs(&env.store_snapshot()) > 0 && blobs(&before_rmi) >= blobs(&env.store_snapshot()));

    // push: the index and both manifests, as skopeo sees them.
    let reg = Registry::start(None);
    let remote = format!("{}/team/multi:1", reg.host);
    ok(&env.kiln(&["tag", "multi:1", &remote]));
    let pushed = ok(&env.kiln(&["push", &remote]));
    assert!(pushed.contains(&format!("1: digest: {index_digest}")), "{pushed}");
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{remote}")]);
    let remote_index = json(&raw);
    let platforms: Vec<String> = remote_index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| format!("{}/{} {}", m["platform"]["os"].as_str().unwrap_or("?"), m["platform"]["architecture"].as_str().unwrap_or("?"), m["digest"].as_str().unwrap_or("?")))
        .collect();
    let local: Vec<String> = manifests.iter().map(|m| format!("{} {}", m["Platform"].as_str().unwrap_or("?"), m["Descriptor"]["digest"].as_str().unwrap_or("?"))).collect();
    assert_eq!(platforms, local, "the registry's index lists kiln's manifests");
    let arm_remote = json(&skopeo(&["inspect", "--tls-verify=false", "--override-arch", "arm64", &format!("docker://{remote}")]));
    assert_eq!(arm_remote["Architecture"], "arm64");
    // skopeo copies every platform; the index it stores is byte for byte the one kiln pushed.
    let layout = env.dir.path().join("layout");
    skopeo(&["copy", "--multi-arch", "all", "--src-tls-verify=false", &format!("docker://{remote}"), &format!("oci:{}", p(&layout))]);
    let hex = index_digest.strip_prefix("sha256:").expect("sha256");
    assert_eq!(fs::read(layout.join("blobs/sha256").join(hex)).expect("index blob"), raw.trim_end().as_bytes());
    harness::containers::no_vm_left(&env);
}

#[test]
fn a_failing_platform_stores_nothing_and_from_an_index_picks_the_build_platform() {
    harness::require_tool("qemu-aarch64-static");
    let env = TestEnv::new("multiplatform-fail");
    let ctx = context(&env, "ctx", DOCKERFILE);
    ok(&env.kiln(&["build", "-q", "--platform", "linux/arm64,linux/amd64", "-t", "base:1", p(&ctx)]));
    let before = env.store_snapshot();
    // Fails under arm64 only.
    let failing = context(&env, "failing", "FROM base:1\nRUN [ \"$(uname -m)\" = x86_64 ]\n");
    let out = env.kiln(&["build", "--platform", "linux/amd64,linux/arm64", "-t", "broken", p(&failing)]);
    harness::assert_clean_error(&out, "did not complete successfully");
    let after = env.store_snapshot();
    let changed: Vec<&String> = after.keys().filter(|k| !k.starts_with("pins/") && !before.contains_key(*k)).collect();
    assert!(changed.iter().all(|k| !k.starts_with("blobs/") && !k.starts_with("images/")), "a failed multi-platform build stores nothing: {changed:?}");
    assert!(!ok(&env.kiln(&["images"])).contains("broken"));

    // A plain build FROM the index takes this machine's platform's image.
    let single = context(&env, "single", "FROM base:1\nRUN cat /arch > /seen\n");
    ok(&env.kiln(&["build", "-q", "-t", "single", p(&single)]));
    assert_eq!(ok(&env.kiln(&["run", "--rm", "single", "cat", "/seen"])).trim(), "x86_64 amd64 linux/amd64");
    // A third architecture with a variant: linux/arm/v7 (Debian's armhf busybox), recorded
    // with its variant in the index and the image config.
    let armhf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/armhf/busybox");
    assert!(armhf.is_file(), "{} is missing: run examples/setup-and-build.sh (it fetches busybox-static:armhf)", armhf.display());
    let v7 = context(&env, "v7", "FROM scratch\nARG TARGETARCH TARGETVARIANT\nCOPY busybox-${TARGETARCH} /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $(/bin/busybox uname -m) $TARGETVARIANT > /arch\"]\n");
    fs::copy(&armhf, v7.join("busybox-arm")).expect("copy");
    env.give_to_user(&v7);
    ok(&env.kiln(&["build", "-q", "--platform", "linux/arm/v7,linux/amd64", "-t", "v7", p(&v7)]));
    let inspected = json(&ok(&env.kiln(&["inspect", "v7"])));
    assert_eq!(inspected[0]["Manifests"][0]["Platform"], "linux/arm/v7", "{inspected}");
    let arm = json(&ok(&env.kiln(&["inspect", "--platform", "linux/arm/v7", "v7"])));
    assert_eq!((arm[0]["Architecture"].as_str(), arm[0]["Variant"].as_str()), (Some("arm"), Some("v7")));
    assert_eq!(ok(&env.kiln(&["run", "--rm", "--platform", "linux/arm/v7", "v7", "/bin/busybox", "cat", "/arch"])).trim(), "armv7l v7");

    // A final stage pinned to the build platform would make the same image for every target.
    let pinned = context(&env, "pinned", "FROM --platform=$BUILDPLATFORM scratch\nCOPY busybox-amd64 /bin/busybox\n");
    let out = env.kiln(&["build", "--platform", "linux/amd64,linux/arm64", p(&pinned)]);
    harness::assert_clean_error(&out, "each platform of a multi-platform build must make its own");

    // Bad platform lists fail before anything runs.
    for (list, needle) in [
        ("linux/amd64,linux/amd64", "given twice"),
        ("linux/amd64,", "invalid platform"),
        ("linux/amd64,linux/nosucharch", "no emulator known"),
        ("windows/amd64,linux/amd64", "only linux"),
    ] {
        harness::assert_clean_error(&env.kiln(&["build", "--platform", list, p(&single)]), needle);
    }
    harness::containers::no_vm_left(&env);
}
