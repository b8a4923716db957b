//! Build checks (BuildKit's `# check=` linter rules) over a parsed Dockerfile, and the
//! `# check=skip=...;error=true` directive that selects them.
//!
//! Checks never change what is built: they are warnings the caller prints, or errors when
//! the directive says `error=true`. Implemented rules: StageNameCasing, FromAsCasing,
//! ReservedStageName, ConsistentInstructionCasing, JSONArgsRecommended, MaintainerDeprecated,
//! WorkdirRelativePath, MultipleInstructionsDisallowed, LegacyKeyValueFormat,
//! NoEmptyContinuation, UndefinedArgInFrom.

use std::collections::BTreeSet;

use crate::ast::{Ast, Node};
use crate::graph::is_platform_arg;
use crate::shell::Lexer;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    pub rule: &'static str,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Lint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dockerfile:{}: {}: {}", self.line, self.rule, self.message)
    }
}

/// The `# check=` directive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Rules to skip (`all` skips every rule).
    pub skip: BTreeSet<String>,
    pub skip_all: bool,
    /// Findings fail the build.
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut c = Self::default();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("invalid check directive part {part:?}: expected key=value"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            c.skip_all = true;
                        } else {
                            c.skip.insert(rule.to_string());
                        }
                    }
                }
                "error" => {
                    c.error = match v.trim().to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        other => return Err(format!("invalid check directive: error={other}: expected true or false")),
                    }
                }
                "experimental" => {}
                other => return Err(format!("invalid check directive: unknown key {other:?}")),
            }
        }
        Ok(c)
    }

    fn enabled(&self, rule: &str) -> bool {
        !self.skip_all && !self.skip.contains(rule)
    }
}

fn is_lower(s: &str) -> bool {
    s == s.to_lowercase()
}

/// Runs every enabled check.
pub fn lint(ast: &Ast) -> Result<Vec<Lint>, String> {
    let config = match &ast.directives.check {
        Some(s) => CheckConfig::parse(s)?,
        None => CheckConfig::default(),
    };
    let mut out = Vec::new();
    let mut push = |rule: &'static str, line: usize, message: String| {
        if config.enabled(rule) {
            out.push(Lint { rule, line, message });
        }
    };
    let upper = ast.nodes.iter().filter(|n| n.keyword == n.keyword.to_uppercase()).count();
    let majority_upper = upper * 2 >= ast.nodes.len();
    let mut global_args: BTreeSet<String> = BTreeSet::new();
    let mut in_stage = false;
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    let lx = Lexer::new(ast.escape);
    for w in &ast.warnings {
        if w.starts_with("[WARNING]: Empty continuation line found in") {
            push("NoEmptyContinuation", ast.nodes.first().map_or(1, |n| n.start_line), "Empty continuation line".into());
        }
    }
    for n in &ast.nodes {
        let kw = n.command();
        let line = n.start_line;
        let casing_ok = if majority_upper { n.keyword == kw } else { is_lower(&n.keyword) };
        if !casing_ok {
            let case = if majority_upper { "uppercase" } else { "lowercase" };
            push(
                "ConsistentInstructionCasing",
                line,
                format!("Command '{}' should match the case of the command majority ({case})", n.keyword),
            );
        }
        match kw.as_str() {
            "FROM" => {
                in_stage = true;
                counts.clear();
                from_checks(n, &mut push);
                if let Some(image) = n.args.first() {
                    let mut undefined = BTreeSet::new();
                    let env: Vec<(String, String)> = global_args.iter().map(|a| (a.clone(), String::new())).collect();
                    if let Ok((_, used)) = lx.process_word_with_matches(image, &env) {
                        for name in vars_in(image) {
                            if !used.contains(&name) && !is_platform_arg(&name) {
                                undefined.insert(name);
                            }
                        }
                    }
                    for name in undefined {
                        push("UndefinedArgInFrom", line, format!("FROM argument '{name}' is not declared"));
                    }
                }
            }
            "ARG" if !in_stage => {
                for w in &n.args {
                    global_args.insert(w.split('=').next().unwrap_or_default().to_string());
                }
            }
            "CMD" | "ENTRYPOINT" if !n.json && !n.args.is_empty() => push(
                "JSONArgsRecommended",
                line,
                format!("JSON arguments recommended for {kw} to prevent unintended behavior related to OS signals"),
            ),
            "MAINTAINER" => push("MaintainerDeprecated", line, "Maintainer instruction is deprecated in favor of using label".into()),
            "WORKDIR" => {
                if let Some(dir) = n.args.first().filter(|d| !d.starts_with('/') && !d.starts_with('$')) {
                    push(
                        "WorkdirRelativePath",
                        line,
                        format!("Relative workdir '{dir}' can have unexpected results if the base image changes"),
                    );
                }
            }
            "ENV" | "LABEL" if n.args.len() == 3 && n.args[2].is_empty() => {
                push("LegacyKeyValueFormat", line, format!("\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"))
            }
            _ => {}
        }
        if let Some(rule_kw) = ["CMD", "ENTRYPOINT", "HEALTHCHECK"].iter().find(|k| **k == kw) {
            match counts.iter_mut().find(|(k, _)| k == rule_kw) {
                Some((_, c)) => {
                    *c += 1;
                    push(
                        "MultipleInstructionsDisallowed",
                        line,
                        format!("Multiple {kw} instructions should not be used in the same stage because only the last one will be used"),
                    );
                }
                None => counts.push((rule_kw, 1)),
            }
        }
    }
    if config.error && !out.is_empty() {
        let lines: Vec<String> = out.iter().map(|l| l.to_string()).collect();
        return Err(format!("lint violation found for rules: {}", lines.join("; ")));
    }
    Ok(out)
}

fn from_checks(n: &Node, push: &mut impl FnMut(&'static str, usize, String)) {
    let line = n.start_line;
    if let [_, as_kw, name] = n.args.as_slice() {
        if !is_lower(name) {
            push("StageNameCasing", line, format!("Stage name '{name}' should be lowercase"));
        }
        if name.eq_ignore_ascii_case("scratch") || name.eq_ignore_ascii_case("context") {
            push("ReservedStageName", line, format!("'{}' is reserved and should not be used as a stage name", name.to_lowercase()));
        }
        let from_upper = n.keyword == n.keyword.to_uppercase();
        let as_upper = *as_kw == as_kw.to_uppercase();
        if from_upper != as_upper {
            push("FromAsCasing", line, format!("'{as_kw}' and '{}' keywords' casing do not match", n.keyword));
        }
    }
}

/// Names of the variables a word refers to (`$A`, `${B}`, `${C:-x}`).
fn vars_in(word: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = word.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' {
            i += 2;
            continue;
        }
        if chars[i] == '$' {
            let start = if chars.get(i + 1) == Some(&'{') { i + 2 } else { i + 1 };
            let name: String = chars[start.min(chars.len())..].iter().take_while(|c| c.is_alphanumeric() || **c == '_').collect();
            if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
                out.push(name.clone());
            }
            i = start + name.len();
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<(&'static str, usize)> {
        let ast = crate::ast::parse(text).expect("parse");
        lint(&ast).expect("lint").into_iter().map(|l| (l.rule, l.line)).collect()
    }

    #[test]
    fn each_rule_fires() {
        assert_eq!(rules("FROM a AS Build\n"), vec![("StageNameCasing", 1)]);
        assert_eq!(rules("FROM a as b\n"), vec![("FromAsCasing", 1)]);
        assert_eq!(rules("FROM a AS scratch\n"), vec![("ReservedStageName", 1)]);
        assert_eq!(rules("FROM a\nrun x\nRUN y\n"), vec![("ConsistentInstructionCasing", 2)]);
        assert_eq!(rules("FROM a\nCMD echo hi\n"), vec![("JSONArgsRecommended", 2)]);
        assert_eq!(rules("FROM a\nMAINTAINER me\n"), vec![("MaintainerDeprecated", 2)]);
        assert_eq!(rules("FROM a\nWORKDIR app\n"), vec![("WorkdirRelativePath", 2)]);
        assert_eq!(rules("FROM a\nCMD [\"a\"]\nCMD [\"b\"]\nFROM b\nCMD [\"c\"]\n"), vec![("MultipleInstructionsDisallowed", 3)]);
        assert_eq!(rules("FROM a\nENV A b\nLABEL x=y\n"), vec![("LegacyKeyValueFormat", 2)]);
        assert_eq!(
            rules("ARG V\nFROM img:$V\nFROM img:${NOPE:-x}\nFROM --platform=$BUILDPLATFORM img:$TARGETARCH\n"),
            vec![("UndefinedArgInFrom", 3)]
        );
        assert_eq!(rules("FROM a\nRUN x \\\n\n y\n"), vec![("NoEmptyContinuation", 1)]);
        assert!(rules("from a as b\nrun x\ncmd [\"y\"]\n").is_empty());
    }

    #[test]
    fn the_check_directive() {
        assert!(rules("# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM a\nCMD x\nMAINTAINER me\n").is_empty());
        assert!(rules("# check=skip=all\nFROM a AS B\n").is_empty());
        let ast = crate::ast::parse("# check=error=true\nFROM a\nCMD x\n").expect("parse");
        let e = lint(&ast).expect_err("error=true");
        assert!(e.contains("Dockerfile:3: JSONArgsRecommended"), "{e}");
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert!(CheckConfig::parse("nonsense").is_err());
        assert_eq!(CheckConfig::parse("skip=A, B ;error=false").expect("ok").skip.len(), 2);
    }
}
