//! Stage scheduling through the real CLI and a real guest: independent stages run at the same
//! time (their RUNs' intervals on the guest's clock overlap), `--jobs 1` runs them one after
//! the other, and `--no-cache-filter` reruns only the named stage.

mod harness;

use std::fs;
use std::path::Path;

use harness::{text, TestEnv};

/// Each stage records the guest's uptime before and after a 2 s sleep, and a random id.
const DOCKERFILE: &str = r#"FROM scratch AS tools
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM tools AS a
RUN cut -d" " -f1 /proc/uptime > /a-start && sleep 2 && cut -d" " -f1 /proc/uptime > /a-end && cat /proc/sys/kernel/random/uuid > /a-id

FROM tools AS b
RUN cut -d" " -f1 /proc/uptime > /b-start && sleep 2 && cut -d" " -f1 /proc/uptime > /b-end && cat /proc/sys/kernel/random/uuid > /b-id

FROM scratch
COPY --from=a /a-start /a-end /a-id /
COPY --from=b /b-start /b-end /b-id /
"#;

fn interval(dir: &Path, stage: &str) -> (f64, f64) {
    let read = |name: String| -> f64 {
        let text = fs::read_to_string(dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        text.trim().parse().unwrap_or_else(|e| panic!("{name}: {text:?}: {e}"))
    };
    (read(format!("{stage}-start")), read(format!("{stage}-end")))
}

fn build(env: &TestEnv, ctx: &Path, extra: &[&str], dest: &Path) -> String {
    let out_arg = format!("type=local,dest={}", dest.display());
    let mut args = vec!["build", "-o", &out_arg];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().expect("utf8"));
    let out = env.kiln(&args);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "build {extra:?} failed:\n{stderr}");
    stderr
}

#[test]
fn independent_stages_run_together_and_jobs_1_serializes() {
    let env = TestEnv::new("stages");
    let ctx = env.context("ctx", DOCKERFILE, &[], true);
    env.give_to_user(env.dir.path());

    let together = env.dir.path().join("together");
    build(&env, &ctx, &["--jobs", "2"], &together);
    let (a, b) = (interval(&together, "a"), interval(&together, "b"));
    assert!(a.0 < b.1 && b.0 < a.1, "stages a {a:?} and b {b:?} should overlap with --jobs 2");

    let serial = env.dir.path().join("serial");
    build(&env, &ctx, &["--jobs", "1", "--no-cache"], &serial);
    let (a, b) = (interval(&serial, "a"), interval(&serial, "b"));
    assert!(a.1 <= b.0 || b.1 <= a.0, "stages a {a:?} and b {b:?} must not overlap with --jobs 1");

    // Only stage a reruns; its sibling b and the shared tools stage come from the cache.
    let filtered = env.dir.path().join("filtered");
    let stderr = build(&env, &ctx, &["--no-cache-filter", "a"], &filtered);
    let line = |needle: &str| stderr.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in:\n{stderr}")).to_string();
    assert!(!line("[a 2/2] RUN").contains("CACHED"), "{stderr}");
    assert!(line("[b 2/2] RUN").contains("CACHED"), "{stderr}");
    assert!(line("[tools 3/3] RUN").contains("CACHED"), "{stderr}");
    let id = |dir: &Path, stage: &str| fs::read_to_string(dir.join(format!("{stage}-id"))).expect("id");
    assert_ne!(id(&filtered, "a"), id(&serial, "a"), "stage a reran");
    assert_eq!(id(&filtered, "b"), id(&serial, "b"), "stage b came from the cache");

    let out = env.kiln(&["build", "--no-cache-filter", "nope", ctx.to_str().expect("utf8")]);
    harness::assert_clean_error(&out, "--no-cache-filter \"nope\": no such stage");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}
