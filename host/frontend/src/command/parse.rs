//! One parse function per keyword: syntax-tree [`Node`] in, [`Command`] out.

use super::flags::{Flags, Kind};
use super::{mount, values, ArgDef, Command, CopyLike, From, Health, InlineFile, Located, Network, Run, Security, Source};
use crate::ast::{chomp_heredoc_content, parse_heredoc_word, Ast, Node};
use crate::{ParseError, ShellOrExec};

type R<T> = Result<T, String>;

/// Types every instruction of a parsed Dockerfile.
pub fn parse_commands(ast: &Ast) -> Result<Vec<Located>, ParseError> {
    ast.nodes.iter().map(parse_command).collect()
}

/// Types one instruction.
pub fn parse_command(node: &Node) -> Result<Located, ParseError> {
    let command = command(node).map_err(|m| ParseError::new(node.start_line, m))?;
    Ok(Located { line: node.start_line, end_line: node.end_line, text: node.original.trim().to_string(), command })
}

fn command(node: &Node) -> R<Command> {
    let kw = node.command();
    match kw.as_str() {
        "FROM" => from(node),
        "RUN" => run(node),
        "CMD" => {
            no_flags(node)?;
            Ok(Command::Cmd(shell_or_exec(node)?))
        }
        "ENTRYPOINT" => {
            no_flags(node)?;
            Ok(Command::Entrypoint(shell_or_exec(node)?))
        }
        "ENV" | "LABEL" => {
            no_flags(node)?;
            let pairs = pairs(node)?;
            Ok(if kw == "ENV" { Command::Env(pairs) } else { Command::Label(pairs) })
        }
        "ARG" => arg(node),
        "ADD" | "COPY" => copy_like(node),
        "MAINTAINER" => Ok(Command::Maintainer(exactly_one(node)?)),
        "EXPOSE" => {
            no_flags(node)?;
            at_least_one(node)?;
            Ok(Command::Expose(node.args.clone()))
        }
        "VOLUME" => {
            no_flags(node)?;
            at_least_one(node)?;
            if node.args.iter().any(|v| v.trim().is_empty()) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            Ok(Command::Volume(node.args.clone()))
        }
        "USER" => Ok(Command::User(exactly_one(node)?)),
        "WORKDIR" => Ok(Command::Workdir(exactly_one(node)?)),
        "STOPSIGNAL" => Ok(Command::StopSignal(exactly_one(node)?)),
        "SHELL" => {
            no_flags(node)?;
            at_least_one(node)?;
            if !node.json {
                return Err("SHELL requires the arguments to be in JSON form".into());
            }
            Ok(Command::Shell(node.args.clone()))
        }
        "HEALTHCHECK" => healthcheck(node),
        "ONBUILD" => onbuild(node),
        _ => Err(format!("unknown instruction: {}", node.keyword)),
    }
}

fn no_flags(node: &Node) -> R<()> {
    Flags::parse(&node.command(), &node.flags, &[]).map(|_| ())
}

fn at_least_one(node: &Node) -> R<()> {
    if node.args.is_empty() {
        return Err(format!("{} requires at least one argument", node.command()));
    }
    Ok(())
}

fn exactly_one(node: &Node) -> R<String> {
    no_flags(node)?;
    match node.args.as_slice() {
        [one] if !one.is_empty() => Ok(one.clone()),
        _ => Err(format!("{} requires exactly one argument", node.command())),
    }
}

/// JSON form (an empty `[]` included) or shell form; no argument at all is an error.
fn shell_or_exec(node: &Node) -> R<ShellOrExec> {
    if node.json {
        return Ok(ShellOrExec::Exec(node.args.clone()));
    }
    match node.args.first() {
        Some(s) => Ok(ShellOrExec::Shell(s.clone())),
        None => Err(format!("{} requires at least one argument", node.command())),
    }
}

fn from(node: &Node) -> R<Command> {
    let flags = Flags::parse("FROM", &node.flags, &[("platform", Kind::String)])?;
    let (image, name) = match node.args.as_slice() {
        [image] => (image.clone(), None),
        [image, kw, name] if kw.eq_ignore_ascii_case("as") => {
            let name = name.to_ascii_lowercase();
            values::check_stage_name(&name)?;
            (image.clone(), Some(name))
        }
        _ => return Err("FROM requires either one or three arguments".into()),
    };
    Ok(Command::From(From { image, name, platform: flags.string("platform") }))
}

fn inline_files(node: &Node) -> Vec<InlineFile> {
    node.heredocs
        .iter()
        .map(|h| InlineFile {
            name: h.name.clone(),
            data: if h.chomp { chomp_heredoc_content(&h.content) } else { h.content.clone() },
            expand: h.expand,
        })
        .collect()
}

fn run(node: &Node) -> R<Command> {
    let spec = [("mount", Kind::Strings), ("network", Kind::String), ("security", Kind::String)];
    let flags = Flags::parse("RUN", &node.flags, &spec)?;
    let mounts = flags.strings("mount").iter().map(|m| mount::parse_mount(m)).collect::<R<Vec<_>>>()?;
    let network = match flags.string("network").as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => return Err(format!("network mode {other:?} not supported")),
    };
    let security = match flags.string("security").as_deref() {
        None | Some("sandbox") => Security::Sandbox,
        Some("insecure") => Security::Insecure,
        Some(other) => return Err(format!("security mode {other:?} not supported")),
    };
    let cmd = shell_or_exec(node)?;
    Ok(Command::Run(Run { cmd, heredocs: inline_files(node), mounts, network, security }))
}

fn pairs(node: &Node) -> R<Vec<(String, String)>> {
    if node.args.is_empty() {
        return Err(format!("{} requires at least one argument", node.command()));
    }
    let mut out = Vec::new();
    for triple in node.args.chunks(3) {
        let [k, v, ..] = triple else { return Err(format!("{}: malformed key/value list", node.command())) };
        if k.is_empty() {
            return Err(format!("{} names can not be blank", node.command()));
        }
        out.push((k.clone(), v.clone()));
    }
    Ok(out)
}

fn arg(node: &Node) -> R<Command> {
    no_flags(node)?;
    at_least_one(node)?;
    let mut defs = Vec::new();
    for w in &node.args {
        let (name, default) = match w.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (w.as_str(), None),
        };
        if name.is_empty() {
            return Err(format!("ARG names can not be blank: {w}"));
        }
        defs.push(ArgDef { name: name.to_string(), default });
    }
    Ok(Command::Arg(defs))
}

fn copy_like(node: &Node) -> R<Command> {
    let kw = node.command();
    let is_add = kw == "ADD";
    let mut spec = vec![("chown", Kind::String), ("chmod", Kind::String), ("link", Kind::Bool), ("exclude", Kind::Strings)];
    if is_add {
        spec.extend([("checksum", Kind::String), ("keep-git-dir", Kind::Bool)]);
    } else {
        spec.extend([("from", Kind::String), ("parents", Kind::Bool)]);
    }
    let flags = Flags::parse(&kw, &node.flags, &spec)?;
    let Some((dst, srcs)) = node.args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined"));
    };
    let mut heredocs = inline_files(node).into_iter();
    let mut sources = Vec::new();
    for s in srcs {
        let is_heredoc = !node.json && parse_heredoc_word(s).is_some();
        match (is_heredoc, is_heredoc.then(|| heredocs.next()).flatten()) {
            (true, Some(file)) => sources.push(Source::Inline(file)),
            _ => sources.push(Source::Path(s.clone())),
        }
    }
    if let Some(m) = flags.string("chmod").filter(|m| !m.contains('$')) {
        values::parse_chmod(&m).map_err(|e| format!("{kw}: {e}"))?;
    }
    Ok((if is_add { Command::Add } else { Command::Copy })(CopyLike {
        srcs: sources,
        dst: dst.clone(),
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        exclude: flags.strings("exclude"),
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
    }))
}

fn healthcheck(node: &Node) -> R<Command> {
    let spec = [
        ("interval", Kind::String),
        ("timeout", Kind::String),
        ("start-period", Kind::String),
        ("start-interval", Kind::String),
        ("retries", Kind::String),
    ];
    let flags = Flags::parse("HEALTHCHECK", &node.flags, &spec)?;
    let Some(typ) = node.args.first() else { return Err("HEALTHCHECK requires at least one argument".into()) };
    match typ.to_ascii_uppercase().as_str() {
        "NONE" => {
            if node.args.len() > 1 {
                return Err("HEALTHCHECK NONE takes no arguments".into());
            }
            Ok(Command::Healthcheck(Health::None))
        }
        "CMD" => {
            let rest = &node.args[1..];
            let test = match (node.json, rest) {
                (_, []) => return Err("Missing command after HEALTHCHECK CMD".into()),
                (true, args) => std::iter::once("CMD".to_string()).chain(args.iter().cloned()).collect(),
                (false, [cmd, ..]) => vec!["CMD-SHELL".to_string(), cmd.clone()],
            };
            let duration = |name: &str| -> R<Option<std::time::Duration>> {
                let Some(v) = flags.string(name) else { return Ok(None) };
                let d = values::parse_duration(&v).map_err(|e| format!("HEALTHCHECK --{name}: {e}"))?;
                if !d.is_zero() && d < std::time::Duration::from_millis(1) {
                    return Err(format!("HEALTHCHECK --{name} cannot be less than 1ms"));
                }
                Ok(Some(d))
            };
            let retries = match flags.string("retries") {
                None => None,
                Some(v) => Some(
                    v.parse::<i64>()
                        .map_err(|_| format!("HEALTHCHECK --retries: invalid number {v:?}"))
                        .and_then(|n| u32::try_from(n).map_err(|_| format!("--retries cannot be negative ({n})")))?,
                ),
            };
            Ok(Command::Healthcheck(Health::Check {
                test,
                interval: duration("interval")?,
                timeout: duration("timeout")?,
                start_period: duration("start-period")?,
                start_interval: duration("start-interval")?,
                retries,
            }))
        }
        other => Err(format!("Unknown type {} in HEALTHCHECK (try CMD)", crate::ast::go_quote(other))),
    }
}

fn onbuild(node: &Node) -> R<Command> {
    no_flags(node)?;
    let Some(sub) = &node.sub else { return Err("ONBUILD requires at least one argument".into()) };
    match sub.command().as_str() {
        "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        k @ ("FROM" | "MAINTAINER") => return Err(format!("{k} isn't allowed as an ONBUILD trigger")),
        _ => {}
    }
    let mut inner = (**sub).clone();
    inner.heredocs = node.heredocs.clone();
    let trigger = command(&inner)?;
    let mut expression = sub.original.trim().to_string();
    for h in &node.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Ok(Command::Onbuild { expression, trigger: Box::new(trigger) })
}

/// Parses the ONBUILD triggers of a base image (its config's `OnBuild` texts) for a stage
/// whose FROM is on `from_line`; they run right after the FROM, in order. Errors name the
/// FROM line and the trigger.
pub fn parse_onbuild_triggers(triggers: &[String], from_line: usize) -> Result<Vec<Located>, ParseError> {
    let mut out = Vec::new();
    for t in triggers {
        let fail = |m: String| ParseError::new(from_line, format!("ONBUILD trigger {}: {m}", crate::ast::go_quote(t)));
        let tree = crate::ast::parse(t).map_err(|e| fail(e.message))?;
        for node in &tree.nodes {
            match node.command().as_str() {
                "ONBUILD" => return Err(fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())),
                k @ ("FROM" | "MAINTAINER") => return Err(fail(format!("{k} isn't allowed as an ONBUILD trigger"))),
                _ => {}
            }
            let mut located = parse_command(node).map_err(|e| fail(e.message))?;
            located.line = from_line;
            located.end_line = from_line;
            out.push(located);
        }
    }
    Ok(out)
}
