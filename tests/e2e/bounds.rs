//! Size bounds on what kiln takes from untrusted sources, through the real binary as the
//! unprivileged test user: a guest that writes more than its budget to the host fails the
//! build with one line; a compressed layer that expands past its bound is refused by
//! `kiln import` with one line; in both cases the store is as it was and no temp file stays.

mod harness;

use std::fs;
use std::process::Command;

use harness::{assert_clean_error, text, TestEnv};

fn blobs_and_temps(env: &TestEnv) -> Vec<String> {
    env.store_snapshot().into_keys().filter(|k| !k.ends_with('/') && (k.starts_with("blobs/") || k.starts_with("images/") || k.starts_with("ingest/"))).collect()
}

#[test]
fn a_guest_past_its_write_budget_and_an_expanding_layer_are_refused() {
    let env = TestEnv::new("bounds");
    assert!(env.kiln(&["images"]).status.success());
    let before = blobs_and_temps(&env);
    let ctx = env.context("ctx", "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"dd\", \"if=/dev/zero\", \"of=/big\", \"bs=1M\", \"count=8\"]\n", &[], true);
    let ctx = ctx.to_str().expect("utf8");
    let out = env.kiln_with(&["build", "-t", "big", ctx], &[("KILN_MAX_GUEST_WRITE", "4m")]);
    assert_clean_error(&out, "KILN_MAX_GUEST_WRITE");
    assert_eq!(blobs_and_temps(&env), before, "nothing of the refused build is kept");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
    let out = env.kiln(&["build", "-q", "-t", "big", ctx]);
    assert!(out.status.success(), "within the default budget: {}", text(&out.stderr));

    // 64 MiB of zeros, gzip'd to some 64 KiB, imported with a 16 MiB bound.
    let root = env.dir.path().join("bomb-root");
    fs::create_dir_all(&root).expect("mkdir");
    fs::write(root.join("zeros"), vec![0u8; 64 << 20]).expect("zeros");
    let bomb = env.dir.path().join("bomb.tar.gz");
    let st = Command::new("tar").arg("-C").arg(&root).arg("-czf").arg(&bomb).arg(".").status().expect("tar");
    assert!(st.success());
    assert!(fs::metadata(&bomb).expect("stat").len() < 1 << 20, "the archive is small");
    env.give_to_user(&bomb);
    let before = blobs_and_temps(&env);
    let out = env.kiln_with(&["import", bomb.to_str().expect("utf8"), "bomb"], &[("KILN_MAX_LAYER_SIZE", "16m")]);
    assert_clean_error(&out, "KILN_MAX_LAYER_SIZE");
    assert_eq!(blobs_and_temps(&env), before, "no blob and no temp file of the refused layer");
    let out = env.kiln_with(&["import", bomb.to_str().expect("utf8"), "bomb"], &[("KILN_MAX_EXPANSION", "x")]);
    assert_clean_error(&out, "KILN_MAX_EXPANSION");
}
