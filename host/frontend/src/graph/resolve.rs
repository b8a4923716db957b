//! Resolving a [`Dockerfile`] for one build: global ARGs and predefined platform args, FROM
//! expansion, stage references, `--target` pruning and unused build-arg warnings.
//!
//! ARG scoping follows BuildKit: a global ARG is visible only in FROM lines until a stage
//! re-declares it (`ARG NAME` without a default then takes the global value); a `--build-arg`
//! overrides any default; predefined args (`TARGETPLATFORM`, `BUILDARCH`, ...) are global and
//! must be declared in a stage too; a stage's ENV is inherited by stages built FROM it, its ARGs
//! are not.

use std::collections::{BTreeMap, BTreeSet};

use super::platform::{is_platform_arg, Platform, PROXY_ARGS};
use super::{Dockerfile, Stage};
use crate::command::{Command, Located};
use crate::shell::Lexer;
use crate::ParseError;

/// Options of one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    pub build_args: BTreeMap<String, String>,
    /// Stage to build (default: the last one).
    pub target: Option<String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::linux_amd64(),
            build_platform: Platform::linux_amd64(),
        }
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageBase {
    Scratch,
    /// Another stage of the Dockerfile, by index.
    Stage(usize),
    /// An image reference (expanded), resolved by the caller.
    Image(String),
}

/// A stage ready to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedStage {
    pub index: usize,
    pub name: Option<String>,
    pub base: StageBase,
    /// `FROM --platform`, expanded.
    pub platform: Option<String>,
    /// Line of the FROM.
    pub line: usize,
    /// Commands after FROM, unexpanded.
    pub commands: Vec<Located>,
    /// Stages this one needs (base, COPY --from, RUN --mount from=), ascending.
    pub deps: Vec<usize>,
    /// Images named by COPY --from / RUN --mount from= that are not stages.
    pub external_images: Vec<String>,
    /// Values of the global and predefined args, for ARGs this stage re-declares without default.
    pub global_args: Vec<(String, String)>,
}

/// The stages one build needs, dependencies before the stages that use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildGraph {
    pub stages: Vec<ResolvedStage>,
    /// Index (in the Dockerfile) of the stage that is the build's result.
    pub target: usize,
    pub warnings: Vec<String>,
}

impl BuildGraph {
    /// The resolved stage with this Dockerfile index.
    pub fn stage(&self, index: usize) -> Option<&ResolvedStage> {
        self.stages.iter().find(|s| s.index == index)
    }
}

/// Per-stage facts gathered while walking every stage.
#[derive(Clone)]
struct Walked {
    base: StageBase,
    platform: Option<String>,
    deps: BTreeSet<usize>,
    external: Vec<String>,
    env: Vec<(String, String)>,
    consumed: BTreeSet<String>,
}

impl Dockerfile {
    /// Resolves the graph for one build.
    pub fn resolve(&self, opts: &BuildOptions) -> Result<BuildGraph, ParseError> {
        let lx = Lexer::new(self.escape);
        let mut global: Vec<(String, String)> = opts.target_platform.args("TARGET");
        global.extend(opts.build_platform.args("BUILD"));
        let mut global_consumed = BTreeSet::new();
        for located in &self.global_args {
            let Command::Arg(defs) = &located.command else { continue };
            for d in defs {
                let value = match (opts.build_args.get(&d.name), &d.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(def)) => Some(lx.process_word(def, &global).map_err(|e| ParseError::new(located.line, e.to_string()))?),
                    (None, None) => None,
                };
                if let Some(v) = value {
                    global.push((d.name.clone(), v));
                }
            }
        }
        let mut walked: Vec<Option<Walked>> = vec![None; self.stages.len()];
        for i in 0..self.stages.len() {
            self.walk(i, &mut walked, &mut Vec::new(), &global, opts, &lx, &mut global_consumed)?;
        }
        let walked: Vec<Walked> = walked.into_iter().flatten().collect();
        let target = match &opts.target {
            Some(t) => self.stage(t).map(|s| s.index).ok_or_else(|| {
                ParseError::new(self.stages[0].from.line, format!("target stage {} could not be found", crate::ast::go_quote(t)))
            })?,
            None => self.stages.len() - 1,
        };
        let order = self.build_order(target, &walked)?;
        let mut consumed = BTreeSet::new();
        let mut stages = Vec::new();
        for &i in &order {
            let (stage, w) = (&self.stages[i], &walked[i]);
            consumed.extend(w.consumed.iter().cloned());
            stages.push(ResolvedStage {
                index: i,
                name: stage.name.clone(),
                base: w.base.clone(),
                platform: w.platform.clone(),
                line: stage.from.line,
                commands: stage.commands.clone(),
                deps: w.deps.iter().copied().collect(),
                external_images: w.external.clone(),
                global_args: global.clone(),
            });
        }
        consumed.extend(global_consumed);
        let unused: Vec<&str> = opts
            .build_args
            .keys()
            .map(String::as_str)
            .filter(|k| !consumed.contains(*k) && !PROXY_ARGS.contains(k) && !is_platform_arg(k))
            .collect();
        let mut warnings = Vec::new();
        if !unused.is_empty() {
            warnings.push(format!("[Warning] One or more build-args [{}] were not consumed", unused.join(" ")));
        }
        Ok(BuildGraph { stages, target, warnings })
    }

    /// Dependencies first, each stage once; a cycle is an error.
    fn build_order(&self, target: usize, walked: &[Walked]) -> Result<Vec<usize>, ParseError> {
        fn visit(d: &Dockerfile, i: usize, walked: &[Walked], state: &mut [u8], out: &mut Vec<usize>) -> Result<(), ParseError> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let s = &d.stages[i];
                    let name = s.name.clone().unwrap_or_else(|| i.to_string());
                    return Err(ParseError::new(s.from.line, format!("circular dependency detected on stage: {name}")));
                }
                _ => {}
            }
            state[i] = 1;
            for &dep in &walked[i].deps {
                visit(d, dep, walked, state, out)?;
            }
            state[i] = 2;
            out.push(i);
            Ok(())
        }
        let mut state = vec![0u8; self.stages.len()];
        let mut out = Vec::new();
        visit(self, target, walked, &mut state, &mut out)?;
        Ok(out)
    }

    /// Walks stage `i` (its base first): base, platform, ENV/ARG values, references.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        i: usize,
        done: &mut Vec<Option<Walked>>,
        chain: &mut Vec<usize>,
        global: &[(String, String)],
        opts: &BuildOptions,
        lx: &Lexer,
        global_consumed: &mut BTreeSet<String>,
    ) -> Result<(), ParseError> {
        if done[i].is_some() {
            return Ok(());
        }
        let stage: &Stage = &self.stages[i];
        let line = stage.from.line;
        if chain.contains(&i) {
            let name = stage.name.clone().unwrap_or_else(|| i.to_string());
            return Err(ParseError::new(line, format!("circular dependency detected on stage: {name}")));
        }
        chain.push(i);
        let err = |l: usize, m: String| ParseError::new(l, m);
        let Command::From(from) = &stage.from.command else { return Err(err(line, "stage without FROM".into())) };
        let (image, used) = lx.process_word_with_matches(&from.image, &global.to_vec()).map_err(|e| err(line, e.to_string()))?;
        global_consumed.extend(used);
        if image.is_empty() {
            return Err(err(line, format!("base name ({}) should not be blank", from.image)));
        }
        let platform = match &from.platform {
            Some(p) => {
                let (p, used) = lx.process_word_with_matches(p, &global.to_vec()).map_err(|e| err(line, e.to_string()))?;
                global_consumed.extend(used);
                Some(p)
            }
            None => None,
        };
        let by_name = |name: &str| self.stages.iter().find(|s| s.name.as_deref() == Some(name) && s.index != i).map(|s| s.index);
        let lower = image.to_ascii_lowercase();
        let base = if lower == "scratch" {
            StageBase::Scratch
        } else if let Some(j) = by_name(&lower) {
            StageBase::Stage(j)
        } else if stage.name.as_deref() == Some(lower.as_str()) {
            return Err(err(line, format!("circular dependency detected on stage: {lower}")));
        } else {
            StageBase::Image(image)
        };
        let mut deps = BTreeSet::new();
        let mut env = match base {
            StageBase::Stage(j) => {
                deps.insert(j);
                self.walk(j, done, chain, global, opts, lx, global_consumed)?;
                done[j].as_ref().map(|w| w.env.clone()).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let mut external = Vec::new();
        let mut consumed = BTreeSet::new();
        for c in &stage.commands {
            let word = |s: &str, env: &Vec<(String, String)>| lx.process_word(s, env).map_err(|e| err(c.line, e.to_string()));
            let mut refs = Vec::new();
            match &c.command {
                Command::Arg(defs) => {
                    for d in defs {
                        consumed.insert(d.name.clone());
                        let value = match (opts.build_args.get(&d.name), &d.default) {
                            (Some(v), _) => Some(v.clone()),
                            (None, Some(def)) => Some(word(def, &env)?),
                            (None, None) => global.iter().rev().find(|(k, _)| *k == d.name).map(|(_, v)| v.clone()),
                        };
                        if let Some(v) = value {
                            env.push((d.name.clone(), v));
                        }
                    }
                }
                Command::Env(pairs) => {
                    for (k, v) in pairs {
                        let (k, v) = (word(k, &env)?, word(v, &env)?);
                        env.push((k, v));
                    }
                }
                Command::Copy(cp) => refs.extend(cp.from.iter().cloned()),
                Command::Run(r) => refs.extend(r.mounts.iter().filter_map(|m| m.from.clone())),
                _ => {}
            }
            for r in refs {
                let r = word(&r, &env)?;
                let lower = r.to_ascii_lowercase();
                let index = match lower.parse::<usize>() {
                    Ok(n) if n < self.stages.len() => Some(n),
                    Ok(_) => return Err(err(c.line, format!("invalid from flag value {r}: no stage with that index"))),
                    Err(_) if stage.name.as_deref() == Some(lower.as_str()) => Some(i),
                    Err(_) => by_name(&lower),
                };
                match index {
                    Some(n) if n == i => return Err(err(c.line, format!("circular dependency detected on stage: {lower}"))),
                    Some(n) => {
                        deps.insert(n);
                    }
                    None => external.push(r),
                }
            }
        }
        chain.pop();
        done[i] = Some(Walked { base, platform, deps, external, env, consumed });
        Ok(())
    }
}
