//! What metadata instructions do to the image config, and the history line each one leaves,
//! with BuildKit's semantics. Pure: the executor owns the real (OCI) config and maps fields.
//!
//! Rules kept from BuildKit's dispatcher:
//! - shell-form CMD/ENTRYPOINT/RUN are wrapped in the stage's SHELL (default `/bin/sh -c`);
//! - ENTRYPOINT clears the CMD unless a CMD was set earlier in the same stage (an inherited
//!   CMD never survives a new ENTRYPOINT);
//! - ENV replaces an existing variable in place, else appends;
//! - WORKDIR is resolved against the previous working directory and cleaned;
//! - `HEALTHCHECK NONE` stores the test `["NONE"]`; durations are nanoseconds;
//! - ONBUILD stores the trigger text, run when the image is used as a base.
//!
//! Commands given here must already be expanded ([`crate::command::Located::expand`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{values, Command, Health};
use crate::ShellOrExec;

/// The default shell of Linux images.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// Docker's default PATH, set when the base image has none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A health check as stored in the image config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthConfig {
    pub test: Vec<String>,
    pub interval_ns: Option<u64>,
    pub timeout_ns: Option<u64>,
    pub start_period_ns: Option<u64>,
    pub start_interval_ns: Option<u64>,
    pub retries: Option<u32>,
}

/// The image-config fields a Dockerfile can change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<HealthConfig>,
    pub on_build: Vec<String>,
    pub shell: Option<Vec<String>>,
    /// Image-level `author` (MAINTAINER).
    pub author: Option<String>,
}

/// A stage's config while its instructions are applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StageConfig {
    pub config: ImageConfig,
    /// A CMD was set in this stage (so a later ENTRYPOINT keeps it).
    pub cmd_set: bool,
}

impl ImageConfig {
    /// The argv of a RUN/CMD/ENTRYPOINT in this image: shell form goes through SHELL.
    pub fn argv(&self, cmd: &ShellOrExec) -> Vec<String> {
        cmd.argv(self.shell.as_deref().unwrap_or(&default_shell()))
    }

    /// Value of an environment variable.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|e| e.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }

    /// Sets a variable: in place if present, else appended.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self.env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key) {
            Some(e) => *e = entry,
            None => self.env.push(entry),
        }
    }

    /// The environment as (key, value) pairs, for expansion.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env.iter().map(|e| e.split_once('=').map_or((e.clone(), String::new()), |(k, v)| (k.into(), v.into()))).collect()
    }
}

/// `path.Join("/", prev, dir)` then cleaned: WORKDIR's resolution.
pub fn resolve_workdir(previous: Option<&str>, dir: &str) -> String {
    let joined = if dir.starts_with('/') { dir.to_string() } else { format!("{}/{dir}", previous.unwrap_or("/")) };
    crate::dockerignore::clean_path(&format!("/{joined}"))
}

fn nanos(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl StageConfig {
    /// Starts a stage from its base image's config (the CMD counts as inherited).
    pub fn from_base(config: ImageConfig) -> Self {
        Self { config, cmd_set: false }
    }

    /// Applies one metadata instruction; RUN, COPY, ADD, FROM and ARG change no config here
    /// (ARG values live in the executor's build-arg scope) and are ignored.
    pub fn apply(&mut self, command: &Command) -> Result<(), String> {
        let c = &mut self.config;
        match command {
            Command::Cmd(cmd) => {
                c.cmd = Some(c.argv(cmd));
                self.cmd_set = true;
            }
            Command::Entrypoint(cmd) => {
                c.entrypoint = Some(c.argv(cmd));
                if !self.cmd_set {
                    c.cmd = None;
                }
            }
            Command::Env(pairs) => pairs.iter().for_each(|(k, v)| c.set_env(k, v)),
            Command::Label(pairs) => pairs.iter().for_each(|(k, v)| {
                c.labels.insert(k.clone(), v.clone());
            }),
            Command::Maintainer(m) => c.author = Some(m.clone()),
            Command::Expose(ports) => {
                for p in ports {
                    c.exposed_ports.extend(values::parse_port(p)?.config_keys());
                }
            }
            Command::Volume(v) => c.volumes.extend(v.iter().cloned()),
            Command::User(u) => c.user = Some(u.clone()),
            Command::Workdir(d) => c.working_dir = Some(resolve_workdir(c.working_dir.as_deref(), d)),
            Command::Shell(s) => c.shell = Some(s.clone()),
            Command::StopSignal(s) => {
                values::check_signal(s)?;
                c.stop_signal = Some(s.clone());
            }
            Command::Healthcheck(Health::None) => c.healthcheck = Some(HealthConfig { test: vec!["NONE".into()], ..Default::default() }),
            Command::Healthcheck(Health::Check { test, interval, timeout, start_period, start_interval, retries }) => {
                c.healthcheck = Some(HealthConfig {
                    test: test.clone(),
                    interval_ns: nanos(*interval),
                    timeout_ns: nanos(*timeout),
                    start_period_ns: nanos(*start_period),
                    start_interval_ns: nanos(*start_interval),
                    retries: *retries,
                })
            }
            Command::Onbuild { expression, .. } => c.on_build.push(expression.clone()),
            Command::From(_) | Command::Run(_) | Command::Copy(_) | Command::Add(_) | Command::Arg(_) => {}
        }
        Ok(())
    }
}

/// Go's `%q` of a `[]string`: `["a" "b c"]`.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| crate::ast::go_quote(s)).collect::<Vec<_>>().join(" "))
}

/// Go's `time.Duration.String()`: `1m30s`, `500ms`, `0s`, `1h0m0s`.
pub fn go_duration(ns: u64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        let (unit, div) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_fraction(ns, div));
    }
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let s_text = trim_fraction(s * 1_000_000_000 + frac, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{s_text}s"),
        (0, m) => format!("{m}m{s_text}s"),
        (h, m) => format!("{h}h{m}m{s_text}s"),
    }
}

/// `v / div` with its decimal fraction, trailing zeros removed.
fn trim_fraction(v: u64, div: u64) -> String {
    let whole = v / div;
    let frac = v % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Go's `%q` of an integer: the quoted rune (`'\x03'`, `'A'`).
fn go_quote_rune(n: u32) -> String {
    match char::from_u32(n) {
        Some('\'') => "'\\''".to_string(),
        Some('"') => "'\"'".to_string(),
        Some(c) => {
            let q = crate::ast::go_quote(&c.to_string());
            format!("'{}'", &q[1..q.len() - 1])
        }
        None => format!("'\\u{n:04x}'"),
    }
}

/// The history `created_by` BuildKit writes for a command (after it was applied to `config`).
/// `run_args` are the build args in scope of a RUN (`RUN |2 A=1 B=2 /bin/sh -c ...`).
pub fn created_by(command: &Command, config: &ImageConfig, text: &str, run_args: &[(String, String)]) -> String {
    let kv = |pairs: &[(String, String)]| pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    match command {
        Command::Run(r) => {
            let argv = match r.program() {
                crate::command::RunProgram::Command(cmd) => config.argv(&cmd),
                crate::command::RunProgram::Script { name, .. } => vec![format!("/dev/pipes/{name}")],
            };
            let args = if run_args.is_empty() { String::new() } else { format!("|{} {} ", run_args.len(), kv(run_args)) };
            format!("RUN {args}{} # buildkit", argv.join(" "))
        }
        Command::Copy(_) | Command::Add(_) => format!("{} # buildkit", text.lines().next().unwrap_or_default()),
        Command::Cmd(_) => format!("CMD {}", go_list(config.cmd.as_deref().unwrap_or_default())),
        Command::Entrypoint(_) => format!("ENTRYPOINT {}", go_list(config.entrypoint.as_deref().unwrap_or_default())),
        Command::Env(p) => format!("ENV {}", kv(p)),
        Command::Label(p) => format!("LABEL {}", kv(p)),
        Command::Arg(defs) => format!(
            "ARG {}",
            defs.iter().map(|d| d.default.as_ref().map_or(d.name.clone(), |v| format!("{}={v}", d.name))).collect::<Vec<_>>().join(" ")
        ),
        Command::Expose(ports) => {
            let set: BTreeSet<String> = ports.iter().filter_map(|p| values::parse_port(p).ok()).flat_map(|p| p.config_keys()).collect();
            format!("EXPOSE map[{}]", set.iter().map(|p| format!("{p}:{{}}")).collect::<Vec<_>>().join(" "))
        }
        Command::Volume(v) => format!("VOLUME [{}]", v.join(" ")),
        Command::Shell(s) => format!("SHELL [{}]", s.join(" ")),
        Command::Workdir(_) => format!("WORKDIR {}", config.working_dir.as_deref().unwrap_or("/")),
        Command::User(u) => format!("USER {u}"),
        Command::StopSignal(s) => format!("STOPSIGNAL {s}"),
        Command::Maintainer(m) => format!("MAINTAINER {m}"),
        Command::Onbuild { expression, .. } => format!("ONBUILD {expression}"),
        Command::Healthcheck(_) => {
            let h = config.healthcheck.clone().unwrap_or_default();
            let d = |ns: Option<u64>| crate::ast::go_quote(&go_duration(ns.unwrap_or(0)));
            format!(
                "HEALTHCHECK &{{{} {} {} {} {} {}}}",
                go_list(&h.test),
                d(h.interval_ns),
                d(h.timeout_ns),
                d(h.start_period_ns),
                d(h.start_interval_ns),
                go_quote_rune(h.retries.unwrap_or(0))
            )
        }
        Command::From(_) => text.to_string(),
    }
}

#[cfg(test)]
mod tests;
