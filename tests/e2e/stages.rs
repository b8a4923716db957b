//! Stage scheduling through the real CLI and a real guest: independent stages run at the same
//! time (their RUNs' intervals on the guest's clock overlap), `--jobs 1` runs them one after
//! the other, `--no-cache-filter` reruns only the named stage, and a stage that fails while
//! another runs fails the build with its own error, cutting the running one off and storing
//! nothing.

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

#[test]
fn a_failing_stage_stops_the_others_and_keeps_only_its_debug_state() {
    let env = TestEnv::new("stagefail");
    let dockerfile = "FROM scratch AS tools\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
        FROM tools AS slow\nRUN sleep 60 && touch /slow-1\nRUN touch /slow-2\n\
        FROM tools AS bad\nRUN echo about to fail && exit 7\n\
        FROM scratch\nCOPY --from=slow /slow-2 /\nCOPY --from=bad / /bad\n";
    let ctx = env.context("ctx", dockerfile, &[], true);
    let before = env.store_snapshot();
    let started = std::time::Instant::now();
    let out = env.kiln(&["build", "--jobs", "2", "--progress", "plain", "-t", "never", ctx.to_str().expect("utf8")]);
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("kiln: error:")).collect();
    assert_eq!(errors.len(), 1, "one error, the failing step's:\n{stderr}");
    assert!(errors[0].contains("Dockerfile:8") && errors[0].contains("exit code 7"), "{stderr}");
    assert!(stderr.contains("about to fail"), "the failing step's output is shown:\n{stderr}");
    // The slow stage's 60 s RUN was running when bad failed: it is cut off, not waited for.
    assert!(!stderr.contains("[slow 3/3]"), "the slow stage must not go on after the failure:\n{stderr}");
    assert!(took < std::time::Duration::from_secs(45), "the running step must be cut off, not awaited ({took:?}):\n{stderr}");
    // What it keeps is the failed stage's state before its failed step, as an untagged image
    // (to look around in); a prune takes it, and then nothing of the build is left.
    assert!(stderr.contains("the state before the failed step is kept as image"), "{stderr}");
    assert!(!text(&env.kiln(&["images"]).stdout).contains("never"), "no tag");
    assert!(env.kiln(&["image", "prune", "-f"]).status.success());
    let after = env.store_snapshot();
    // (The store's empty directories, its lock and its (empty) refs appear with the first
    // write: blobs and images are what count.)
    let changed: Vec<_> = after.keys().filter(|k| !k.ends_with('/') && !k.starts_with("ingest/") && *k != "lock" && *k != "refs.json" && !before.contains_key(*k)).collect();
    assert!(changed.is_empty(), "a failed build stores nothing beyond its debug state: {changed:?}");
    assert!(env.vm_processes().is_empty(), "left-over VMs: {:?}", env.vm_processes());
}

/// `--progress tty` in a real pseudo-terminal: running steps are redrawn in place with their
/// latest output, and what stays on the screen is one line per step with its time (or CACHED),
/// the output collapsed away.
#[test]
fn tty_progress_collapses_finished_steps_to_one_line() {
    let env = TestEnv::new("ttyprogress");
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
        RUN for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 0.3; done\n";
    let ctx = env.context("ctx", dockerfile, &[], true);
    let (ok, transcript) = harness::terminal::in_terminal(&env, &["build", "--progress", "tty", ctx.to_str().expect("utf8")]);
    assert!(ok, "{transcript}");
    assert!(transcript.contains("line-8"), "the RUN's output is shown while it runs:\n{transcript:?}");
    assert!(transcript.contains("\x1b[") && transcript.contains("F\x1b[J"), "the live region is redrawn in place:\n{transcript:?}");
    let shown = harness::terminal::screen(&transcript);
    let steps: Vec<&String> = shown.iter().filter(|l| l.starts_with('#') && l.contains("] ")).collect();
    assert_eq!(steps.len(), 4, "one line per step:\n{}", shown.join("\n"));
    assert!(steps.iter().all(|l| l.ends_with('s')), "each with its time:\n{}", shown.join("\n"));
    assert!(!shown.iter().any(|l| l.trim_start().starts_with("line-")), "finished output is collapsed:\n{}", shown.join("\n"));
    assert!(shown.iter().any(|l| l.starts_with("#done built in")), "{}", shown.join("\n"));
}
