//! SIGKILL of kiln at random moments, through the real binary as the unprivileged test user:
//! during build (with a RUN in a guest), `--cache-to` export, load, import, save, pull, push,
//! `builder prune` and `image prune`. After each kill no VM is left, `kiln system check`
//! finds 0 problems, and the same command run again succeeds. The moments come from a seed
//! printed on stderr (`KILN_KILL_SEED` replays a run).

mod harness;

use std::time::{Duration, Instant};

use harness::containers::{busybox_image, ok, p};
use harness::registry::Registry;
use harness::{text, TestEnv};

/// xorshift64*: small, and the same moments for the same seed.
struct Moments(u64);

impl Moments {
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        Duration::from_micros(r % (max.as_micros().max(1) as u64))
    }
}

fn check_clean(env: &TestEnv, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.vm_processes().is_empty() {
        assert!(Instant::now() < deadline, "{what}: VMs left after the kill: {:?}", env.vm_processes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = env.kiln(&["system", "check"]);
    assert!(out.status.success() && text(&out.stdout).contains("0 problems"), "{what}: the store is not clean after the kill:\n{}{}", text(&out.stdout), text(&out.stderr));
}

/// Runs `args` once to time it, then `times` times killed at a random moment within that time,
/// each followed by the checks and a run that must succeed. `prepare` runs before every run.
fn kill_during(env: &TestEnv, moments: &mut Moments, args: &[&str], times: usize, prepare: &dyn Fn()) -> usize {
    prepare();
    let started = Instant::now();
    ok(&env.kiln(args));
    let took = started.elapsed();
    let what = args.join(" ");
    for _ in 0..times {
        prepare();
        let at = moments.below(took);
        let mut child = env.spawn(args);
        std::thread::sleep(at);
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on a child we spawned and have not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = child.wait();
        eprintln!("killed `kiln {what}` after {at:?} (a full run took {took:?})");
        check_clean(env, &what);
        prepare();
        ok(&env.kiln(args));
        check_clean(env, &what);
    }
    times
}

#[test]
fn sigkill_at_random_moments_leaves_a_clean_store() {
    let seed: u64 = std::env::var("KILN_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    eprintln!("kill seed: {seed} (KILN_KILL_SEED={seed} replays these moments)");
    let mut moments = Moments(seed);
    let env = TestEnv::new("kills");
    busybox_image(&env);
    let nothing = || {};
    let mut points = 0;

    let ctx = env.context("ctx", "FROM bb\nCOPY a /a\nRUN echo built > /built && cat /a > /copy\n", &[("a", &"some context\n".repeat(2000))], false);
    points += kill_during(&env, &mut moments, &["build", "--no-cache", "-q", "-t", "k/built", p(&ctx)], 3, &nothing);
    let cache = env.dir.path().join("cache-out");
    let cache_to = format!("type=local,dest={}", p(&cache));
    points += kill_during(&env, &mut moments, &["build", "--no-cache", "-q", "--cache-to", &cache_to, "-t", "k/cached", p(&ctx)], 2, &nothing);

    let archive = env.dir.path().join("built.tar");
    let archive_s = p(&archive).to_string();
    points += kill_during(&env, &mut moments, &["save", "-o", &archive_s, "k/built"], 2, &nothing);
    let drop_loaded = || {
        let _ = env.kiln(&["rmi", "-f", "k/loaded"]);
        let _ = env.kiln(&["image", "prune", "-f"]);
    };
    ok(&env.kiln(&["tag", "k/built", "k/loaded"]));
    ok(&env.kiln(&["save", "-o", &archive_s, "k/loaded"]));
    points += kill_during(&env, &mut moments, &["load", "-i", &archive_s], 2, &drop_loaded);

    let rootfs = env.dir.path().join("bb.tar");
    points += kill_during(&env, &mut moments, &["import", p(&rootfs), "k/imported"], 2, &nothing);

    let reg = Registry::start(None);
    let remote = format!("{}/k/built:1", reg.host);
    ok(&env.kiln(&["tag", "k/built", &remote]));
    points += kill_during(&env, &mut moments, &["push", "-q", &remote], 2, &nothing);
    let drop_remote = || {
        let _ = env.kiln(&["rmi", "-f", &remote]);
        let _ = env.kiln(&["image", "prune", "-f"]);
    };
    points += kill_during(&env, &mut moments, &["pull", "-q", &remote], 2, &drop_remote);

    points += kill_during(&env, &mut moments, &["builder", "prune", "-a", "-f"], 2, &|| {
        ok(&env.kiln(&["build", "-q", "-t", "k/built", p(&ctx)]));
    });
    points += kill_during(&env, &mut moments, &["image", "prune", "-a", "-f"], 2, &|| {
        ok(&env.kiln(&["import", p(&rootfs), "k/imported"]));
        ok(&env.kiln(&["tag", "k/imported", "k/other"]));
        let _ = env.kiln(&["rmi", "k/other"]);
    });
    eprintln!("kill points exercised: {points}");
}
