//! Build cache export and import through the real CLI: `--cache-to` into a layout directory
//! and a loopback `docker-registry`, `--cache-from` into an empty store (every step cached, no
//! VM, the same image), a tampered blob rejected with a warning, bad specs and missing
//! sources, and the automatic cache bound (`KILN_CACHE_MAX`).

mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::registry::Registry;
use harness::{assert_clean_error, require_tool, text, TestEnv};

/// Four layer steps: a COPY, two RUNs with layers and one whose diff is empty.
const DOCKERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN echo cached > /hi.txt\nRUN true\nCMD [\"/bin/sh\"]\n";
const LAYER_STEPS: usize = 4;
const EPOCH: &str = "1700000000";

fn p(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

/// Builds `ctx` in `env` with `extra` flags and SOURCE_DATE_EPOCH; returns the image id and
/// stderr.
fn build(env: &TestEnv, ctx: &Path, extra: &[&str]) -> (String, String) {
    let iid = env.dir.path().join("iid");
    let _ = fs::remove_file(&iid);
    let mut args = vec!["build", "-t", "cache/app", "--iidfile", p(&iid)];
    args.extend_from_slice(extra);
    args.push(p(ctx));
    let out = env.kiln_with(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "kiln build {extra:?} failed:\n{stderr}");
    (fs::read_to_string(&iid).expect("iidfile"), stderr)
}

/// The step lines of the layer steps (COPY and RUN).
fn layer_step_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with('#') && (l.contains("] COPY ") || l.contains("] RUN "))).collect()
}

fn assert_all_cached_without_vm(stderr: &str) {
    let steps = layer_step_lines(stderr);
    assert_eq!(steps.len(), LAYER_STEPS, "{stderr}");
    assert!(steps.iter().all(|l| l.ends_with("CACHED")), "every layer step must be CACHED:\n{stderr}");
    assert!(stderr.contains(&format!("{LAYER_STEPS} steps cached; no VM needed")), "{stderr}");
    assert!(!stderr.contains("VM ready"), "no guest may boot:\n{stderr}");
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).expect("read")).expect("json")
}

/// The layer descriptors of the cache manifest in layout `dir`.
fn layout_layers(dir: &Path) -> Vec<serde_json::Value> {
    let index = json(&dir.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().expect("manifest digest").trim_start_matches("sha256:").to_string();
    let manifest = json(&dir.join("blobs/sha256").join(digest));
    manifest["layers"].as_array().expect("layers").clone()
}

fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output().expect("cp");
    assert!(out.status.success(), "cp: {}", text(&out.stderr));
}

#[test]
fn local_cache_fills_an_empty_store_and_a_tampered_blob_only_reruns_its_step() {
    require_tool("skopeo");
    require_tool("umoci");
    let a = TestEnv::new("cachelocal-a");
    let ctx = a.context("ctx", DOCKERFILE, &[], true);
    let cache = a.dir.path().join("cache");
    let spec = format!("type=local,dest={}", p(&cache));
    let (id, stderr) = build(&a, &ctx, &["--cache-to", &spec]);
    assert!(stderr.contains("VM ready"), "the first build runs its RUNs in a guest:\n{stderr}");
    assert!(stderr.contains("#cache exported 4 records (3 layers"), "{stderr}");

    // Image tools read the exported cache as an OCI image.
    let inspect = Command::new("skopeo").args(["inspect", &format!("oci:{}", p(&cache))]).output().expect("skopeo");
    assert!(inspect.status.success(), "skopeo inspect: {}", text(&inspect.stderr));
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("skopeo json");
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(3), "{info}");
    let listed = Command::new("umoci").args(["ls", "--layout", p(&cache)]).output().expect("umoci");
    assert_eq!(text(&listed.stdout).trim(), "latest", "umoci ls: {}", text(&listed.stderr));

    // An empty store with the cache: every step hits, no VM, the same image.
    let b = TestEnv::new("cachelocal-b");
    let ctx_b = b.context("ctx", DOCKERFILE, &[], true);
    let from = format!("type=local,src={}", p(&cache));
    let (id_b, stderr) = build(&b, &ctx_b, &["--cache-from", &from]);
    assert!(stderr.contains("#cache imported 4 records"), "{stderr}");
    assert_all_cached_without_vm(&stderr);
    assert_eq!(id_b, id, "same inputs, SOURCE_DATE_EPOCH and cache: the same image");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(b.store_files_not_owned_by_user().is_empty(), "{:?}", b.store_files_not_owned_by_user());

    // Tamper with the smallest layer (the `echo` RUN's): same size, one byte changed.
    let tampered = a.dir.path().join("tampered");
    copy_dir(&cache, &tampered);
    let mut layers = layout_layers(&tampered);
    layers.sort_by_key(|l| l["size"].as_u64());
    let victim_digest = layers[0]["digest"].as_str().expect("digest").to_string();
    let victim = tampered.join("blobs/sha256").join(victim_digest.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&victim).expect("read blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&victim, &bytes).expect("tamper");
    a.give_to_user(&tampered);
    let c = TestEnv::new("cachelocal-c");
    let ctx_c = c.context("ctx", DOCKERFILE, &[], true);
    let from = format!("type=local,src={}", p(&tampered));
    let (id_c, stderr) = build(&c, &ctx_c, &["--cache-from", &from]);
    let warning = stderr.lines().find(|l| l.starts_with("warning:")).unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(warning.contains(&victim_digest) && warning.contains("rejected"), "{warning}");
    let steps = layer_step_lines(&stderr);
    assert_eq!(steps.iter().filter(|l| l.ends_with("CACHED")).count(), LAYER_STEPS - 1, "{stderr}");
    assert!(steps.iter().any(|l| l.contains("RUN echo cached") && !l.ends_with("CACHED")), "{stderr}");
    assert!(stderr.contains("VM ready"), "the rejected step reruns in a guest:\n{stderr}");
    assert_eq!(id_c, id, "the rerun step makes the same layer");
    for env in [&a, &b, &c] {
        assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
    }
}

#[test]
fn registry_cache_fills_an_empty_store() {
    require_tool("skopeo");
    let reg = Registry::start(None);
    let reference = format!("{}/ci/app:buildcache", reg.host);
    let a = TestEnv::new("cachereg-a");
    let ctx = a.context("ctx", DOCKERFILE, &[], true);
    let (id, stderr) = build(&a, &ctx, &["--cache-to", &format!("type=registry,ref={reference},mode=max")]);
    assert!(stderr.contains("#cache exported 4 records (3 layers") && stderr.contains(&reference), "{stderr}");

    // The registry holds an ordinary OCI image manifest other clients read.
    let out = Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{reference}")]).output().expect("skopeo");
    assert!(out.status.success(), "skopeo inspect: {}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(3), "{info}");
    let raw = Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")]).output().expect("skopeo");
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("manifest json");
    assert_eq!(manifest["artifactType"], "application/vnd.kiln.buildcache.v1+json");

    let b = TestEnv::new("cachereg-b");
    let ctx_b = b.context("ctx", DOCKERFILE, &[], true);
    let (id_b, stderr) = build(&b, &ctx_b, &["--cache-from", &format!("type=registry,ref={reference}")]);
    assert!(stderr.contains("#cache imported 4 records from registry cache"), "{stderr}");
    assert_all_cached_without_vm(&stderr);
    assert_eq!(id_b, id);
    // The bare-reference shorthand imports the same cache (all of it present now).
    let (_, stderr) = build(&b, &ctx_b, &["--cache-from", &reference]);
    assert!(stderr.contains("#cache imported 0 records") && stderr.contains("4 already here"), "{stderr}");
    // Exporting again uploads nothing new and leaves the same manifest.
    let (_, stderr) = build(&b, &ctx_b, &["--cache-to", &format!("type=registry,ref={reference},mode=max")]);
    assert!(stderr.contains("#cache exported 4 records"), "{stderr}");
    let again = Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")]).output().expect("skopeo");
    assert_eq!(again.stdout, raw.stdout, "the same cache gives the same manifest");
    for env in [&a, &b] {
        assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
    }
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "kiln failed:\n{}", text(&out.stderr));
    text(&out.stderr)
}

#[test]
fn bad_specs_fail_before_anything_runs_and_missing_sources_only_warn() {
    let env = TestEnv::new("cachespecs");
    let ctx = env.context("ctx", "FROM scratch\nCOPY a.txt /a.txt\n", &[("a.txt", "a\n")], false);
    let before = env.store_snapshot();
    for (flag, spec, needle) in [
        ("--cache-to", "type=local", "dest=DIR"),
        ("--cache-to", "type=gha", "not supported"),
        ("--cache-to", "type=local,dest=/x,mode=everything", "mode="),
        ("--cache-from", "type=registry", "ref="),
        ("--cache-from", "type=local,dest=/x", "unknown field"),
    ] {
        assert_clean_error(&env.kiln(&["build", flag, spec, p(&ctx)]), needle);
    }
    assert_clean_error(&env.kiln_with(&["build", p(&ctx)], &[("KILN_CACHE_MAX", "lots")]), "KILN_CACHE_MAX");
    assert_eq!(env.store_snapshot(), before, "a rejected spec must not touch the store");

    // Missing, corrupt and unreachable sources: warnings, and the build goes on.
    let corrupt = env.dir.path().join("corrupt");
    fs::create_dir(&corrupt).expect("mkdir");
    fs::write(corrupt.join("index.json"), "{not json").expect("write");
    env.give_to_user(&corrupt);
    let missing = format!("type=local,src={}", p(&env.dir.path().join("missing")));
    let corrupt_spec = format!("type=local,src={}", p(&corrupt));
    let stderr = ok(&env.kiln(&["build", "--cache-from", &missing, "--cache-from", &corrupt_spec, "--cache-from", "type=registry,ref=127.0.0.1:1/no/such:cache", p(&ctx)]));
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 3, "{stderr}");
    assert!(warnings[0].contains("missing") && warnings[1].contains("not a valid OCI index") && warnings[2].contains("127.0.0.1:1"), "{warnings:#?}");

    // A failed export is an error (the image is built); ignore-error=true makes it a warning.
    let out = env.kiln(&["build", "--cache-to", "type=local,dest=/proc/kiln-cache", p(&ctx)]);
    assert_clean_error(&out, "exporting the build cache to /proc/kiln-cache failed");
    let stderr = ok(&env.kiln(&["build", "--cache-to", "type=local,dest=/proc/kiln-cache,ignore-error=true", p(&ctx)]));
    assert!(stderr.lines().any(|l| l.starts_with("warning: exporting the build cache to /proc/kiln-cache failed")), "{stderr}");
}

/// `len` bytes gzip cannot shrink much.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn context_with_noise(env: &TestEnv, name: &str, len: usize, seed: u32) -> PathBuf {
    let ctx = env.context(name, "FROM scratch\nCOPY data.bin /data.bin\n", &[], false);
    fs::write(ctx.join("data.bin"), noise(len, seed)).expect("data");
    env.give_to_user(&ctx);
    ctx
}

#[test]
fn the_cache_is_bounded_after_each_build() {
    let env = TestEnv::new("cachebound");
    let big = context_with_noise(&env, "big", 300_000, 1);
    let small = context_with_noise(&env, "small", 1_000, 2);
    let build = |ctx: &Path, tag: &str, max: &str| ok(&env.kiln_with(&["build", "-t", tag, p(ctx)], &[("KILN_CACHE_MAX", max)]));
    build(&big, "big", "0");
    // Untagged and pruned, the big layer is held by the cache alone.
    assert!(env.kiln(&["rmi", "big"]).status.success());
    assert!(build(&big, "big2", "0").contains("1 steps cached"), "unbounded: the cache keeps it");
    assert!(env.kiln(&["rmi", "big2"]).status.success());
    // Within the bound nothing is dropped.
    let stderr = build(&small, "small", "1MB");
    assert!(!stderr.contains("over its bound"), "{stderr}");
    // Over it, the least recently used entries go and their blobs are collected.
    let stderr = build(&small, "small", "100KB");
    assert!(stderr.contains("over its bound of 102.4kB (KILN_CACHE_MAX): dropped 1 least recently used entries"), "{stderr}");
    assert!(build(&big, "big3", "0").contains("0 steps cached"), "the dropped entry is a miss");
}
