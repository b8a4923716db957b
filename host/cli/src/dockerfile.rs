//! `kiln dockerfile ...`: inspect how kiln reads a Dockerfile, without building anything.
//!
//! - `parse FILE` prints the syntax tree in BuildKit's parser dump format, one s-expression
//!   per instruction, so kiln's parser can be compared line for line with BuildKit's;
//! - `lint FILE` prints BuildKit's build-check findings (exit 1 under `# check=error=true`);
//! - `stages FILE [--target T] [--build-arg K=V]` prints the stages a build would run,
//!   dependencies first, with their bases.
//!
//! `-` reads the Dockerfile from stdin. Wiring only: the work lives in kiln-frontend.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kiln_frontend::graph::{BuildOptions, StageBase};

#[derive(Args)]
pub struct DockerfileArgs {
    #[command(subcommand)]
    command: DockerfileCommand,
}

#[derive(Subcommand)]
enum DockerfileCommand {
    /// Print the parse tree as BuildKit's parser dump (s-expressions)
    Parse {
        /// The Dockerfile (`-` for stdin)
        file: PathBuf,
        /// Also print parser warnings (on stderr)
        #[arg(long)]
        warnings: bool,
    },
    /// Run BuildKit's build checks
    Lint {
        /// The Dockerfile (`-` for stdin)
        file: PathBuf,
    },
    /// Print the stages a build needs, dependencies first
    Stages {
        /// The Dockerfile (`-` for stdin)
        file: PathBuf,
        /// Stage to build (default: the last)
        #[arg(long)]
        target: Option<String>,
        /// Build argument, KEY=VALUE (repeatable)
        #[arg(long = "build-arg", value_name = "KEY=VALUE")]
        build_args: Vec<String>,
        /// Target platform (os/arch[/variant])
        #[arg(long, default_value = "linux/amd64")]
        platform: String,
    },
}

pub fn run(args: DockerfileArgs) -> anyhow::Result<()> {
    match args.command {
        DockerfileCommand::Parse { file, warnings } => {
            let ast = kiln_frontend::ast::parse(&read(&file)?)?;
            if warnings {
                for w in &ast.warnings {
                    eprintln!("{w}");
                }
            }
            print!("{}", ast.dump());
        }
        DockerfileCommand::Lint { file } => {
            let ast = kiln_frontend::ast::parse(&read(&file)?)?;
            match kiln_frontend::lint::lint(&ast) {
                Ok(findings) => findings.iter().for_each(|l| println!("{l}")),
                Err(e) => bail!("{e}"),
            }
        }
        DockerfileCommand::Stages { file, target, build_args, platform } => {
            let df = kiln_frontend::parse_full(&read(&file)?)?;
            let mut args = BTreeMap::new();
            for a in build_args {
                let (k, v) = a.split_once('=').with_context(|| format!("--build-arg {a:?}: expected KEY=VALUE"))?;
                args.insert(k.to_string(), v.to_string());
            }
            let platform = kiln_frontend::graph::Platform::parse(&platform).map_err(anyhow::Error::msg)?;
            let opts = BuildOptions { build_args: args, target, target_platform: platform, ..BuildOptions::default() };
            let graph = df.resolve(&opts)?;
            for w in &graph.warnings {
                eprintln!("{w}");
            }
            for s in &graph.stages {
                let name = s.name.clone().unwrap_or_else(|| format!("#{}", s.index));
                let base = match &s.base {
                    StageBase::Scratch => "scratch".to_string(),
                    StageBase::Stage(i) => format!("stage #{i}"),
                    StageBase::Image(r) => format!("image {r}"),
                };
                let mark = if s.index == graph.target { " (target)" } else { "" };
                println!("{name}{mark}: line {}, from {base}, {} instructions, needs {:?}", s.line, s.commands.len(), s.deps);
            }
        }
    }
    Ok(())
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the Dockerfile from stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}
