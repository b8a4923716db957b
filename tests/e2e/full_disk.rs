//! A full disk: the store on a 32 MiB tmpfs (mounted by the test, which needs root; kiln runs
//! as the unprivileged test user), filled by an import, a build's COPY and a load that do not
//! fit. Each fails with one clear line, no temp file stays, `kiln system check` finds the
//! store clean, and what fits still works.

mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::containers::p;
use harness::{assert_clean_error, text, TestEnv};

/// A tmpfs of `mib` MiB at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u32) -> Option<Self> {
        fs::create_dir_all(dir).expect("mkdir");
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"]).arg(dir).output().ok()?;
        out.status.success().then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn random_file(path: &Path, mib: usize) {
    let mut data = vec![0u8; mib << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(path, data).expect("write");
}

fn store_clean(env: &TestEnv, root: &Path) {
    let out = env.kiln_with(&["system", "check"], &[("KILN_ROOT", p(root))]);
    assert!(out.status.success() && text(&out.stdout).contains("0 problems"), "{}{}", text(&out.stdout), text(&out.stderr));
    let ingest = root.join("ingest");
    let left: Vec<_> = fs::read_dir(&ingest).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "temp files left in {}: {left:?}", ingest.display());
}

#[test]
fn a_full_disk_fails_cleanly_and_leaves_the_store_consistent() {
    let env = TestEnv::new("fulldisk");
    let dir = env.dir.path().join("small");
    let Some(_tmpfs) = (env.user.is_some()).then(|| Tmpfs::mount(&dir, 32)).flatten() else {
        eprintln!("prerequisite missing: mounting a tmpfs needs root (tests/run.sh as root): the full-disk test did not run");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "under CI the full-disk test must run");
        return;
    };
    env.give_to_user(&dir);
    let root = dir.join("store");
    let with_root = [("KILN_ROOT", p(&root))];

    // What fits works: a busybox image.
    let small = env.dir.path().join("small-root");
    fs::create_dir_all(small.join("bin")).expect("mkdir");
    fs::copy("/bin/busybox", small.join("bin/busybox")).expect("busybox");
    let small_tar = env.dir.path().join("small.tar");
    assert!(Command::new("tar").arg("-C").arg(&small).arg("-cf").arg(&small_tar).arg(".").status().expect("tar").success());
    env.give_to_user(&small_tar);
    let out = env.kiln_with(&["import", p(&small_tar), "small"], &with_root);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // An import of 48 MiB of incompressible data does not fit.
    let big = env.dir.path().join("big-root");
    fs::create_dir_all(&big).expect("mkdir");
    random_file(&big.join("blob"), 48);
    let big_tar = env.dir.path().join("big.tar");
    assert!(Command::new("tar").arg("-C").arg(&big).arg("-cf").arg(&big_tar).arg(".").status().expect("tar").success());
    env.give_to_user(&big_tar);
    assert_clean_error(&env.kiln_with(&["import", p(&big_tar), "big"], &with_root), "No space left on device");
    store_clean(&env, &root);

    // A build whose COPY does not fit.
    let ctx = env.context("ctx", "FROM small\nCOPY blob /blob\n", &[], false);
    fs::copy(big.join("blob"), ctx.join("blob")).expect("copy");
    env.give_to_user(&ctx);
    assert_clean_error(&env.kiln_with(&["build", "-t", "big", p(&ctx)], &with_root), "No space left on device");
    store_clean(&env, &root);

    // A load of an archive that does not fit (made in a roomy store).
    let out = env.kiln(&["import", p(&big_tar), "big"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let archive = env.dir.path().join("big-image.tar");
    assert!(env.kiln(&["save", "-o", p(&archive), "big"]).status.success());
    assert_clean_error(&env.kiln_with(&["load", "-i", p(&archive)], &with_root), "No space left on device");
    store_clean(&env, &root);

    // What was stored before the failures is still there.
    let out = env.kiln_with(&["images"], &with_root);
    assert!(text(&out.stdout).contains("small"), "{}", text(&out.stdout));
}
