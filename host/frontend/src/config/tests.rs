//! Config semantics: the CMD/ENTRYPOINT table, ENV, WORKDIR, metadata, history lines.

use super::*;
use crate::command::parse_commands;

fn commands(text: &str) -> Vec<Command> {
    let ast = crate::ast::parse(text).expect("parse");
    parse_commands(&ast).expect("typed").into_iter().map(|l| l.command).collect()
}

fn apply(base: ImageConfig, text: &str) -> ImageConfig {
    let mut st = StageConfig::from_base(base);
    for c in commands(text) {
        st.apply(&c).expect("apply");
    }
    st.config
}

fn v(s: &[&str]) -> Option<Vec<String>> {
    Some(s.iter().map(|x| x.to_string()).collect())
}

#[test]
fn cmd_entrypoint_table() {
    let base = ImageConfig { cmd: v(&["bash"]), ..Default::default() };
    // Inherited CMD is dropped by a new ENTRYPOINT.
    let c = apply(base.clone(), "ENTRYPOINT [\"/app\"]");
    assert_eq!((c.entrypoint, c.cmd), (v(&["/app"]), None));
    // CMD set in this stage before ENTRYPOINT survives.
    let c = apply(base.clone(), "CMD [\"--help\"]\nENTRYPOINT [\"/app\"]");
    assert_eq!((c.entrypoint, c.cmd), (v(&["/app"]), v(&["--help"])));
    // Shell forms go through the default shell, then through SHELL.
    let c = apply(base.clone(), "CMD echo hi\nSHELL [\"/bin/bash\", \"-lc\"]\nENTRYPOINT exec app");
    assert_eq!(c.cmd, v(&["/bin/sh", "-c", "echo hi"]));
    assert_eq!(c.entrypoint, v(&["/bin/bash", "-lc", "exec app"]));
    // Inherited CMD stays when only CMD-unrelated things change.
    assert_eq!(apply(base, "ENV A=1").cmd, v(&["bash"]));
}

#[test]
fn env_workdir_and_metadata() {
    let base = ImageConfig { env: vec![DEFAULT_PATH.into(), "A=0".into()], ..Default::default() };
    let c = apply(
        base,
        "ENV A=1 B=2\nWORKDIR app\nWORKDIR ../srv/./x\nWORKDIR /abs\nWORKDIR rel\nUSER 1000:1000\nEXPOSE 80 53/udp 8000-8001\nVOLUME /data /cache\nLABEL a=b\nLABEL a=c\nSTOPSIGNAL SIGINT\nMAINTAINER me\nONBUILD RUN make\nHEALTHCHECK --interval=5s --retries=2 CMD true",
    );
    assert_eq!(c.env, vec![DEFAULT_PATH.to_string(), "A=1".into(), "B=2".into()]);
    assert_eq!(c.env_value("B"), Some("2"));
    assert_eq!(c.working_dir.as_deref(), Some("/abs/rel"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    assert_eq!(c.exposed_ports.iter().cloned().collect::<Vec<_>>(), vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    assert_eq!(c.volumes.len(), 2);
    assert_eq!(c.labels.get("a").map(String::as_str), Some("c"));
    assert_eq!((c.stop_signal.as_deref(), c.author.as_deref()), (Some("SIGINT"), Some("me")));
    assert_eq!(c.on_build, vec!["RUN make".to_string()]);
    let h = c.healthcheck.expect("health");
    assert_eq!((h.test, h.interval_ns, h.retries), (vec!["CMD-SHELL".to_string(), "true".into()], Some(5_000_000_000), Some(2)));
    assert_eq!(apply(ImageConfig::default(), "HEALTHCHECK NONE").healthcheck.expect("none").test, vec!["NONE"]);
    assert_eq!(resolve_workdir(Some("/a/b"), ".."), "/a");
    assert_eq!(resolve_workdir(None, "x/"), "/x");
}

#[test]
fn history_lines_like_buildkit() {
    let text = "CMD [\"nginx\", \"-g\", \"daemon off;\"]\nEXPOSE 80\nENV A=1 B=x\nWORKDIR /app\nRUN echo hi\nCOPY a /b\nVOLUME /data\nUSER app\nSTOPSIGNAL SIGQUIT\nARG V=1\nENTRYPOINT [\"/e.sh\"]\nONBUILD RUN x\nSHELL [\"/bin/bash\", \"-c\"]";
    let ast = crate::ast::parse(text).expect("parse");
    let mut st = StageConfig::default();
    let mut lines = Vec::new();
    for l in parse_commands(&ast).expect("typed") {
        st.apply(&l.command).expect("apply");
        let args = if matches!(l.command, Command::Run(_)) { vec![("V".to_string(), "1".to_string())] } else { vec![] };
        lines.push(created_by(&l.command, &st.config, &l.text, &args));
    }
    assert_eq!(
        lines,
        vec![
            "CMD [\"nginx\" \"-g\" \"daemon off;\"]",
            "EXPOSE map[80/tcp:{}]",
            "ENV A=1 B=x",
            "WORKDIR /app",
            "RUN |1 V=1 /bin/sh -c echo hi # buildkit",
            "COPY a /b # buildkit",
            "VOLUME [/data]",
            "USER app",
            "STOPSIGNAL SIGQUIT",
            "ARG V=1",
            "ENTRYPOINT [\"/e.sh\"]",
            "ONBUILD RUN x",
            "SHELL [/bin/bash -c]",
        ]
    );
}

#[test]
fn go_formats() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(5_000_000_000), "5s");
    assert_eq!(go_duration(90_000_000_000), "1m30s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(500_000_000), "500ms");
    assert_eq!(go_duration(1_500), "1.5µs");
    let mut st = StageConfig::default();
    let hc = commands("HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/").remove(0);
    st.apply(&hc).expect("apply");
    assert_eq!(
        created_by(&hc, &st.config, "", &[]),
        "HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f http://localhost/\"] \"30s\" \"3s\" \"0s\" \"0s\" '\\x03'}"
    );
    let ex = commands("EXPOSE 443 80").remove(0);
    st.apply(&commands("EXPOSE 9000").remove(0)).expect("apply");
    assert_eq!(created_by(&ex, &st.config, "", &[]), "EXPOSE map[443/tcp:{} 80/tcp:{}]", "only this instruction's ports");
}
