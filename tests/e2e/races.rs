//! kiln processes racing on one store, through the real binary as the unprivileged test user:
//! two builds of different Dockerfiles at once; a build racing `image prune -a`, `builder
//! prune -a` and `rmi` (it succeeds: what it uses is pinned); four loads of overlapping images
//! at once. The racing commands succeed or fail with one clear line, and `kiln system check`
//! finds the store clean afterwards.

mod harness;

use std::process::Output;

use harness::containers::{busybox_image, ok, p};
use harness::{text, TestEnv};

fn clean(env: &TestEnv) {
    let out = env.kiln(&["system", "check"]);
    assert!(out.status.success() && text(&out.stdout).contains("0 problems"), "the store is not clean:\n{}{}", text(&out.stdout), text(&out.stderr));
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}

/// Success, or a failure with exactly one `kiln: error:` line and no panic.
fn success_or_clean_failure(out: &Output, what: &str) -> bool {
    if out.status.success() {
        return true;
    }
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().filter(|l| l.starts_with("kiln: error:")).count(), 1, "{what}: one error line expected:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{what}:\n{stderr}");
    false
}

#[test]
fn concurrent_builds_prunes_and_loads_leave_a_clean_store() {
    let env = TestEnv::new("races");
    busybox_image(&env);
    let a = env.context("a", "FROM bb\nCOPY f /f\nRUN echo a > /a\n", &[("f", "first\n")], false);
    let b = env.context("b", "FROM bb\nCOPY f /f\nRUN echo b > /b && sleep 1\n", &[("f", "second\n")], false);

    // Two different builds at once.
    let ca = env.spawn(&["build", "-q", "-t", "r/a", p(&a)]);
    let cb = env.spawn(&["build", "-q", "-t", "r/b", p(&b)]);
    for (child, what) in [(ca, "build a"), (cb, "build b")] {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    }
    assert_eq!(ok(&env.kiln(&["run", "--rm", "r/b", "cat", "/b", "/f"])), "b\nsecond\n");
    clean(&env);

    // A build (no cache) racing the prunes and an rmi of its own base, run while its RUN runs
    // (its base resolved): what it uses is pinned, so it succeeds.
    let build = env.spawn(&["build", "--no-cache", "-q", "-t", "r/raced", p(&b)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // (vm_processes lists every process of the test's kiln, kiln itself included: wait for QEMU.)
    while !env.vm_processes().iter().any(|p| p.contains("qemu")) {
        assert!(std::time::Instant::now() < deadline, "the build's VM never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut outcomes = Vec::new();
    for args in [&["image", "prune", "-a", "-f"][..], &["builder", "prune", "-a", "-f"], &["rmi", "r/a"], &["image", "prune", "-a", "-f"]] {
        let out = env.kiln(args);
        outcomes.push(success_or_clean_failure(&out, &args.join(" ")));
    }
    let out = build.wait_with_output().expect("wait");
    assert!(out.status.success(), "the raced build: {}", text(&out.stderr));
    clean(&env);
    assert_eq!(ok(&env.kiln(&["run", "--rm", "r/raced", "cat", "/b"])), "b\n", "what the raced build stored works");
    eprintln!("race outcomes: prunes/rmi {outcomes:?}");

    // Four loads of two overlapping images (one base) at once.
    busybox_image(&env);
    ok(&env.kiln(&["build", "-q", "-t", "r/a", p(&a)]));
    ok(&env.kiln(&["build", "-q", "-t", "r/b", p(&b)]));
    let (ta, tb) = (env.dir.path().join("a.tar"), env.dir.path().join("b.tar"));
    ok(&env.kiln(&["save", "-o", p(&ta), "r/a"]));
    ok(&env.kiln(&["save", "-o", p(&tb), "r/b"]));
    let other = TestEnv::new("races-load");
    for t in [&ta, &tb] {
        other.give_to_user(t);
    }
    let loads: Vec<_> = [&ta, &tb, &ta, &tb].iter().map(|t| other.spawn(&["load", "-q", "-i", p(t)])).collect();
    for child in loads {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "a concurrent load failed: {}", text(&out.stderr));
    }
    clean(&other);
    assert_eq!(ok(&other.kiln(&["run", "--rm", "r/a", "cat", "/a"])), "a\n");
    assert_eq!(ok(&other.kiln(&["run", "--rm", "r/b", "cat", "/b"])), "b\n");
}
