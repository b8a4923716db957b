//! Variable expansion of a typed command, per BuildKit's rules for which fields expand
//! (see [`crate::shell::expands`]), followed by the checks that need expanded values.
//!
//! RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and MAINTAINER are left as written (RUN's mount
//! options excepted); ONBUILD triggers expand when they run in the child build, not here.

use super::{values, Command, CopyLike, Located, Source};
use crate::shell::{Env, Lexer};
use crate::ParseError;

type R<T> = Result<T, String>;

impl Located {
    /// The command with its variables expanded from `env`; errors carry the line.
    pub fn expand(&self, lexer: &Lexer, env: &dyn Env) -> Result<Located, ParseError> {
        let command = self.command.expand(lexer, env).map_err(|m| ParseError::new(self.line, m))?;
        Ok(Located { command, ..self.clone() })
    }
}

impl Command {
    /// Expands the fields BuildKit expands, then checks ports, signals and chmod modes.
    pub fn expand(&self, lx: &Lexer, env: &dyn Env) -> R<Command> {
        let w = |s: &str| lx.process_word(s, env).map_err(|e| e.to_string());
        let opt = |s: &Option<String>| s.as_deref().map(w).transpose();
        let pairs = |v: &[(String, String)]| v.iter().map(|(k, val)| Ok((w(k)?, w(val)?))).collect::<R<Vec<_>>>();
        Ok(match self {
            Command::From(f) => {
                let image = w(&f.image)?;
                if image.is_empty() {
                    return Err(format!("base name ({}) should not be blank", f.image));
                }
                Command::From(super::From { image, name: f.name.clone(), platform: opt(&f.platform)? })
            }
            Command::Env(p) => Command::Env(pairs(p)?),
            Command::Label(p) => Command::Label(pairs(p)?),
            Command::Arg(defs) => Command::Arg(
                defs.iter().map(|d| Ok(super::ArgDef { name: w(&d.name)?, default: opt(&d.default)? })).collect::<R<Vec<_>>>()?,
            ),
            Command::Add(c) => {
                let c = copy_like(c, lx, env)?;
                check_add(&c)?;
                Command::Add(c)
            }
            Command::Copy(c) => Command::Copy(copy_like(c, lx, env)?),
            Command::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    for word in lx.process_words(p, env).map_err(|e| e.to_string())? {
                        values::parse_port(&word)?;
                        out.push(word);
                    }
                }
                Command::Expose(out)
            }
            Command::Volume(v) => {
                let v = v.iter().map(|s| w(s)).collect::<R<Vec<_>>>()?;
                if v.iter().any(|s| s.trim().is_empty()) {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                Command::Volume(v)
            }
            Command::User(u) => Command::User(w(u)?),
            Command::Workdir(d) => Command::Workdir(w(d)?),
            Command::StopSignal(s) => {
                let s = w(s)?;
                values::check_signal(&s)?;
                Command::StopSignal(s)
            }
            Command::Run(r) => {
                let mut r = r.clone();
                for m in &mut r.mounts {
                    m.target = w(&m.target)?;
                    m.source = opt(&m.source)?;
                    m.from = opt(&m.from)?;
                    m.id = opt(&m.id)?;
                }
                Command::Run(r)
            }
            other => other.clone(),
        })
    }
}

/// ADD-only rules that need expanded values: `--checksum` only for remote sources.
fn check_add(c: &CopyLike) -> R<()> {
    if let Some(sum) = &c.checksum {
        let local = c.srcs.iter().any(|s| match s {
            Source::Path(p) => values::add_source_kind(p) == values::AddSourceKind::Local,
            Source::Inline(_) => true,
        });
        if local {
            return Err("checksum can't be specified for non-HTTP(S) sources".into());
        }
        if c.srcs.iter().all(|s| matches!(s, Source::Path(p) if values::add_source_kind(p) == values::AddSourceKind::Url)) {
            values::check_digest(sum)?;
        }
    }
    Ok(())
}

fn copy_like(c: &CopyLike, lx: &Lexer, env: &dyn Env) -> R<CopyLike> {
    let w = |s: &str| lx.process_word(s, env).map_err(|e| e.to_string());
    let opt = |s: &Option<String>| s.as_deref().map(w).transpose();
    let mut body_lexer = *lx;
    body_lexer.raw_quotes = true;
    body_lexer.raw_escapes = true;
    let srcs = c
        .srcs
        .iter()
        .map(|s| match s {
            Source::Path(p) => Ok(Source::Path(w(p)?)),
            Source::Inline(f) if f.expand => {
                let mut f = f.clone();
                f.data = body_lexer.process_word(&f.data, env).map_err(|e| e.to_string())?;
                Ok(Source::Inline(f))
            }
            inline => Ok(inline.clone()),
        })
        .collect::<R<Vec<_>>>()?;
    let chmod = opt(&c.chmod)?;
    if let Some(m) = &chmod {
        values::parse_chmod(m)?;
    }
    Ok(CopyLike {
        srcs,
        dst: w(&c.dst)?,
        from: opt(&c.from)?,
        chown: opt(&c.chown)?,
        chmod,
        exclude: c.exclude.iter().map(|e| w(e)).collect::<R<Vec<_>>>()?,
        checksum: opt(&c.checksum)?,
        ..c.clone()
    })
}
