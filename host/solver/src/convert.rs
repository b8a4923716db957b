//! Between the store's image config ([`RunConfig`], the JSON as stored) and the frontend's
//! [`ImageConfig`] (what Dockerfile instructions change). Docker-only fields (Healthcheck,
//! OnBuild, Shell) live in the JSON's extra fields; fields neither side knows (ArgsEscaped,
//! which the solver sets on CMD as BuildKit does, included) are kept as they were in the base.

use std::collections::BTreeMap;

use kiln_frontend::config::{HealthConfig, ImageConfig};
use kiln_store::image::RunConfig;
use serde_json::{json, Map, Value};

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
}

fn health_from(v: Option<&Value>) -> Option<HealthConfig> {
    let h = v?.as_object()?;
    let ns = |k: &str| h.get(k).and_then(Value::as_u64).filter(|n| *n > 0);
    Some(HealthConfig {
        test: strings(h.get("Test")).unwrap_or_default(),
        interval_ns: ns("Interval"),
        timeout_ns: ns("Timeout"),
        start_period_ns: ns("StartPeriod"),
        start_interval_ns: ns("StartInterval"),
        retries: h.get("Retries").and_then(Value::as_u64).and_then(|r| u32::try_from(r).ok()).filter(|r| *r > 0),
    })
}

fn health_to(h: &HealthConfig) -> Value {
    let mut m = Map::new();
    m.insert("Test".into(), json!(h.test));
    for (k, v) in [("Interval", h.interval_ns), ("Timeout", h.timeout_ns), ("StartPeriod", h.start_period_ns), ("StartInterval", h.start_interval_ns)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(r) = h.retries {
        m.insert("Retries".into(), json!(r));
    }
    Value::Object(m)
}

/// The frontend's view of a stored config; returns the extra fields it does not model too.
pub fn from_store(rc: &RunConfig) -> (ImageConfig, Map<String, Value>) {
    let mut extra = rc.extra.clone();
    let healthcheck = health_from(extra.get("Healthcheck"));
    let on_build = strings(extra.get("OnBuild")).unwrap_or_default();
    let shell = strings(extra.get("Shell"));
    for k in ["Healthcheck", "OnBuild", "Shell"] {
        extra.remove(k);
    }
    let config = ImageConfig {
        env: rc.env.clone().unwrap_or_default(),
        cmd: rc.cmd.clone(),
        entrypoint: rc.entrypoint.clone(),
        working_dir: rc.working_dir.clone().filter(|w| !w.is_empty()),
        user: rc.user.clone().filter(|u| !u.is_empty()),
        exposed_ports: rc.exposed_ports.iter().flat_map(|m| m.keys().cloned()).collect(),
        volumes: rc.volumes.iter().flat_map(|m| m.keys().cloned()).collect(),
        labels: rc.labels.clone().unwrap_or_default(),
        stop_signal: rc.stop_signal.clone(),
        healthcheck,
        on_build,
        shell,
        author: None,
    };
    (config, extra)
}

/// The stored form of a frontend config, with `extra` carried over from the base.
pub fn to_store(c: &ImageConfig, extra: &Map<String, Value>) -> RunConfig {
    let set = |s: &std::collections::BTreeSet<String>| {
        (!s.is_empty()).then(|| s.iter().map(|k| (k.clone(), json!({}))).collect::<BTreeMap<_, _>>())
    };
    let mut extra = extra.clone();
    if let Some(h) = &c.healthcheck {
        extra.insert("Healthcheck".into(), health_to(h));
    }
    if !c.on_build.is_empty() {
        extra.insert("OnBuild".into(), json!(c.on_build));
    }
    if let Some(s) = &c.shell {
        extra.insert("Shell".into(), json!(s));
    }
    RunConfig {
        user: c.user.clone(),
        exposed_ports: set(&c.exposed_ports),
        env: (!c.env.is_empty()).then(|| c.env.clone()),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        volumes: set(&c.volumes),
        working_dir: c.working_dir.clone(),
        labels: (!c.labels.is_empty()).then(|| c.labels.clone()),
        stop_signal: c.stop_signal.clone(),
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_docker_fields_and_unknown_ones() {
        let json = r#"{"Env":["PATH=/bin"],"Cmd":["sh"],"ExposedPorts":{"80/tcp":{}},"Volumes":{"/data":{}},
            "Labels":{"a":"b"},"StopSignal":"SIGTERM","User":"app","WorkingDir":"/w",
            "Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":30000000000,"Retries":3},
            "OnBuild":["RUN echo x"],"Shell":["/bin/bash","-c"],"Custom":{"x":1}}"#;
        let rc: RunConfig = serde_json::from_str(json).expect("config");
        let (c, extra) = from_store(&rc);
        assert_eq!(c.healthcheck.as_ref().map(|h| (h.interval_ns, h.retries)), Some((Some(30_000_000_000), Some(3))));
        assert_eq!(c.on_build, vec!["RUN echo x"]);
        assert_eq!(c.shell.as_deref(), Some(&["/bin/bash".to_string(), "-c".to_string()][..]));
        assert!(extra.contains_key("Custom") && !extra.contains_key("OnBuild"));
        let back = to_store(&c, &extra);
        assert_eq!(serde_json::to_value(&back).expect("json"), serde_json::to_value(&rc).expect("json"));
    }
}
