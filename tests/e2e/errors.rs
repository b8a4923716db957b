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

/// Malformed instructions of the whole language: each is `Dockerfile:LINE: message`, exit 1,
/// nothing stored, no guest booted (they are all found before any RUN).
#[test]
fn malformed_instructions_name_their_line() {
    let env = TestEnv::new("malformed");
    let out = env.kiln(&["images"]);
    assert!(out.status.success(), "{}", harness::text(&out.stderr));
    let before = env.store_snapshot();
    let cases: &[(&str, &str)] = &[
        ("FROM scratch\nEXPOSE 80/tcpx\n", "Dockerfile:2: "),
        ("FROM scratch\nSTOPSIGNAL NOTASIGNAL\n", "Dockerfile:2: "),
        ("FROM scratch\nHEALTHCHECK --interval=soon CMD true\n", "Dockerfile:2: "),
        ("FROM scratch\nCOPY --chmod=999 a /a\n", "Dockerfile:2: "),
        ("FROM scratch\nARG A\nENV B=${A:?A must be set}\n", "Dockerfile:3: "),
        ("FROM scratch AS one\nFROM scratch AS one\n", "Dockerfile:2: duplicate stage name"),
        ("FROM scratch\nCOPY --from=missing-stage-image-x:1 /a /b\n", "Dockerfile:2: COPY --from"),
        ("FROM scratch\nONBUILD ONBUILD RUN true\n", "Dockerfile:2: "),
        ("RUN true\nFROM scratch\n", "Dockerfile:1: "),
        ("FROM a AS b\nFROM b AS a\n", "circular dependency"),
        ("FROM scratch\nADD --checksum=sha256:00 local /x\n", "Dockerfile:2: "),
        ("FROM scratch\nUSER nobody\nWORKDIR /w\n", "Dockerfile:3: WORKDIR /w: unable to find user nobody"),
    ];
    for (i, (dockerfile, needle)) in cases.iter().enumerate() {
        let ctx = env.context(&format!("m{i}"), dockerfile, &[("a", "x")], false);
        let out = env.kiln(&["build", "-t", "x", ctx.to_str().expect("utf8")]);
        assert_clean_error(&out, needle);
    }
    let ctx = env.context("target", "FROM scratch AS a\n", &[], false);
    assert_clean_error(&env.kiln(&["build", "--target", "nope", ctx.to_str().expect("utf8")]), "target stage \"nope\" could not be found");
    assert_clean_error(&env.kiln(&["build", "--build-arg", "=x", ctx.to_str().expect("utf8")]), "invalid --build-arg");
    assert_eq!(env.store_snapshot(), before, "the store changed");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}
