//! Typed-instruction tests: every keyword, its flags, and its errors with line numbers.

use super::*;
use crate::shell::Lexer;

fn cmds(text: &str) -> Result<Vec<Command>, crate::ParseError> {
    let ast = crate::ast::parse(text)?;
    Ok(parse_commands(&ast)?.into_iter().map(|l| l.command).collect())
}

fn one(text: &str) -> Command {
    let mut v = cmds(&format!("FROM scratch\n{text}\n")).unwrap_or_else(|e| panic!("{text}: {e}"));
    v.remove(1)
}

fn err(text: &str) -> String {
    match cmds(&format!("FROM scratch\n{text}\n")) {
        Ok(v) => panic!("{text}: expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn from_forms() {
    let v = cmds("FROM --platform=$BUILDPLATFORM golang:1.22 AS Build\nFROM scratch\n").expect("ok");
    assert_eq!(v[0], Command::From(From { image: s("golang:1.22"), name: Some(s("build")), platform: Some(s("$BUILDPLATFORM")) }));
    assert_eq!(v[1], Command::From(From { image: s("scratch"), name: None, platform: None }));
    assert_eq!(err("FROM a b"), "Dockerfile:2: FROM requires either one or three arguments");
    assert!(err("FROM a AS 1x").contains("invalid name for build stage"));
    assert_eq!(err("FROM --plat=x a"), "Dockerfile:2: FROM: unknown flag: --plat");
}

#[test]
fn run_forms_and_flags() {
    let Command::Run(r) = one("RUN --mount=type=cache,target=/c --network=none --security=insecure make") else { panic!() };
    assert_eq!((r.mounts.len(), r.network, r.security), (1, Network::None, Security::Insecure));
    assert_eq!(r.program(), RunProgram::Command(ShellOrExec::Shell(s("make"))));
    let Command::Run(r) = one("RUN [\"a\", \"b\"]") else { panic!() };
    assert_eq!(r.cmd, ShellOrExec::Exec(vec![s("a"), s("b")]));
    assert!(err("RUN --network=bridge x").contains("network mode \"bridge\" not supported"));
    assert!(err("RUN --mount=type=cache x").contains("requires a target"));
    assert_eq!(err("RUN"), "Dockerfile:2: RUN requires at least one argument");
}

#[test]
fn run_heredocs() {
    let Command::Run(r) = one("RUN <<EOF\necho a\necho b\nEOF") else { panic!() };
    assert_eq!(r.program(), RunProgram::Command(ShellOrExec::Shell(s("echo a\necho b\n"))));
    let Command::Run(r) = one("RUN <<-EOF\n\t#!/usr/bin/env python3\n\tprint(1)\n\tEOF") else { panic!() };
    assert_eq!(r.program(), RunProgram::Script { name: s("EOF"), data: s("#!/usr/bin/env python3\nprint(1)\n") });
    let Command::Run(r) = one("RUN python3 <<EOF > /out\nprint(1)\nEOF") else { panic!() };
    assert_eq!(r.program(), RunProgram::Command(ShellOrExec::Shell(s("python3 <<EOF > /out\nprint(1)\nEOF"))));
}

#[test]
fn cmd_entrypoint_shell() {
    assert_eq!(one("CMD [\"a\"]"), Command::Cmd(ShellOrExec::Exec(vec![s("a")])));
    assert_eq!(one("CMD []"), Command::Cmd(ShellOrExec::Exec(vec![])));
    assert_eq!(err("CMD"), "Dockerfile:2: CMD requires at least one argument");
    assert_eq!(err("ENTRYPOINT"), "Dockerfile:2: ENTRYPOINT requires at least one argument");
    assert_eq!(one("ENTRYPOINT exec app"), Command::Entrypoint(ShellOrExec::Shell(s("exec app"))));
    assert_eq!(one("SHELL [\"/bin/bash\", \"-c\"]"), Command::Shell(vec![s("/bin/bash"), s("-c")]));
    assert!(err("SHELL /bin/bash -c").contains("JSON form"));
}

#[test]
fn env_label_arg() {
    assert_eq!(one("ENV A=1 B=\"x y\""), Command::Env(vec![(s("A"), s("1")), (s("B"), s("\"x y\""))]));
    assert_eq!(one("ENV A x y"), Command::Env(vec![(s("A"), s("x y"))]));
    assert_eq!(one("LABEL a=b"), Command::Label(vec![(s("a"), s("b"))]));
    assert_eq!(err("ENV"), "Dockerfile:2: ENV requires at least one argument");
    assert_eq!(err("ENV =x"), "Dockerfile:2: ENV names can not be blank");
    assert_eq!(
        one("ARG A B=2"),
        Command::Arg(vec![ArgDef { name: s("A"), default: None }, ArgDef { name: s("B"), default: Some(s("2")) }])
    );
    assert_eq!(err("ARG"), "Dockerfile:2: ARG requires at least one argument");
}

#[test]
fn copy_and_add() {
    let Command::Copy(c) = one("COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=x a b /dst/")
    else {
        panic!()
    };
    assert_eq!(c.srcs, vec![Source::Path(s("a")), Source::Path(s("b"))]);
    assert_eq!((c.from.as_deref(), c.chown.as_deref(), c.chmod.as_deref()), (Some("build"), Some("app:app"), Some("0755")));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, vec![s("*.md"), s("x")]);
    let Command::Add(a) = one("ADD --checksum=sha256:abc --keep-git-dir https://x/y.tgz /d") else { panic!() };
    assert_eq!((a.checksum.as_deref(), a.keep_git_dir), (Some("sha256:abc"), true));
    let Command::Copy(c) = one("COPY <<one <<\"two\" /dst/\n1 $X\none\n2 $X\ntwo") else { panic!() };
    assert_eq!(c.srcs[0], Source::Inline(InlineFile { name: s("one"), data: s("1 $X\n"), expand: true }));
    assert_eq!(c.srcs[1], Source::Inline(InlineFile { name: s("two"), data: s("2 $X\n"), expand: false }));
    assert!(err("COPY a").contains("COPY requires at least two arguments"));
    assert_eq!(err("ADD --from=x a b"), "Dockerfile:2: ADD: unknown flag: --from");
    assert_eq!(err("COPY --checksum=x a b"), "Dockerfile:2: COPY: unknown flag: --checksum");
    assert!(err("COPY --chmod=u+q a b").contains("invalid chmod parameter"));
}

#[test]
fn small_instructions() {
    assert_eq!(one("EXPOSE 80 53/udp"), Command::Expose(vec![s("80"), s("53/udp")]));
    assert_eq!(one("VOLUME [\"/a\", \"/b\"]"), Command::Volume(vec![s("/a"), s("/b")]));
    assert_eq!(one("VOLUME /a /b"), Command::Volume(vec![s("/a"), s("/b")]));
    assert_eq!(one("USER app:grp"), Command::User(s("app:grp")));
    assert_eq!(one("WORKDIR /srv"), Command::Workdir(s("/srv")));
    assert_eq!(one("STOPSIGNAL SIGINT"), Command::StopSignal(s("SIGINT")));
    assert_eq!(one("MAINTAINER me"), Command::Maintainer(s("me")));
    assert_eq!(err("WORKDIR"), "Dockerfile:2: WORKDIR requires exactly one argument");
    assert_eq!(err("USER --x=1 a"), "Dockerfile:2: USER: unknown flag: --x");
    assert_eq!(err("VOLUME [\"\"]"), "Dockerfile:2: VOLUME specified can not be an empty string");
    assert_eq!(err("FROBNICATE x"), "Dockerfile:2: unknown instruction: FROBNICATE");
}

#[test]
fn healthcheck_forms() {
    assert_eq!(one("HEALTHCHECK NONE"), Command::Healthcheck(Health::None));
    let Command::Healthcheck(Health::Check { test, interval, retries, .. }) = one("HEALTHCHECK --interval=5s --retries=3 CMD curl -f x")
    else {
        panic!()
    };
    assert_eq!(test, vec![s("CMD-SHELL"), s("curl -f x")]);
    assert_eq!((interval, retries), (Some(std::time::Duration::from_secs(5)), Some(3)));
    let Command::Healthcheck(Health::Check { test, .. }) = one("HEALTHCHECK CMD [\"/check\", \"-q\"]") else { panic!() };
    assert_eq!(test, vec![s("CMD"), s("/check"), s("-q")]);
    assert_eq!(err("HEALTHCHECK NONE x"), "Dockerfile:2: HEALTHCHECK NONE takes no arguments");
    assert_eq!(err("HEALTHCHECK CMD"), "Dockerfile:2: Missing command after HEALTHCHECK CMD");
    assert!(err("HEALTHCHECK PING x").contains("Unknown type \"PING\" in HEALTHCHECK (try CMD)"));
    assert!(err("HEALTHCHECK --interval=5 CMD x").contains("invalid duration"));
    assert!(err("HEALTHCHECK --retries=-1 CMD x").contains("cannot be negative"));
}

#[test]
fn onbuild_triggers() {
    let Command::Onbuild { expression, trigger } = one("ONBUILD RUN echo x") else { panic!() };
    assert_eq!(expression, "RUN echo x");
    assert!(matches!(*trigger, Command::Run(_)));
    assert!(err("ONBUILD ONBUILD RUN x").contains("Chaining ONBUILD"));
    assert_eq!(err("ONBUILD FROM x"), "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger");
    assert_eq!(err("ONBUILD"), "Dockerfile:2: ONBUILD requires at least one argument");
    assert!(err("ONBUILD COPY a").contains("COPY requires at least two arguments"));
}

#[test]
fn expansion_of_typed_commands() {
    let env: Vec<(String, String)> = vec![(s("V"), s("1.2")), (s("DIR"), s("/srv")), (s("PORT"), s("80 443")), (s("SIG"), s("SIGKILL"))];
    let lx = Lexer::new('\\');
    let x = |text: &str| one(text).expand(&lx, &env);
    assert_eq!(x("ENV A=$V B=\"${DIR}/x y\"").expect("env"), Command::Env(vec![(s("A"), s("1.2")), (s("B"), s("/srv/x y"))]));
    assert_eq!(x("WORKDIR $DIR/app").expect("workdir"), Command::Workdir(s("/srv/app")));
    assert_eq!(x("EXPOSE $PORT 53/udp").expect("expose"), Command::Expose(vec![s("80"), s("443"), s("53/udp")]));
    assert!(x("EXPOSE ${NOPE:-http}").expect_err("port").contains("invalid containerPort"));
    assert_eq!(x("STOPSIGNAL $SIG").expect("sig"), Command::StopSignal(s("SIGKILL")));
    assert!(x("STOPSIGNAL SIGNOPE").is_err());
    assert_eq!(x("RUN echo $V").expect("run"), one("RUN echo $V"));
    let Command::Copy(c) = x("COPY --chown=$V a-$V \"$DIR\"/").expect("copy") else { panic!() };
    assert_eq!((c.srcs[0].clone(), c.dst.as_str(), c.chown.as_deref()), (Source::Path(s("a-1.2")), "/srv/", Some("1.2")));
    let Command::Copy(c) = x("COPY <<one <<'two' /d/\nv=$V \"q\"\none\nv=$V\ntwo").expect("heredoc") else { panic!() };
    assert_eq!(c.srcs[0], Source::Inline(InlineFile { name: s("one"), data: s("v=1.2 \"q\"\n"), expand: true }));
    assert_eq!(c.srcs[1], Source::Inline(InlineFile { name: s("two"), data: s("v=$V\n"), expand: false }));
    assert_eq!(
        x("ADD --checksum=sha256:abc local.tgz /d").expect_err("local checksum"),
        "checksum can't be specified for non-HTTP(S) sources"
    );
    assert!(x("ADD --checksum=sha256:abc https://x/y.tgz /d").expect_err("short").contains("invalid checksum digest"));
    let sum = format!("ADD --checksum=sha256:{} https://x/y-$V.tgz /d", "0".repeat(64));
    assert!(x(&sum).is_ok());
    let e = one("WORKDIR ${V:?}x${NOPE:?unset}");
    let located = Located { line: 7, end_line: 7, text: s("WORKDIR"), command: e };
    assert_eq!(
        located.expand(&lx, &env).expect_err("unset").to_string(),
        "Dockerfile:7: failed to process \"${V:?}x${NOPE:?unset}\": NOPE: unset"
    );
}

#[test]
fn onbuild_triggers_round_trip() {
    let Command::Onbuild { expression, .. } = one("ONBUILD RUN <<EOF\necho $HOME\nEOF") else { panic!() };
    assert_eq!(expression, "RUN <<EOF\necho $HOME\nEOF");
    let triggers = vec![expression, "COPY . /app".to_string()];
    let parsed = parse_onbuild_triggers(&triggers, 4).expect("triggers");
    assert_eq!(parsed.len(), 2);
    let Command::Run(r) = &parsed[0].command else { panic!() };
    assert_eq!(r.program(), RunProgram::Command(ShellOrExec::Shell(s("echo $HOME\n"))));
    assert_eq!(parsed[1].line, 4);
    let e = parse_onbuild_triggers(&[s("FROM x")], 9).expect_err("from");
    assert_eq!(e.to_string(), "Dockerfile:9: ONBUILD trigger \"FROM x\": FROM isn't allowed as an ONBUILD trigger");
    assert!(parse_onbuild_triggers(&[s("COPY a")], 1).is_err());
}
