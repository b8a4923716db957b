//! The single-stage plan: what the executor gets, and what it rejects (with lines).

use super::*;

fn steps(text: &str) -> Result<Vec<Instruction>, ParseError> {
    Ok(parse_dockerfile(&format!("FROM scratch\n{text}\n"))?.steps.into_iter().map(|s| s.instruction).collect())
}

fn one(text: &str) -> Instruction {
    steps(text).unwrap_or_else(|e| panic!("{text}: {e}")).remove(0)
}

fn err(text: &str) -> ParseError {
    steps(text).expect_err(text)
}

#[test]
fn plan_of_a_small_dockerfile() {
    let plan = parse_dockerfile("FROM scratch\nCOPY bb /bin/\nRUN [\"/bin/busybox\", \"true\"]\n").expect("plan");
    assert_eq!(plan.base, Base::Scratch);
    assert_eq!(plan.steps.len(), 2);
    assert_eq!(plan.steps[1].line, 3);
    assert!(plan.steps[1].needs_guest());
    assert_eq!(plan.steps[0].text, "COPY bb /bin/");
    let plan = parse_dockerfile("from Alpine:3 as base\ncopy a b\n").expect("plan");
    assert_eq!(plan.base, Base::Image("Alpine:3".into()));
    assert_eq!(plan.steps[0].text, "COPY a b");
}

#[test]
fn run_forms() {
    assert_eq!(one("RUN echo hi"), Instruction::Run(ShellOrExec::Shell("echo hi".into())));
    assert_eq!(one(r#"RUN ["/bin/echo", "a b"]"#), Instruction::Run(ShellOrExec::Exec(vec!["/bin/echo".into(), "a b".into()])));
    // Not valid JSON: shell form, as Docker does.
    assert_eq!(one("RUN [not json"), Instruction::Run(ShellOrExec::Shell("[not json".into())));
    // A heredoc script runs in the shell.
    assert_eq!(one("RUN <<EOF\necho a\necho b\nEOF"), Instruction::Run(ShellOrExec::Shell("echo a\necho b\n".into())));
    assert_eq!(run_argv(&ShellOrExec::Shell("x".into())), vec!["/bin/sh", "-c", "x"]);
}

#[test]
fn copy_and_env() {
    assert_eq!(
        one("COPY --chmod=750 a b /d/"),
        Instruction::Copy { srcs: vec!["a".into(), "b".into()], dst: "/d/".into(), chmod: Some(0o750) }
    );
    assert_eq!(one(r#"COPY ["a b", "/d/"]"#), Instruction::Copy { srcs: vec!["a b".into()], dst: "/d/".into(), chmod: None });
    assert_eq!(
        one(r#"ENV A=1 B="two words" C=a\ b"#),
        Instruction::Env(vec![("A".into(), "1".into()), ("B".into(), "two words".into()), ("C".into(), "a b".into())])
    );
    assert_eq!(one("ENV A hello world"), Instruction::Env(vec![("A".into(), "hello world".into())]));
    assert_eq!(one("WORKDIR /srv/app"), Instruction::Workdir("/srv/app".into()));
    assert_eq!(one("CMD [\"a\"]"), Instruction::Cmd(ShellOrExec::Exec(vec!["a".into()])));
    assert_eq!(one("ENTRYPOINT exec a"), Instruction::Entrypoint(ShellOrExec::Shell("exec a".into())));
}

#[test]
fn errors_carry_line_numbers() {
    let e = parse_dockerfile("FROM scratch\n\nFOO bar").expect_err("unknown");
    assert_eq!(e.to_string(), "Dockerfile:3: unknown instruction: FOO");
    assert_eq!(err("COPY onlyone").line, 2);
    assert_eq!(err("COPY --from=x a b").to_string(), "Dockerfile:2: COPY: flag --from is not supported by kiln yet");
    assert!(err("COPY --chmod=99 a b").message.contains("invalid chmod"));
    assert_eq!(err("ADD a b").to_string(), "Dockerfile:2: ADD is not supported by kiln yet");
    assert!(err("ENV A=$B").message.contains("expansion"));
    assert!(err("RUN --mount=type=cache,target=/x true").message.contains("--mount is not supported"));
    assert!(steps("ENV A=\"open").is_err());
    assert!(err("COPY <<EOF /x\nhi\nEOF").message.contains("heredoc"));
    assert!(err("RUN <<EOF\n#!/bin/sh\nEOF").message.contains("#!"));
}

#[test]
fn plan_errors() {
    assert_eq!(parse_dockerfile("# nothing\n").expect_err("empty").line, 1);
    assert!(parse_dockerfile("RUN true\n").expect_err("no from").message.contains("FROM"));
    assert_eq!(parse_dockerfile("FROM scratch\nFROM scratch\n").expect_err("multi").line, 2);
    assert!(parse_dockerfile("ARG X\nFROM scratch\n").expect_err("arg").message.contains("ARG is not supported"));
}

#[test]
fn the_example_dockerfile_plans_as_before() {
    let plan = parse_dockerfile(include_str!("../../../../examples/hello/Dockerfile")).expect("example");
    assert_eq!(plan.base, Base::Scratch);
    let texts: Vec<&str> = plan.steps.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            "COPY busybox /bin/busybox",
            "RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]",
            "WORKDIR /srv",
            "RUN echo \"built by kiln inside a $(uname -s) $(uname -r) microVM\" > motd && cat motd",
            "COPY greeting.txt /srv/",
            "ENV GREETING=hello",
            "CMD [\"/bin/sh\", \"-c\", \"cat /srv/motd /srv/greeting.txt\"]",
        ]
    );
    assert_eq!(plan.steps[5].instruction, Instruction::Env(vec![("GREETING".into(), "hello".into())]));
    assert_eq!(
        plan.steps[3].instruction,
        Instruction::Run(ShellOrExec::Shell("echo \"built by kiln inside a $(uname -s) $(uname -r) microVM\" > motd && cat motd".into()))
    );
}
