//! kiln against `buildah bud`: the same Dockerfile and context built by both, then the image
//! configs compared field by field and the root filesystems file by file (type, permission
//! bits incl. setuid/setgid/sticky, owner, group, symlink target, content; never timestamps).
//!
//! Both builders first build the same base (`cmp/base`: busybox, its applet links, an
//! /etc/passwd with root and `app` (1000:1000) and an /etc/group with `app` (1000) and `staff`
//! (50, member app)). The two bases get different digests, which is fine: only what is built
//! on top is compared (and that includes every file the base contributed).
//!
//! How each side is read:
//! - kiln runs as the unprivileged test user (see harness.rs); `kiln save --format oci`.
//! - buildah runs as root with a private `--root`/`--runroot` under the test's temp dir, the
//!   vfs driver and chroot isolation (as bench/run.sh does). It builds with `--format docker`
//!   and pushes with `--format docker`: buildah's OCI-format config has no Healthcheck,
//!   OnBuild or Shell (it drops them with a warning), while Docker/BuildKit, whose semantics
//!   kiln follows, record them in the config.
//! - The config is the raw config blob (`skopeo inspect --config --raw`): skopeo's parsed
//!   `--config` output is an OCI struct that drops the Docker fields above.
//! - The root filesystem is `skopeo copy oci-archive:F oci:DIR:t` + `umoci unpack` as root (so
//!   ownership is kept), walked with `symlink_metadata`.
//!
//! Not compared: hard-link identity (link counts) and extended attributes.
//!
//! Known, legitimate differences between buildah and BuildKit are listed in one place below
//! (`CONFIG_NORMALISATION`, `BUILDAH_RUN_STUBS`, `BUILDAH_VOLUME_DIRS`, `BUILDAH_LABELS`), each
//! with its reason, and the cases avoid constructs whose semantics differ between the two
//! (see the comments at each case). Nothing is allow-listed to make kiln pass: when kiln is
//! wrong, a case fails and prints every difference. Each case also checks a few expected
//! values on both sides, which guards the reference (buildah) as well as kiln.
//!
//! Needs root (buildah and umoci must keep file ownership): run through tests/run.sh. As a
//! non-root user each case says "skipped" and returns. Without buildah it fails, naming the
//! setup command.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use harness::{require_tool, text, TestEnv};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// The allow-list: known differences between buildah 1.28 (Debian 12) and BuildKit/Docker.
// ---------------------------------------------------------------------------------------------

/// Mount-point stubs buildah leaves in the image after a `RUN` under chroot isolation: the
/// directories it mounts /dev, /proc, /sys and /run on, and the empty files it bind-mounts
/// /etc/hostname, /etc/hosts and /etc/resolv.conf on (mode 0755, size 0). Observed here: they
/// appear in cmp/base (built with one RUN) and so in every image built on it. BuildKit removes
/// the stubs its runtime created (executor's MountStubsCleaner), so a BuildKit image has none,
/// and kiln must not have them either (tests/e2e/build.rs checks /proc, /dev, /sys too).
/// Ignored only when present in buildah's tree alone, with exactly the stub's shape (an empty
/// root-owned directory, or an empty root-owned regular file); anything else is compared.
/// (`/run/.containerenv`, which other buildah versions and isolations write, does not appear
/// with buildah 1.28 and chroot isolation: /run stays empty, so it is not listed.)
const BUILDAH_RUN_STUBS: &[(&str, StubKind)] = &[
    ("/dev", StubKind::EmptyDir),
    ("/proc", StubKind::EmptyDir),
    ("/sys", StubKind::EmptyDir),
    ("/run", StubKind::EmptyDir),
    ("/etc/hostname", StubKind::EmptyFile),
    ("/etc/hosts", StubKind::EmptyFile),
    ("/etc/resolv.conf", StubKind::EmptyFile),
];

/// VOLUME mount points: buildah 1.28 creates the directory of a VOLUME in the image (an empty
/// 0755 root-owned directory) when VOLUME is the last instruction or a RUN follows it (its
/// volume cache for RUN); BuildKit only records the volume in the config. Ignored only when
/// present in buildah's tree alone, empty, root-owned and named in buildah's config.Volumes.
/// (Case (c) declares its VOLUME after the last RUN and before other instructions, where
/// buildah does not create it, so a kiln that did would show as "only in kiln".)
const BUILDAH_VOLUME_DIRS: &str = "empty root-owned directories named in config.Volumes";

/// Labels buildah adds to every image it builds (`io.buildah.version`; buildah 1.28 has no
/// `--identity-label=false`). Removed from buildah's Labels only.
const BUILDAH_LABELS: &[&str] = &["io.buildah.version"];

/// Config normalisation, applied to both sides, and why each step is sound:
/// - a missing key, `null`, `""`, `[]` and `{}` are the same value ("unset"): buildah's
///   docker-format config writes `"User": ""`, `"WorkingDir": ""`, `"Entrypoint": []`,
///   `"Volumes": {}`, `"OnBuild": []` and, after ENTRYPOINT resets an inherited CMD,
///   `"Cmd": []`, where Docker/BuildKit omit the key or write null; runtimes treat them alike;
/// - WorkingDir "/" is unset: BuildKit starts every `FROM scratch` image with WorkingDir "/"
///   (dockerfile2llb's emptyImage), buildah (like Docker's classic builder) with none; a
///   runtime starts in "/" either way. Every image here descends from a scratch image.
/// - in Healthcheck, a duration or retry count of 0 means "use the default", which Docker's
///   HealthConfig encodes by omitting the key (`omitempty`): zero keys are dropped.
///
/// Not compared at all: `history` (created_by texts differ by design: buildah writes
/// `/bin/sh -c #(nop) COPY file:<hash> in ...`, BuildKit `COPY x /x # buildkit`), timestamps,
/// the layer count and diff ids (buildah --layers=false squashes each build into one layer),
/// and the docker-only container fields buildah fills in (Hostname, Domainname, Attach*, Tty,
/// OpenStdin, StdinOnce, Image).
const CONFIG_NORMALISATION: &str =
    "unset == null == \"\" == [] == {}; WorkingDir \"/\" == unset; zero Healthcheck durations dropped";

/// The config fields compared (inside the config blob's `config` object).
const CONFIG_FIELDS: &[&str] = &[
    "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels", "StopSignal",
    "Healthcheck", "OnBuild", "Shell",
];

#[derive(Clone, Copy, Debug)]
enum StubKind {
    EmptyDir,
    EmptyFile,
}

// ---------------------------------------------------------------------------------------------
// The base image and the cases.
// ---------------------------------------------------------------------------------------------

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1000:\n";
const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\nCOPY passwd group /etc/\n";

/// A file of a build context (mode set explicitly: COPY keeps it).
#[derive(Clone)]
struct CtxFile {
    path: &'static str,
    data: Vec<u8>,
    mode: u32,
}

fn file(path: &'static str, data: &str, mode: u32) -> CtxFile {
    CtxFile { path, data: data.as_bytes().to_vec(), mode }
}

/// One build, done by both builders.
#[derive(Clone, Default)]
struct Build {
    tag: &'static str,
    dockerfile: &'static str,
    files: Vec<CtxFile>,
    build_args: Vec<&'static str>,
    target: Option<&'static str>,
    /// The same build spelled for buildah, with the extra context files it needs, where buildah
    /// 1.28 cannot parse what the case tests (heredocs came in buildah 1.33). The spelling must
    /// mean exactly what the Dockerfile means under BuildKit's rules.
    buildah_equivalent: Option<(&'static str, Vec<CtxFile>)>,
}

/// What a build produced, on one side.
struct Image {
    builder: &'static str,
    /// The tag it was built as (names it in diffs).
    tag: String,
    config: Value,
    rootfs: PathBuf,
}

impl Image {
    fn cfg(&self, field: &str) -> Value {
        normalise(field, self.config["config"].get(field).cloned().unwrap_or(Value::Null), self.builder)
    }
    fn read(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.rootfs.join(path.trim_start_matches('/'))).ok()
    }
    fn meta(&self, path: &str) -> Option<fs::Metadata> {
        fs::symlink_metadata(self.rootfs.join(path.trim_start_matches('/'))).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// The cases: one #[test] each.
// ---------------------------------------------------------------------------------------------

/// What kiln's engine supported before the Dockerfile rewrite (FROM, RUN, COPY incl. --chmod,
/// WORKDIR, ENV, CMD): a check of the comparison machinery itself, kept permanently.
#[test]
fn single_stage_workdir_env_copy_run_cmd() {
    let Some(mut p) = Pair::new("single") else { return };
    let (k, b) = p.build_both(&Build {
        tag: "cmp/single",
        dockerfile: r#"FROM cmp/base
WORKDIR /srv/app
ENV MODE=test GREETING="hello world"
COPY note.txt ./
COPY conf/ /etc/app/
COPY --chmod=0600 secret.txt /etc/app/secret
RUN echo "$GREETING from $(pwd) as $(id -u):$(id -g) mode=$MODE" > out.txt \
 && mkdir -p /var/lib/app/cache && chmod 0700 /var/lib/app \
 && ln -s /srv/app/out.txt /var/lib/app/link \
 && chown -R 1000:50 /var/lib/app && chmod 2775 /var/lib/app/cache && rm /etc/app/remove-me
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat out.txt"]
"#,
        files: vec![
            file("note.txt", "a note\n", 0o644),
            file("conf/a.conf", "a=1\n", 0o644),
            file("conf/run.sh", "#!/bin/sh\necho run\n", 0o755),
            file("conf/remove-me", "gone\n", 0o644),
            file("secret.txt", "s3cret\n", 0o644),
        ],
        ..Build::default()
    });
    for img in [&k, &b] {
        p.expect_file(img, "/srv/app/out.txt", "hello world from /srv/app as 0:0 mode=test\n");
        p.expect_owner(img, "/var/lib/app/cache", 1000, 50, 0o2775);
        p.expect_absent(img, "/etc/app/remove-me");
    }
    p.compare(&k, &b);
    p.finish();
}

/// (a) Multi-stage: files made by RUN in a `build` stage (one owned by app, a setuid one, a
/// symlink, a 0750 app:staff directory), copied with COPY --from: ownership and modes are kept
/// (BuildKit and buildah agree), and --chown sets owner and group (keeping setuid).
#[test]
fn multi_stage_copy_from_keeps_and_sets_ownership() {
    let Some(mut p) = Pair::new("multistage") else { return };
    let (k, b) = p.build_both(&Build {
        tag: "cmp/multistage",
        dockerfile: r#"FROM cmp/base AS build
RUN mkdir -p /out/sub && echo x > /out/x && echo s > /out/sub/s && chmod 4755 /out/sub/s \
 && ln -s x /out/lnk && echo a > /out/byapp && chown app /out/byapp \
 && chown app:staff /out/sub && chmod 0750 /out/sub && echo unused > /not-copied
FROM cmp/base
COPY --from=build /out/ /app/
COPY --from=build --chown=app:staff /out/x /y
COPY --from=build --chown=app:staff /out/sub/s /s-owned
RUN cat /y /app/x /app/lnk > /joined
"#,
        ..Build::default()
    });
    for img in [&k, &b] {
        p.expect_owner(img, "/app/byapp", 1000, 0, 0o644);
        p.expect_owner(img, "/app/sub", 1000, 50, 0o750);
        p.expect_owner(img, "/app/sub/s", 0, 0, 0o4755);
        p.expect_owner(img, "/y", 1000, 50, 0o644);
        p.expect_owner(img, "/s-owned", 1000, 50, 0o4755);
        p.expect_file(img, "/joined", "x\nx\nx\n");
        p.expect_absent(img, "/not-copied");
    }
    p.compare(&k, &b);
    p.finish();
}

/// (b) A scratch image holding a static binary copied from another stage.
#[test]
fn scratch_image_with_a_static_binary() {
    let Some(mut p) = Pair::new("scratch") else { return };
    let (k, b) = p.build_both(&Build {
        tag: "cmp/scratch",
        dockerfile: r#"FROM cmp/base AS build
RUN mkdir -p /out && echo built > /out/built
FROM scratch
COPY --from=build /bin/busybox /busybox
COPY --from=build /out/built /etc/
ENTRYPOINT ["/busybox"]
CMD ["true"]
"#,
        ..Build::default()
    });
    for img in [&k, &b] {
        p.expect_file(img, "/etc/built", "built\n");
        p.expect_absent(img, "/bin");
    }
    p.compare(&k, &b);
    p.finish();
}

/// (c) USER/WORKDIR/ENV/ARG interplay and the metadata instructions.
/// - `ENV A=1 B=${A}2`: one ENV expands with the values from before it, so B is "2".
/// - WORKDIR chains relative paths; under `USER app` the directories WORKDIR creates belong
///   to app (BuildKit's mkdir WithUser; buildah agrees).
/// - ENTRYPOINT after a CMD of the same stage keeps that CMD.
/// - VOLUME comes after the last RUN on purpose: a RUN after VOLUME differs between the two
///   builders (buildah creates the mount point and discards what the RUN writes under it,
///   BuildKit leaves the tree alone), so that is not comparable against buildah. It is not the
///   last instruction either (see BUILDAH_VOLUME_DIRS): BuildKit creates no /data.
#[test]
fn user_workdir_env_arg_and_metadata_instructions() {
    let Some(mut p) = Pair::new("meta") else { return };
    let (k, b) = p.build_both(&Build {
        tag: "cmp/meta",
        dockerfile: r#"FROM cmp/base
ARG GREETING=hello
ARG WHO=nobody
ENV A=1 B=${A}2
ENV C="$A-$B" D="${GREETING} ${WHO}"
WORKDIR /srv
WORKDIR app
USER app
WORKDIR data/run
RUN echo "uid=$(id -u) gid=$(id -g) pwd=$(pwd) A=$A B=$B C=$C D=$D who=$WHO" > state
USER root:staff
RUN echo "uid=$(id -u) gid=$(id -g)" > /srv/rootstaff
SHELL ["/bin/sh", "-ec"]
RUN echo "shell: $0 $-" > /srv/shell
VOLUME ["/data"]
CMD ["serve", "--port", "80"]
ENTRYPOINT ["/bin/app"]
EXPOSE 80 8080/udp
LABEL a=b "c d"=e
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s CMD true
"#,
        build_args: vec!["WHO=builder"],
        ..Build::default()
    });
    for img in [&k, &b] {
        p.expect_file(
            img,
            "/srv/app/data/run/state",
            "uid=1000 gid=1000 pwd=/srv/app/data/run A=1 B=2 C=1-2 D=hello builder who=builder\n",
        );
        p.expect_owner(img, "/srv/app/data/run/state", 1000, 1000, 0o644);
        p.expect_owner(img, "/srv/app", 0, 0, 0o755);
        p.expect_owner(img, "/srv/app/data", 1000, 1000, 0o755);
        p.expect_owner(img, "/srv/app/data/run", 1000, 1000, 0o755);
        p.expect_file(img, "/srv/rootstaff", "uid=0 gid=50\n");
        p.expect_owner(img, "/srv/rootstaff", 0, 50, 0o644);
        p.expect_config(img, "Cmd", serde_json::json!(["serve", "--port", "80"]));
        p.expect_config(img, "User", serde_json::json!("root:staff"));
        p.expect_config(img, "Healthcheck", serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 30_000_000_000_u64}));
        p.expect_config(img, "Shell", serde_json::json!(["/bin/sh", "-ec"]));
        // busybox sh lists the flags of `sh -ec` as "ce".
        p.expect_file(img, "/srv/shell", "shell: /bin/sh ce\n");
        p.expect_absent(img, "/data");
    }
    p.compare(&k, &b);
    p.finish();
}

/// (d) ADD: a local .tar.gz is extracted (keeping the archive's owners and modes: BuildKit and
/// buildah agree), a plain file is copied, with --chmod and --chown (parents it creates get
/// the --chown owner in both). Not tested: ADD --chown of an archive (buildah leaves the
/// archive's owners, current BuildKit applies --chown to the entries), remote URLs.
#[test]
fn add_extracts_local_tarballs_and_applies_chmod_chown() {
    let Some(mut p) = Pair::new("add") else { return };
    let tarball = p.tarball();
    let mut files = vec![file("plain.txt", "plain\n", 0o644)];
    files.push(CtxFile { path: "bundle.tar.gz", data: tarball, mode: 0o644 });
    let (k, b) = p.build_both(&Build {
        tag: "cmp/add",
        dockerfile: r#"FROM cmp/base
ADD bundle.tar.gz /opt/
ADD bundle.tar.gz /opt2
ADD --chmod=0640 --chown=1000:1000 plain.txt /srv/plain.txt
ADD plain.txt /srv2/
"#,
        files,
        ..Build::default()
    });
    for img in [&k, &b] {
        p.expect_file(img, "/opt/tree/one", "one\n");
        p.expect_owner(img, "/opt/tree/owned", 1000, 50, 0o600);
        p.expect_owner(img, "/opt2/tree/sub", 1000, 50, 0o750);
        p.expect_owner(img, "/srv/plain.txt", 1000, 1000, 0o640);
        p.expect_owner(img, "/srv", 1000, 1000, 0o755);
        p.expect_owner(img, "/srv2/plain.txt", 0, 0, 0o644);
        p.expect_absent(img, "/opt/bundle.tar.gz");
    }
    p.compare(&k, &b);
    p.finish();
}

/// (e) Heredocs. buildah 1.28 has none, so buildah builds the same thing spelled without
/// them, following BuildKit's rules: a RUN heredoc without a shebang is `SHELL + [body]`; a
/// COPY heredoc is a 0644 file, its body expanded (ENV and ARG) unless the delimiter is quoted.
#[test]
fn heredocs_in_run_and_copy() {
    let Some(mut p) = Pair::new("heredoc") else { return };
    let (k, b) = p.build_both(&Build {
        tag: "cmp/heredoc",
        dockerfile: r#"FROM cmp/base
ARG WHO=nobody
ENV NAME=world
RUN <<EOF
mkdir -p /hd
echo "first $NAME" > /hd/script
echo "second $((40+2))" >> /hd/script
EOF
COPY <<EOF /etc/conf
name=$NAME who=${WHO}
EOF
COPY <<'EOF' /etc/raw
name=$NAME who=${WHO}
EOF
"#,
        build_args: vec!["WHO=builder"],
        buildah_equivalent: Some((
            r#"FROM cmp/base
ARG WHO=nobody
ENV NAME=world
RUN ["/bin/sh", "-c", "mkdir -p /hd\necho \"first $NAME\" > /hd/script\necho \"second $((40+2))\" >> /hd/script\n"]
COPY conf /etc/conf
COPY raw /etc/raw
"#,
            vec![file("conf", "name=world who=builder\n", 0o644), file("raw", "name=$NAME who=${WHO}\n", 0o644)],
        )),
        ..Build::default()
    });
    for img in [&k, &b] {
        p.expect_file(img, "/hd/script", "first world\nsecond 42\n");
        p.expect_file(img, "/etc/conf", "name=world who=builder\n");
        p.expect_file(img, "/etc/raw", "name=$NAME who=${WHO}\n");
        p.expect_owner(img, "/etc/conf", 0, 0, 0o644);
        p.expect_owner(img, "/etc/raw", 0, 0, 0o644);
    }
    p.compare(&k, &b);
    p.finish();
}

/// (e, continued) A RUN heredoc starting with `#!` is written to a file and executed, so the
/// kernel runs the interpreter it names: `#!/bin/sh` and, to tell "executed" from "fed to
/// the shell", `#!/bin/awk -f`. buildah's spelling runs the same interpreters on the bodies.
#[test]
fn run_heredocs_with_a_shebang() {
    let Some(mut p) = Pair::new("shebang") else { return };
    let (k, b) = p.build_both(&Build {
        tag: "cmp/shebang",
        dockerfile: r#"FROM cmp/base
RUN <<EOF
#!/bin/sh
mkdir -p /hd
echo "from a shebang script run by $(id -u)" > /hd/shebang
EOF
RUN <<EOF
#!/bin/awk -f
BEGIN { print "awk says hi" > "/hd/awk" }
EOF
"#,
        buildah_equivalent: Some((
            r##"FROM cmp/base
RUN ["/bin/sh", "-c", "#!/bin/sh\nmkdir -p /hd\necho \"from a shebang script run by $(id -u)\" > /hd/shebang\n"]
RUN ["/bin/awk", "BEGIN { print \"awk says hi\" > \"/hd/awk\" }\n"]
"##,
            vec![],
        )),
        ..Build::default()
    });
    for img in [&k, &b] {
        p.expect_file(img, "/hd/shebang", "from a shebang script run by 0\n");
        p.expect_file(img, "/hd/awk", "awk says hi\n");
    }
    p.compare(&k, &b);
    p.finish();
}

/// (f) ONBUILD: the parent records the triggers without running them; a child FROM it runs
/// them first (the COPY from the child's context) and does not inherit them. The child's
/// ENTRYPOINT also resets the CMD it inherited.
#[test]
fn onbuild_triggers_run_in_the_child_only() {
    let Some(mut p) = Pair::new("onbuild") else { return };
    let (kp, bp) = p.build_both(&Build {
        tag: "cmp/parent",
        dockerfile: "FROM cmp/base\nCMD [\"sh\"]\nONBUILD RUN echo triggered > /onbuild\nONBUILD COPY x /x\n",
        ..Build::default()
    });
    let (kc, bc) = p.build_both(&Build {
        tag: "cmp/child",
        dockerfile: "FROM cmp/parent\nENTRYPOINT [\"/bin/echo\"]\nRUN echo child > /child\n",
        files: vec![file("x", "from the child context\n", 0o644)],
        ..Build::default()
    });
    for img in [&kp, &bp] {
        p.expect_config(img, "OnBuild", serde_json::json!(["RUN echo triggered > /onbuild", "COPY x /x"]));
        p.expect_absent(img, "/onbuild");
    }
    for img in [&kc, &bc] {
        p.expect_config(img, "OnBuild", Value::Null);
        p.expect_config(img, "Cmd", Value::Null);
        p.expect_file(img, "/onbuild", "triggered\n");
        p.expect_file(img, "/x", "from the child context\n");
        p.expect_file(img, "/child", "child\n");
    }
    p.compare(&kp, &bp);
    p.compare(&kc, &bc);
    p.finish();
}

/// (g) --target: the build stops at the named stage; a later stage (which would fail) is not
/// built.
#[test]
fn target_stops_at_the_named_stage() {
    let Some(mut p) = Pair::new("target") else { return };
    let (k, b) = p.build_both(&Build {
        tag: "cmp/target",
        dockerfile: r#"FROM cmp/base AS first
RUN echo first > /first
ENV STAGE=first
FROM first AS middle
RUN echo "middle after $STAGE" > /middle
ENV STAGE=middle
CMD ["middle"]
FROM middle AS last
RUN echo last > /last && exit 1
"#,
        target: Some("middle"),
        ..Build::default()
    });
    for img in [&k, &b] {
        p.expect_file(img, "/first", "first\n");
        p.expect_file(img, "/middle", "middle after first\n");
        p.expect_absent(img, "/last");
        p.expect_config(img, "Cmd", serde_json::json!(["middle"]));
    }
    p.compare(&k, &b);
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// Machinery.
// ---------------------------------------------------------------------------------------------

/// buildah with a private store; emptied and removed on drop (also when a test panics).
struct Buildah {
    dir: PathBuf,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .stdin(std::process::Stdio::null());
        c
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rmi", "-a", "-f"]).output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The two builders side by side, with a base image built in each, and the differences found
/// so far.
struct Pair {
    // Dropped in this order: buildah's store before the test's directory.
    buildah: Buildah,
    env: TestEnv,
    name: &'static str,
    problems: Vec<String>,
    allowed: BTreeSet<String>,
    /// What was compared, for the summary.
    compared: Vec<String>,
    seq: usize,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    out
}

impl Pair {
    /// None (after saying why) when the tests do not run as root.
    fn new(name: &'static str) -> Option<Self> {
        assert!(
            which("buildah"),
            "buildah is required by the kiln-vs-buildah comparison tests: run the README's setup command \
             (bash examples/setup-and-build.sh installs it)"
        );
        require_tool("skopeo");
        require_tool("umoci");
        require_tool("gzip");
        let env = TestEnv::new(&format!("cmp-{name}"));
        if env.user.is_none() {
            println!("skipped: the kiln-vs-buildah comparison needs root (buildah and umoci must keep file ownership); run tests/run.sh as root");
            return None;
        }
        let buildah = Buildah { dir: env.dir.path().join("buildah") };
        let mut p = Pair { buildah, env, name, problems: Vec::new(), allowed: BTreeSet::new(), compared: Vec::new(), seq: 0 };
        let ctx = p.context("base", BASE, &[file("passwd", PASSWD, 0o644), file("group", GROUP, 0o644)], true);
        p.buildah_build("cmp/base", &ctx, None, &[], None);
        p.kiln_build("cmp/base", &ctx, &[], None);
        Some(p)
    }

    /// A build context owned by kiln's user: the Dockerfile, the files, busybox if asked.
    fn context(&mut self, name: &str, dockerfile: &str, files: &[CtxFile], busybox: bool) -> PathBuf {
        self.seq += 1;
        let ctx = self.env.dir.path().join(format!("ctx-{}-{name}", self.seq));
        fs::create_dir_all(&ctx).expect("ctx");
        fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        for f in files {
            let p = ctx.join(f.path);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, &f.data).expect("write");
            fs::set_permissions(&p, fs::Permissions::from_mode(f.mode)).expect("chmod");
        }
        for dir in walk_dirs(&ctx) {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
        }
        if busybox {
            let bb = Path::new("/bin/busybox");
            assert!(bb.is_file(), "/bin/busybox is required (Debian package busybox-static)");
            fs::copy(bb, ctx.join("busybox")).expect("copy busybox");
            fs::set_permissions(ctx.join("busybox"), fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        self.env.give_to_user(&ctx);
        ctx
    }

    fn kiln_build(&self, tag: &str, ctx: &Path, args: &[&str], target: Option<&str>) {
        let mut argv = vec!["build".to_string(), "-t".into(), tag.into()];
        for a in args {
            argv.extend(["--build-arg".into(), (*a).to_string()]);
        }
        if let Some(t) = target {
            argv.extend(["--target".into(), t.to_string()]);
        }
        argv.push(ctx.display().to_string());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let t0 = Instant::now();
        let out = self.env.kiln(&argv);
        assert!(
            out.status.success(),
            "[{}] kiln build -t {tag} failed (`kiln {}`):\n{}",
            self.name,
            argv.join(" "),
            text(&out.stderr)
        );
        println!("[{}] kiln build {tag}: {:.1} s", self.name, t0.elapsed().as_secs_f64());
    }

    fn buildah_build(&self, tag: &str, ctx: &Path, dockerfile: Option<&Path>, args: &[&str], target: Option<&str>) {
        let mut cmd = self.buildah.cmd();
        cmd.args(["bud", "--isolation", "chroot", "--layers=false", "--format", "docker", "--pull=never", "-q", "-t", tag]);
        if let Some(f) = dockerfile {
            cmd.arg("-f").arg(f);
        }
        for a in args {
            cmd.args(["--build-arg", a]);
        }
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        cmd.arg(ctx);
        let t0 = Instant::now();
        let out = cmd.output().expect("run buildah");
        assert!(
            out.status.success(),
            "[{}] buildah bud -t {tag} failed (a bug in this test, not in kiln):\n{}\n{}",
            self.name,
            text(&out.stdout),
            text(&out.stderr)
        );
        println!("[{}] buildah bud {tag}: {:.1} s", self.name, t0.elapsed().as_secs_f64());
    }

    /// Builds `b` with both builders and reads both results.
    fn build_both(&mut self, b: &Build) -> (Image, Image) {
        let slug = b.tag.replace(['/', ':'], "-");
        let ctx = self.context(&slug, b.dockerfile, &b.files, false);

        // The reference first: when buildah fails, the case itself is wrong.
        let (bctx, bfile) = match &b.buildah_equivalent {
            None => (ctx.clone(), None),
            Some((dockerfile, extra)) => {
                let mut files = b.files.clone();
                files.extend(extra.iter().cloned());
                let note = format!("# buildah builds this context with -f ../{slug}.buildah.Dockerfile\n");
                let bctx = self.context(&format!("{slug}-buildah"), &note, &files, false);
                let f = self.env.dir.path().join(format!("{slug}.buildah.Dockerfile"));
                fs::write(&f, dockerfile).expect("write");
                (bctx, Some(f))
            }
        };
        self.buildah_build(b.tag, &bctx, bfile.as_deref(), &b.build_args, b.target);
        let buildah_archive = self.env.dir.path().join(format!("buildah-{slug}.tar"));
        run(self.buildah.cmd().args(["push", "-q", "--format", "docker", b.tag]).arg(format!("oci-archive:{}", buildah_archive.display())));
        let buildah = self.unpack("buildah", &buildah_archive, b.tag);

        self.kiln_build(b.tag, &ctx, &b.build_args, b.target);
        let kiln_archive = self.env.dir.path().join(format!("kiln-{slug}.tar"));
        let out = self.env.kiln(&["save", "--format", "oci", "-o", kiln_archive.to_str().expect("utf8"), b.tag]);
        assert!(out.status.success(), "[{}] kiln save {} failed:\n{}", self.name, b.tag, text(&out.stderr));
        let kiln = self.unpack("kiln", &kiln_archive, b.tag);
        (kiln, buildah)
    }

    /// The raw config and the unpacked root filesystem of an OCI archive.
    fn unpack(&self, builder: &'static str, archive: &Path, tag: &str) -> Image {
        let slug = tag.replace(['/', ':'], "-");
        let raw = run(Command::new("skopeo").args(["inspect", "--config", "--raw"]).arg(format!("oci-archive:{}", archive.display())));
        let config: Value = serde_json::from_slice(&raw.stdout).expect("config json");
        let layout = self.env.dir.path().join(format!("{builder}-{slug}-layout"));
        let bundle = self.env.dir.path().join(format!("{builder}-{slug}-bundle"));
        run(Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("oci:{}:t", layout.display())));
        run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:t", layout.display())).arg(&bundle));
        Image { builder, tag: tag.to_string(), config, rootfs: bundle.join("rootfs") }
    }

    /// The tarball ADD extracts: owners, modes, a symlink and a 0750 app:staff directory.
    fn tarball(&self) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, mode: u32, uid: u64, gid: u64, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_ustar();
            h.set_path(path).expect("path");
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).expect("link");
            }
            h.set_cksum();
            t.append(&h, data).expect("append");
        };
        add("tree/", tar::EntryType::Directory, 0o755, 0, 0, b"", None);
        add("tree/one", tar::EntryType::Regular, 0o644, 0, 0, b"one\n", None);
        add("tree/exec", tar::EntryType::Regular, 0o755, 0, 0, b"#!/bin/sh\necho exec\n", None);
        add("tree/owned", tar::EntryType::Regular, 0o600, 1000, 50, b"owned\n", None);
        add("tree/link", tar::EntryType::Symlink, 0o777, 1000, 50, b"", Some("one"));
        add("tree/sub/", tar::EntryType::Directory, 0o750, 1000, 50, b"", None);
        add("tree/sub/deep", tar::EntryType::Regular, 0o644, 0, 0, b"deep\n", None);
        let tar = t.into_inner().expect("tar");
        let raw = self.env.dir.path().join("bundle.tar");
        fs::write(&raw, tar).expect("write tar");
        run(Command::new("gzip").args(["-n", "-9", "-f"]).arg(&raw));
        fs::read(self.env.dir.path().join("bundle.tar.gz")).expect("read tar.gz")
    }

    // --- expectations (checked on both sides: they also guard the reference) ---

    fn expect_file(&mut self, img: &Image, path: &str, want: &str) {
        match img.read(path) {
            Some(got) if got == want => {}
            Some(got) => self.problems.push(format!("{} by {}: {path} holds {got:?}, expected {want:?}", img.tag, img.builder)),
            None => self.problems.push(format!("{} by {}: {path} is missing or unreadable (expected {want:?})", img.tag, img.builder)),
        }
    }

    fn expect_owner(&mut self, img: &Image, path: &str, uid: u32, gid: u32, mode: u32) {
        match img.meta(path) {
            Some(m) if (m.uid(), m.gid(), m.mode() & 0o7777) == (uid, gid, mode) => {}
            Some(m) => self.problems.push(format!(
                "{} by {}: {path} is {:04o} {}:{}, expected {mode:04o} {uid}:{gid}",
                img.tag,
                img.builder,
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            )),
            None => self.problems.push(format!("{} by {}: {path} is missing (expected {mode:04o} {uid}:{gid})", img.tag, img.builder)),
        }
    }

    fn expect_absent(&mut self, img: &Image, path: &str) {
        if img.meta(path).is_some() {
            self.problems.push(format!("{} by {}: {path} exists, expected none", img.tag, img.builder));
        }
    }

    fn expect_config(&mut self, img: &Image, field: &str, want: Value) {
        let got = img.cfg(field);
        let want = normalise(field, want, "expected");
        if got != want {
            self.problems.push(format!("{} by {}: config.{field} is {got}, expected {want}", img.tag, img.builder));
        }
    }

    // --- the comparison ---

    fn compare(&mut self, kiln: &Image, buildah: &Image) {
        let tag = &kiln.tag;
        for top in ["os", "architecture"] {
            if kiln.config[top] != buildah.config[top] {
                self.problems.push(format!("{tag}, kiln vs buildah: {top}: kiln {} | buildah {}", kiln.config[top], buildah.config[top]));
            }
        }
        for field in CONFIG_FIELDS {
            let (k, b) = (kiln.cfg(field), buildah.cfg(field));
            if k != b {
                self.problems.push(format!("{tag}, kiln vs buildah: config.{field}: kiln {k} | buildah {b}"));
            }
        }
        let k = tree(&kiln.rootfs);
        let b = tree(&buildah.rootfs);
        let volumes: BTreeSet<&str> =
            buildah.config["config"]["Volumes"].as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        let paths: BTreeSet<&String> = k.keys().chain(b.keys()).collect();
        self.compared.push(format!("{tag}: {} paths", paths.len()));
        for path in paths {
            match (k.get(path), b.get(path)) {
                (Some(ke), Some(be)) => {
                    let diffs = ke.differences(be);
                    if !diffs.is_empty() {
                        self.problems.push(format!("{tag}, kiln vs buildah: {path}: {} differs (kiln: {ke} | buildah: {be})", diffs.join(", ")));
                    }
                }
                (Some(ke), None) => self.problems.push(format!("{tag}, kiln vs buildah: {path}: only in kiln ({ke})")),
                (None, Some(be)) => {
                    if is_buildah_stub(path, be) {
                        self.allowed.insert(format!("{path} ({be}; mount-point stub)"));
                    } else if be.kind == "dir" && be.children == 0 && (be.uid, be.gid) == (0, 0) && volumes.contains(path.as_str()) {
                        self.allowed.insert(format!("{path} ({be}; VOLUME mount point)"));
                    } else {
                        self.problems.push(format!("{tag}, kiln vs buildah: {path}: only in buildah ({be})"));
                    }
                }
                (None, None) => unreachable!(),
            }
        }
    }

    /// Fails the test with every difference found, or prints what was allowed.
    fn finish(&mut self) {
        let mut allowed = String::new();
        if !self.allowed.is_empty() {
            let _ = write!(
                allowed,
                "\nignored, buildah-only (see BUILDAH_RUN_STUBS, BUILDAH_VOLUME_DIRS: {BUILDAH_VOLUME_DIRS}): {}",
                self.allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let _ = write!(allowed, "\nconfig normalisation: {CONFIG_NORMALISATION}; buildah labels dropped: {BUILDAH_LABELS:?}");
        let _ = write!(allowed, "\ncompared: {}", self.compared.join("; "));
        if self.problems.is_empty() {
            println!("[{}] kiln and buildah agree{allowed}", self.name);
            return;
        }
        let list = self.problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n");
        panic!("[{}] kiln and buildah disagree ({} differences):\n{list}{allowed}", self.name, self.problems.len());
    }
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).expect("readdir").flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk_dirs(&e.path()));
        }
    }
    out
}

/// Normalises a config value (see CONFIG_NORMALISATION).
fn normalise(field: &str, v: Value, builder: &str) -> Value {
    let mut v = match v {
        Value::String(s) if s.is_empty() => Value::Null,
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        other => other,
    };
    if field == "WorkingDir" && v == "/" {
        v = Value::Null;
    }
    if field == "Labels" && builder == "buildah" {
        if let Value::Object(o) = &mut v {
            for l in BUILDAH_LABELS {
                o.remove(*l);
            }
            if o.is_empty() {
                v = Value::Null;
            }
        }
    }
    if field == "Healthcheck" {
        if let Value::Object(o) = &mut v {
            o.retain(|_, x| x.as_u64() != Some(0) && !x.is_null());
        }
    }
    v
}

// --- root filesystem trees ---

struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Symlink target, device number, or size + content hash.
    what: String,
    /// The content when it is short text (for readable diffs).
    preview: Option<String>,
    /// Number of entries below a directory.
    children: usize,
}

impl Entry {
    fn differences(&self, o: &Entry) -> Vec<String> {
        let mut d = Vec::new();
        if self.kind != o.kind {
            d.push("type".to_string());
        }
        if self.mode != o.mode {
            d.push("mode".to_string());
        }
        if (self.uid, self.gid) != (o.uid, o.gid) {
            d.push("owner".to_string());
        }
        if self.what != o.what {
            d.push(match self.kind {
                "symlink" => "target",
                "file" => "content",
                _ => "device",
            }
            .to_string());
        }
        d
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:04o} {}:{}", self.kind, self.mode, self.uid, self.gid)?;
        if !self.what.is_empty() {
            write!(f, " {}", self.what)?;
        }
        if let Some(p) = &self.preview {
            write!(f, " {p:?}")?;
        }
        Ok(())
    }
}

/// Every path under `root` ("/" included), keyed by its absolute path in the image.
fn tree(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Entry>) -> usize {
        let mut count = 0;
        let mut names: Vec<_> = fs::read_dir(dir).expect("readdir").map(|e| e.expect("entry").path()).collect();
        names.sort();
        for p in names {
            count += 1 + add(&p, root, out);
        }
        count
    }
    fn add(p: &Path, root: &Path, out: &mut BTreeMap<String, Entry>) -> usize {
        let m = fs::symlink_metadata(p).expect("lstat");
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let (kind, what, preview) = if ft.is_dir() {
            ("dir", String::new(), None)
        } else if ft.is_symlink() {
            ("symlink", format!("-> {}", fs::read_link(p).expect("readlink").display()), None)
        } else if ft.is_file() {
            let data = fs::read(p).expect("read");
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut h);
            let preview = if data.len() <= 120 { String::from_utf8(data.clone()).ok() } else { None };
            ("file", format!("{} B #{:016x}", data.len(), h.finish()), preview)
        } else if ft.is_char_device() || ft.is_block_device() {
            (if ft.is_char_device() { "chardev" } else { "blockdev" }, format!("rdev {:#x}", m.rdev()), None)
        } else if ft.is_fifo() {
            ("fifo", String::new(), None)
        } else {
            ("socket", String::new(), None)
        };
        let children = if ft.is_dir() { walk(p, root, out) } else { 0 };
        let rel = p.strip_prefix(root).expect("under root");
        let key = format!("/{}", rel.display());
        out.insert(key, Entry { kind, mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid(), what, preview, children });
        children
    }
    let mut out = BTreeMap::new();
    let m = fs::symlink_metadata(root).expect("rootfs");
    let children = walk(root, root, &mut out);
    out.insert(
        "/".to_string(),
        Entry { kind: "dir", mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid(), what: String::new(), preview: None, children },
    );
    out
}

fn is_buildah_stub(path: &str, e: &Entry) -> bool {
    BUILDAH_RUN_STUBS.iter().any(|(p, kind)| {
        *p == path
            && match kind {
                StubKind::EmptyDir => e.kind == "dir" && e.children == 0 && (e.uid, e.gid) == (0, 0),
                StubKind::EmptyFile => e.kind == "file" && e.what.starts_with("0 B ") && (e.uid, e.gid) == (0, 0),
            }
    })
}
