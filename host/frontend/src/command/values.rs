//! Checks and conversions of instruction values that BuildKit applies after expansion:
//! ports, signals, durations, chmod modes, stage names.

use std::time::Duration;

/// One EXPOSE entry: a port or a range, with its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub start: u16,
    pub end: u16,
    /// `tcp` (default), `udp` or `sctp`.
    pub proto: String,
}

impl PortSpec {
    /// The image-config keys (`80/tcp`), one per port of a range.
    pub fn config_keys(&self) -> Vec<String> {
        (self.start..=self.end).map(|p| format!("{p}/{}", self.proto)).collect()
    }
}

/// Parses `80`, `80/udp`, `8000-8010/tcp`.
pub fn parse_port(s: &str) -> Result<PortSpec, String> {
    let (ports, proto) = match s.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (s, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let num = |p: &str| p.parse::<u16>().map_err(|_| format!("invalid containerPort: {p}"));
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    if end < start {
        return Err(format!("invalid range specified for port: {ports}"));
    }
    Ok(PortSpec { start, end, proto })
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT",
    "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// Accepts `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`, like Docker's signal parsing on Linux.
pub fn check_signal(s: &str) -> Result<(), String> {
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=64).contains(&n) { Ok(()) } else { Err(format!("invalid signal: {s}")) };
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    if SIGNALS.contains(&name) {
        return Ok(());
    }
    let rt = |base: &str, sign: char| -> bool {
        name.strip_prefix(base).is_some_and(|r| r.is_empty() || (r.starts_with(sign) && r[1..].parse::<u8>().is_ok_and(|k| k <= 30)))
    };
    if rt("RTMIN", '+') || rt("RTMAX", '-') {
        return Ok(());
    }
    Err(format!("invalid signal: {s}"))
}

/// Go's `time.ParseDuration` for the units Docker documents (`ns us µs ms s m h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {}", crate::ast::go_quote(s));
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        if n == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// A `--chmod` value: octal (`755`, `0644`) or symbolic (`u+x,go=r`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(String),
}

pub fn parse_chmod(s: &str) -> Result<Chmod, String> {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return u32::from_str_radix(s, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Chmod::Octal)
            .ok_or_else(|| format!("invalid chmod parameter: {s}"));
    }
    let clause_ok = |c: &str| {
        let who = c.chars().take_while(|ch| "ugoa".contains(*ch)).count();
        let rest = &c[who..];
        !rest.is_empty()
            && rest.split_inclusive(['+', '-', '=']).count() > 0
            && rest.starts_with(['+', '-', '='])
            && rest.chars().all(|ch| "+-=rwxXst".contains(ch))
    };
    if !s.is_empty() && s.split(',').all(clause_ok) {
        return Ok(Chmod::Symbolic(s.to_string()));
    }
    Err(format!("invalid chmod parameter: {s}"))
}

/// Stage names: `^[a-z][a-z0-9-_.]*$` after lower-casing.
pub fn check_stage_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name for build stage: {}, name can't start with a number or contain symbols", crate::ast::go_quote(name)))
    }
}

/// What an ADD source names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddSourceKind {
    /// A path in the build context (local archives are extracted).
    Local,
    /// An http(s) URL (downloaded, never extracted).
    Url,
    /// A git repository (`git@host:repo`, `git://`, `ssh://`, or an http(s) URL ending in `.git`).
    Git,
}

/// Classifies an (expanded) ADD source the way BuildKit does.
pub fn add_source_kind(src: &str) -> AddSourceKind {
    let lower = src.to_ascii_lowercase();
    if lower.starts_with("git@") || lower.starts_with("git://") || lower.starts_with("ssh://") {
        return AddSourceKind::Git;
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let path = lower.split('#').next().unwrap_or_default();
        return if path.ends_with(".git") { AddSourceKind::Git } else { AddSourceKind::Url };
    }
    AddSourceKind::Local
}

/// `--checksum=sha256:<64 hex>` (or sha384/sha512), as OCI digests are written.
pub fn check_digest(s: &str) -> Result<(), String> {
    let bad = || format!("invalid checksum digest format: {s}");
    let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(format!("unsupported checksum algorithm {alg:?}")),
    };
    if hex.len() != len || !hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sources() {
        assert_eq!(add_source_kind("app.tar.gz"), AddSourceKind::Local);
        assert_eq!(add_source_kind("https://example.com/x.tgz"), AddSourceKind::Url);
        assert_eq!(add_source_kind("https://github.com/moby/buildkit.git#v0.10.1"), AddSourceKind::Git);
        assert_eq!(add_source_kind("git@github.com:moby/buildkit.git"), AddSourceKind::Git);
        assert!(check_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(check_digest("sha256:abc").is_err());
        assert!(check_digest("md5:abc").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("80").expect("p").config_keys(), vec!["80/tcp"]);
        assert_eq!(parse_port("53/UDP").expect("p").config_keys(), vec!["53/udp"]);
        assert_eq!(parse_port("8000-8002").expect("p").config_keys().len(), 3);
        assert!(parse_port("http").is_err());
        assert!(parse_port("80/icmp").is_err());
        assert!(parse_port("90-80").is_err());
        assert!(parse_port("70000").is_err());
    }

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX-1", "SIGKILL"] {
            assert!(check_signal(ok).is_ok(), "{ok}");
        }
        for bad in ["SIGFOO", "0", "65", "RTMIN+99", ""] {
            assert!(check_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn chmods_and_names() {
        assert_eq!(parse_chmod("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(parse_chmod("u+x,go=r"), Ok(Chmod::Symbolic("u+x,go=r".into())));
        assert!(parse_chmod("999").is_err());
        assert!(parse_chmod("rwx").is_err());
        assert!(check_stage_name("build-1.x_y").is_ok());
        assert!(check_stage_name("1build").is_err());
        assert!(check_stage_name("a/b").is_err());
    }
}
