//! Bad input through the real CLI: each is one clear `kiln: error:` line, exit code 1, and
//! the store is left exactly as it was. None of these needs a guest to boot (a guest that is
//! missing, or a QEMU that is missing, is among the cases).

mod harness;

use harness::{assert_clean_error, TestEnv};

const SIMPLE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"true\"]\n";

#[test]
fn bad_input_gives_one_clear_error_and_leaves_the_store_alone() {
    let env = TestEnv::new("errors");
    // Initialise the store so the snapshot has something to compare.
    let out = env.kiln(&["images"]);
    assert!(out.status.success(), "{}", harness::text(&out.stderr));
    let before = env.store_snapshot();

    let ctx = env.context("ctx", SIMPLE, &[], true);
    let ctx_s = ctx.to_str().expect("utf8");
    let missing = env.dir.path().join("nope");
    let missing_s = missing.to_str().expect("utf8");

    // A context that does not exist.
    assert_clean_error(&env.kiln(&["build", "-t", "x", missing_s]), "is not a directory");
    // A Dockerfile that does not exist.
    assert_clean_error(&env.kiln(&["build", "-t", "x", "-f", missing_s, ctx_s]), "reading Dockerfile");
    // An unknown instruction, with its line.
    let bad = env.context("bad", "FROM scratch\n\nFOO bar\n", &[], false);
    assert_clean_error(&env.kiln(&["build", "-t", "x", bad.to_str().expect("utf8")]), "Dockerfile:3: unknown instruction: FOO");
    // COPY of something not in the context.
    let nocopy = env.context("nocopy", "FROM scratch\nCOPY absent /x\n", &[], false);
    assert_clean_error(&env.kiln(&["build", "-t", "x", nocopy.to_str().expect("utf8")]), "Dockerfile:2: COPY absent /x");
    // An invalid tag.
    assert_clean_error(&env.kiln(&["build", "-t", "Not:Valid:Ref", ctx_s]), "invalid reference");
    // A base image that is neither in the store nor pullable (a loopback port nobody serves:
    // tests never reach beyond this machine).
    let from = env.context("from", "FROM 127.0.0.1:1/nosuchimage\nRUN true\n", &[], false);
    assert_clean_error(&env.kiln(&["build", "-t", "x", from.to_str().expect("utf8")]), "FROM 127.0.0.1:1/nosuchimage: pulling failed");
    // No guest kernel.
    let out = env.kiln_with(&["build", "-t", "x", ctx_s], &[("KILN_GUEST_DIR", missing_s)]);
    assert_clean_error(&out, "guest kernel not found");
    // No QEMU.
    let out = env.kiln_with(&["build", "-t", "x", ctx_s], &[("KILN_QEMU", "/nonexistent/qemu-system-x86_64")]);
    assert_clean_error(&out, "not found on PATH: install QEMU");
    // Saving an image that does not exist.
    let tar = env.dir.path().join("out.tar");
    assert_clean_error(&env.kiln(&["save", "-o", tar.to_str().expect("utf8"), "ghost"]), "no such image: ghost");
    assert!(!tar.exists(), "no archive may be left behind");

    assert_eq!(env.store_snapshot(), before, "the store changed");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}
