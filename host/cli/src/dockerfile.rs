//! `kiln dockerfile ...`: inspect how kiln reads a Dockerfile, without building anything.
//!
//! `kiln dockerfile parse FILE` prints the syntax tree in BuildKit's parser dump format, one
//! s-expression per instruction, so kiln's parser can be compared line for line with BuildKit's.
//! `-` reads the Dockerfile from stdin. Wiring only: the parsing lives in kiln-frontend.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

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
}

pub fn run(args: DockerfileArgs) -> anyhow::Result<()> {
    match args.command {
        DockerfileCommand::Parse { file, warnings } => {
            let text = read(&file)?;
            let ast = kiln_frontend::ast::parse(&text)?;
            if warnings {
                for w in &ast.warnings {
                    eprintln!("{w}");
                }
            }
            print!("{}", ast.dump());
            Ok(())
        }
    }
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the Dockerfile from stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}
