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

mod compare_machinery;
mod harness;

use compare_machinery::*;

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
