//! Stage graph tests: stage splitting, ARG scoping, references, pruning, errors.

use std::collections::BTreeMap;

use super::*;
use crate::command::Command;

fn opts(args: &[(&str, &str)], target: Option<&str>) -> BuildOptions {
    BuildOptions {
        build_args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_string),
        ..BuildOptions::default()
    }
}

const MULTI: &str = "\
ARG BASE=alpine
ARG TAG
FROM ${BASE}:${TAG:-3.20} AS deps
ENV DEPS_ENV=1
ARG TAG
RUN echo $TAG
FROM golang AS build
COPY --from=deps /x /x
FROM build AS test
RUN go test
FROM scratch AS final
ARG WHERE=build
COPY --from=${WHERE} /out /app
COPY --from=busybox:1.36 /bin/sh /sh
";

#[test]
fn stages_split_and_global_args() {
    let df = parse_full(MULTI).expect("parse");
    assert_eq!(df.global_args.len(), 2);
    assert_eq!(df.stages.len(), 4);
    assert_eq!(df.stages[1].name.as_deref(), Some("build"));
    assert_eq!(df.stages[0].commands.len(), 3);
    assert!(df.stage("FINAL").is_some());
}

#[test]
fn resolve_default_target_prunes_unneeded_stages() {
    let df = parse_full(MULTI).expect("parse");
    let g = df.resolve(&opts(&[], None)).expect("resolve");
    assert_eq!(g.target, 3);
    let order: Vec<usize> = g.stages.iter().map(|s| s.index).collect();
    assert_eq!(order, vec![0, 1, 3], "test stage is not needed");
    assert_eq!(g.stage(0).expect("deps").base, StageBase::Image("alpine:3.20".into()));
    assert_eq!(g.stage(3).expect("final").base, StageBase::Scratch);
    assert_eq!(g.stage(3).expect("final").deps, vec![1]);
    assert_eq!(g.stage(3).expect("final").external_images, vec!["busybox:1.36".to_string()]);
    assert_eq!(g.stage(1).expect("build").deps, vec![0]);
}

#[test]
fn build_args_and_target() {
    let df = parse_full(MULTI).expect("parse");
    let g = df.resolve(&opts(&[("BASE", "debian"), ("TAG", "12"), ("NOPE", "x"), ("HTTP_PROXY", "p")], Some("test"))).expect("resolve");
    assert_eq!(g.target, 2);
    assert_eq!(g.stages.iter().map(|s| s.index).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(g.stage(0).expect("deps").base, StageBase::Image("debian:12".into()));
    assert_eq!(g.stage(2).expect("test").base, StageBase::Stage(1));
    assert_eq!(g.warnings, vec!["[Warning] One or more build-args [NOPE] were not consumed".to_string()]);
    let e = df.resolve(&opts(&[], Some("nope"))).expect_err("target");
    assert!(e.message.contains("target stage \"nope\" could not be found"));
    // --from resolved through a stage ARG overridden by a build arg.
    let g = df.resolve(&opts(&[("WHERE", "deps")], None)).expect("resolve");
    assert_eq!(g.stage(3).expect("final").deps, vec![0]);
}

#[test]
fn platform_args_and_env_inheritance() {
    let text = "FROM --platform=$BUILDPLATFORM alpine AS a\nENV X=from-a\nFROM a AS b\nCOPY --from=${X:-none} / /\nFROM b\nARG TARGETARCH\nCOPY --from=0 / /\n";
    let df = parse_full(text).expect("parse");
    let mut o = opts(&[], None);
    o.build_platform = Platform::parse("linux/arm64").expect("p");
    // X is inherited by b from a's ENV, so COPY --from=from-a names an external image.
    let g = df.resolve(&o).expect("resolve");
    assert_eq!(g.stage(0).expect("a").platform.as_deref(), Some("linux/arm64"));
    assert_eq!(g.stage(1).expect("b").external_images, vec!["from-a".to_string()]);
    assert_eq!(g.stage(2).expect("last").deps, vec![0, 1]);
    assert_eq!(g.stages.iter().map(|s| s.index).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn graph_errors() {
    let e = |t: &str| parse_full(t).and_then(|d| d.resolve(&BuildOptions::default())).expect_err(t).to_string();
    assert_eq!(e("RUN x\nFROM a\n"), "Dockerfile:1: no build stage in current context: RUN before the first FROM");
    assert_eq!(e("ARG A\n"), "Dockerfile:1: the Dockerfile has no FROM instruction");
    assert_eq!(e("FROM a AS x\nFROM b AS X\n"), "Dockerfile:2: duplicate stage name \"x\": also defined on line 1");
    assert_eq!(e("FROM a AS x\nCOPY --from=x / /\n"), "Dockerfile:2: circular dependency detected on stage: x");
    assert_eq!(e("FROM a AS x\nCOPY --from=7 / /\n"), "Dockerfile:2: invalid from flag value 7: no stage with that index");
    assert!(e("FROM b AS a\nFROM a AS b\n").contains("circular dependency"));
    assert!(e("FROM a AS x\nCOPY --from=y / /\nFROM b AS y\nCOPY --from=x / /\n").contains("circular dependency"));
    assert!(e("ARG V\nFROM ${V}\n").contains("base name (${V}) should not be blank"));
    assert!(e("FROM ${V:?need_V}\n").contains("V: need_V"));
}

#[test]
fn stage_args_take_global_values() {
    let df = parse_full("ARG V=1\nFROM a\nARG V\nCOPY --from=img-$V / /\nFROM b\nCOPY --from=img-$V / /\n").expect("parse");
    let g = df.resolve(&BuildOptions { target: Some("0".into()), ..BuildOptions::default() });
    assert!(g.is_err(), "stages are named, not numbered, for --target");
    let g = df.resolve(&BuildOptions::default()).expect("resolve");
    assert_eq!(g.stages.len(), 1);
    assert_eq!(g.stages[0].external_images, vec!["img-".to_string()], "V is not declared in the last stage");
    let mut only_first = parse_full("ARG V=1\nFROM a AS one\nARG V\nCOPY --from=img-$V / /\n").expect("parse");
    only_first.stages.truncate(1);
    let g = only_first.resolve(&BuildOptions::default()).expect("resolve");
    assert_eq!(g.stages[0].external_images, vec!["img-1".to_string()]);
    assert!(matches!(df.stages[0].commands[0].command, Command::Arg(_)));
}
