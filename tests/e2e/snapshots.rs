//! VM snapshots through the real binary and real QEMU guests, as the unprivileged test user:
//! the first VM boots and is saved, later ones are restored (builds and containers alike);
//! two clones of one snapshot have different random state and the host's clock; a damaged
//! snapshot (a flipped byte) and one QEMU refuses (garbage with a matching record at its end) each get
//! a one-line notice, a boot, and a new snapshot; `KILN_SNAPSHOT=0` boots every time.

mod harness;

use std::fs;
use std::path::{Path, PathBuf};

use harness::containers::{busybox_image, ok, p};
use harness::{text, TestEnv};

fn snapshots(env: &TestEnv) -> Vec<PathBuf> {
    let dir = env.home.join(".cache/kiln/vm-snapshots");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "state")).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Builds a one-RUN Dockerfile (never cached) and returns how the VM started, from
/// `VM ready: ...` in the progress output.
fn build_vm(env: &TestEnv, tag: &str, vars: &[(&str, &str)]) -> (String, String) {
    let ctx = env.context(&format!("ctx-{tag}"), &format!("FROM bb\nRUN echo {tag} > /tag\n"), &[], false);
    let out = env.kiln_with(&["build", "--no-cache", "--progress", "plain", "-t", tag, p(&ctx)], vars);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ready = stderr.lines().find(|l| l.contains("VM ready:")).unwrap_or_else(|| panic!("no VM ready line:\n{stderr}")).to_string();
    (ready, stderr)
}

/// CRC-32 (IEEE), as the snapshot's record holds it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn restored_vms_are_fresh_clones_and_bad_snapshots_are_replaced() {
    let env = TestEnv::new("snapshots");
    busybox_image(&env);
    assert!(snapshots(&env).is_empty());
    let (first, _) = build_vm(&env, "one", &[]);
    assert!(first.contains("booted"), "{first}");
    let saved = snapshots(&env);
    assert_eq!(saved.len(), 1, "the first VM is saved as a snapshot");
    let (second, _) = build_vm(&env, "two", &[]);
    assert!(second.contains("restored from a snapshot"), "{second}");

    // Two containers restored from the one snapshot at once: different random bytes from
    // getrandom() and /dev/urandom, and the host's clock.
    let ctx = env.context("rand", "FROM bb\nCOPY rand /bin/rand\n", &[], false);
    let built = std::process::Command::new("cc").args(["-static", "-O2", "-o", p(&ctx.join("rand")), p(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/rand.c"))]).output().expect("run cc");
    assert!(built.status.success(), "cc -static (libc6-dev) is required: {}", text(&built.stderr));
    env.give_to_user(&ctx);
    ok(&env.kiln(&["build", "-q", "-t", "rand", p(&ctx)]));
    let runs: Vec<_> = (0..2).map(|_| env.spawn(&["run", "--rm", "rand", "sh", "-c", "rand; date +%s"])).collect();
    let outs: Vec<String> = runs.into_iter().map(|c| {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success() && !text(&out.stderr).contains("notice"), "{}", text(&out.stderr));
        text(&out.stdout)
    }).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let mut randoms = Vec::new();
    for out in &outs {
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let guest_time: u64 = lines[1].trim().parse().expect("date +%s");
        assert!(guest_time.abs_diff(now) < 60, "the guest's clock is the host's ({guest_time} vs {now})");
        randoms.extend(lines[0].split(' ').map(str::to_string));
    }
    assert_eq!(randoms.len(), 4);
    let distinct: std::collections::BTreeSet<&String> = randoms.iter().collect();
    assert_eq!(distinct.len(), 4, "two clones of one snapshot share random state: {randoms:?}");

    // A flipped byte: caught by the record, one notice, a boot, a new snapshot. (Containers
    // are VMs of another kind than builds': they have a snapshot of their own.)
    let kinds = snapshots(&env).len();
    assert_eq!(kinds, 2, "{:?}", snapshots(&env));
    let state = &saved[0];
    let mut bytes = fs::read(state).expect("read snapshot");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(state, &bytes).expect("corrupt");
    let (ready, stderr) = build_vm(&env, "three", &[]);
    assert!(ready.contains("booted"), "{ready}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("kiln: notice:")).count(), 1, "{stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
    assert_eq!(snapshots(&env).len(), kinds, "a new snapshot replaces it");
    let (ready, _) = build_vm(&env, "four", &[]);
    assert!(ready.contains("restored from a snapshot"), "{ready}");

    // A state QEMU refuses, with a record that matches it: the restore fails, kiln boots.
    let state = &saved[0];
    let mut garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let record = format!("{{\"len\":{},\"crc32\":{}}}", garbage.len(), crc32(&garbage));
    garbage.extend_from_slice(record.as_bytes());
    garbage.extend_from_slice(&(record.len() as u32).to_le_bytes());
    garbage.extend_from_slice(b"KILNSNAP");
    fs::write(state, &garbage).expect("garbage");
    let (ready, stderr) = build_vm(&env, "five", &[]);
    assert!(ready.contains("booted"), "{ready}");
    assert!(stderr.lines().any(|l| l.starts_with("kiln: notice: the VM snapshot could not be restored")), "{stderr}");
    assert!(fs::metadata(state).expect("stat").len() > 1 << 20, "a real snapshot replaces the garbage");

    // Off: every VM boots and nothing is saved.
    let (ready, _) = build_vm(&env, "six", &[("KILN_SNAPSHOT", "0")]);
    assert!(ready.contains("booted"), "{ready}");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}
