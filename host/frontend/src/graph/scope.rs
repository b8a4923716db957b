//! The variables of one stage while it executes: what each instruction expands with, what a
//! RUN process sees, and which args its history line records.
//!
//! BuildKit's rules: ARG values exist only from their declaration on, and only in the stage
//! that declares them; an `ENV` of the same name always wins over an ARG; RUN processes get
//! the image's ENV plus the ARGs in scope (and any proxy build args), none of which are
//! persisted in the image config; the history of a RUN lists the ARGs in scope as
//! `RUN |N K=V ...`.

use super::platform::PROXY_ARGS;
use super::resolve::{BuildOptions, ResolvedStage};
use crate::command::ArgDef;
use crate::shell::{Env, Lexer};

/// The ARG scope of a stage being executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    build_args: Vec<(String, String)>,
    global: Vec<(String, String)>,
    /// Declared args, in declaration order (a redeclaration replaces in place); None when
    /// declared without any value.
    args: Vec<(String, Option<String>)>,
}

fn set<V>(list: &mut Vec<(String, V)>, k: &str, v: V) {
    match list.iter_mut().find(|(n, _)| n == k) {
        Some(slot) => slot.1 = v,
        None => list.push((k.to_string(), v)),
    }
}

impl Scope {
    /// The scope at the start of `stage`: no ARG declared yet.
    pub fn new(stage: &ResolvedStage, opts: &BuildOptions) -> Self {
        Self {
            build_args: opts.build_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            global: stage.global_args.clone(),
            args: vec![],
        }
    }

    /// Applies an `ARG` instruction. `config_env` is the image's ENV at that point (defaults
    /// are expanded with it and the args declared so far).
    pub fn declare(&mut self, defs: &[ArgDef], lexer: &Lexer, config_env: &[(String, String)]) -> Result<(), String> {
        for d in defs {
            let value = match (self.build_args.iter().find(|(k, _)| *k == d.name), &d.default) {
                (Some((_, v)), _) => Some(v.clone()),
                (None, Some(def)) => Some(lexer.process_word(def, &self.expansion_env(config_env)).map_err(|e| e.to_string())?),
                (None, None) => self.global.iter().rev().find(|(k, _)| *k == d.name).map(|(_, v)| v.clone()),
            };
            set(&mut self.args, &d.name, value);
        }
        Ok(())
    }

    /// What instructions expand with: the args in scope, overridden by the image's ENV.
    pub fn expansion_env(&self, config_env: &[(String, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self.args.iter().filter_map(|(k, v)| Some((k.clone(), v.clone()?))).collect();
        for (k, v) in config_env {
            set(&mut env, k, v.clone());
        }
        env
    }

    /// The environment of a RUN process (`K=V`): image ENV, then args in scope not shadowed
    /// by it, then proxy build args not otherwise set.
    pub fn run_env(&self, config_env: &[(String, String)]) -> Vec<String> {
        let mut env: Vec<(String, String)> = config_env.to_vec();
        let args = self.args.iter().filter_map(|(k, v)| Some((k.clone(), v.clone()?)));
        for (k, v) in args.chain(self.build_args.iter().filter(|(k, _)| PROXY_ARGS.contains(&k.as_str())).cloned()) {
            if env.lookup(&k).is_none() {
                env.push((k, v));
            }
        }
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The args a RUN's history line records (`RUN |N K=V ...`): every ARG declared so far,
    /// valued from ENV when ENV sets the same name, `K=` when it has no value (BuildKit's
    /// `runCommandString`).
    pub fn history_args(&self, config_env: &[(String, String)]) -> Vec<(String, String)> {
        self.args.iter().map(|(k, v)| (k.clone(), config_env.lookup(k).or_else(|| v.clone()).unwrap_or_default())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::parse_full;
    use std::collections::BTreeMap;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn arg_scope_rules() {
        let df = parse_full("ARG G=global\nFROM a\nARG G\nARG A=1 B=${A}2 C\nARG TARGETOS NOVALUE\n").expect("parse");
        let opts = BuildOptions {
            build_args: [("C", "from-cli"), ("HTTP_PROXY", "http://p"), ("UNUSED", "x")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..BuildOptions::default()
        };
        let graph = df.resolve(&opts).expect("resolve");
        let stage = &graph.stages[0];
        let mut scope = Scope::new(stage, &opts);
        let lx = Lexer::new('\\');
        let image_env = pairs(&[("PATH", "/bin"), ("A", "from-env")]);
        assert_eq!(scope.expansion_env(&image_env), image_env, "nothing declared yet");
        for c in &stage.commands {
            let crate::command::Command::Arg(defs) = &c.command else { panic!("only ARGs") };
            scope.declare(defs, &lx, &image_env).expect("declare");
        }
        let env = scope.expansion_env(&image_env);
        assert_eq!(env.lookup("G").as_deref(), Some("global"));
        assert_eq!(env.lookup("A").as_deref(), Some("from-env"), "ENV wins over ARG");
        assert_eq!(env.lookup("B").as_deref(), Some("from-env2"), "defaults expand with ENV winning");
        assert_eq!(env.lookup("C").as_deref(), Some("from-cli"));
        assert_eq!(env.lookup("TARGETOS").as_deref(), Some("linux"));
        assert_eq!(env.lookup("UNUSED"), None);
        assert_eq!(env.lookup("NOVALUE"), None);
        let run = scope.run_env(&image_env);
        assert!(run.contains(&"A=from-env".to_string()) && run.contains(&"G=global".to_string()));
        assert!(run.contains(&"HTTP_PROXY=http://p".to_string()));
        let hist: Vec<String> = scope.history_args(&image_env).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(hist, vec!["G=global", "A=from-env", "B=from-env2", "C=from-cli", "TARGETOS=linux", "NOVALUE="]);
        assert!(!run.iter().any(|e| e.starts_with("NOVALUE")));
    }
}
