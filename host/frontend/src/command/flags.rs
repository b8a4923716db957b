//! Instruction flags (`--name=value`, `--name` for booleans), checked like BuildKit's BFlags:
//! unknown flags, duplicates, missing values and bad booleans are errors.

use std::collections::BTreeMap;

/// What kind of value a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    String,
    /// May be repeated; every value is kept.
    Strings,
}

/// Parsed flags of one instruction.
#[derive(Debug, Default)]
pub struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    /// Parses `raw` (`--name[=value]` words, as the parser keeps them) against `spec`.
    pub fn parse(keyword: &str, raw: &[String], spec: &[(&'static str, Kind)]) -> Result<Self, String> {
        let mut values: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for f in raw {
            let body = f.strip_prefix("--").ok_or_else(|| format!("{keyword}: invalid flag {f:?}: flags start with --"))?;
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some((key, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(format!("{keyword}: unknown flag: --{name}"));
            };
            let slot = values.entry(key).or_default();
            if !slot.is_empty() && *kind != Kind::Strings {
                return Err(format!("{keyword}: duplicate flag specified: --{name}"));
            }
            match (kind, value) {
                (Kind::Bool, None) => slot.push("true".into()),
                (Kind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" | "false" => slot.push(v.to_ascii_lowercase()),
                    _ => return Err(format!("{keyword}: expecting boolean value for flag --{name}, not: {v}")),
                },
                (_, None) => return Err(format!("{keyword}: missing a value on flag: --{name}")),
                (_, Some(v)) => slot.push(v.to_string()),
            }
        }
        Ok(Self { values })
    }

    /// A string flag's value.
    pub fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last()).cloned()
    }

    /// A boolean flag (absent = false).
    pub fn bool(&self, name: &str) -> bool {
        self.string(name).is_some_and(|v| v == "true")
    }

    /// Every value of a repeatable flag.
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[(&str, Kind)] = &[("from", Kind::String), ("link", Kind::Bool), ("exclude", Kind::Strings)];

    fn raw(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flag_rules() {
        let f = Flags::parse("COPY", &raw(&["--from=a", "--link", "--exclude=x", "--exclude=y"]), SPEC).expect("ok");
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert!(f.bool("link"));
        assert_eq!(f.strings("exclude"), vec!["x", "y"]);
        assert!(!Flags::parse("COPY", &raw(&["--link=false"]), SPEC).expect("ok").bool("link"));
        let e = |v: &[&str]| Flags::parse("COPY", &raw(v), SPEC).expect_err("bad");
        assert_eq!(e(&["--nope"]), "COPY: unknown flag: --nope");
        assert_eq!(e(&["--from=a", "--from=b"]), "COPY: duplicate flag specified: --from");
        assert_eq!(e(&["--from"]), "COPY: missing a value on flag: --from");
        assert_eq!(e(&["--link=maybe"]), "COPY: expecting boolean value for flag --link, not: maybe");
    }
}
