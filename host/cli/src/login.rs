//! `kiln login [REGISTRY] [-u USER] [-p PASSWORD | --password-stdin] [--authfile FILE]` and
//! `kiln logout [REGISTRY] [--authfile FILE]`: credentials checked against the registry, then
//! saved in kiln's auth file when one is named or exists, else in Docker's `config.json` (or
//! the credential helper either configures); see [`kiln_registry::credentials`] for the rule.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_registry::{AuthFiles, Credentials, DockerConfig, Settings};

#[derive(Args)]
pub struct LoginArgs {
    /// User name
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password (prefer --password-stdin: command lines are visible to other users)
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    password_stdin: bool,
    /// Save to this file (default: $REGISTRY_AUTH_FILE, else ~/.config/kiln/auth.json if it exists, else Docker's config.json)
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Registry (default: Docker Hub)
    server: Option<String>,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// Remove from this file (default: the file kiln login saves to)
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Registry (default: Docker Hub)
    server: Option<String>,
}

/// The file login saves to (and logout removes from), loaded.
fn config(files: &AuthFiles) -> Result<DockerConfig> {
    Ok(DockerConfig::load(&files.login_file()?)?)
}

fn read_line(what: &str) -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).with_context(|| format!("reading the {what} from stdin"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Prompts for a password on the terminal with echo off (`stty -echo`, restored after).
fn read_password() -> Result<String> {
    let stty = |arg: &str| std::process::Command::new("stty").arg(arg).stdin(std::process::Stdio::inherit()).status();
    eprint!("Password: ");
    let echo_off = stty("-echo").is_ok_and(|s| s.success());
    let line = read_line("password");
    if echo_off {
        let _ = stty("echo");
        eprintln!();
    }
    line
}

pub fn login(args: LoginArgs) -> Result<()> {
    let domain = kiln_registry::login::registry_domain(args.server.as_deref())?;
    let stdin_tty = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if stdin_tty && !args.password_stdin => {
            eprint!("Username: ");
            read_line("user name")?
        }
        None => bail!("a user name is required: use -u USER"),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => read_line("password")?,
        (None, false) if stdin_tty => read_password()?,
        (None, false) => bail!("a password is required: use --password-stdin (e.g. `echo $TOKEN | kiln login -u USER --password-stdin`)"),
    };
    if username.is_empty() || password.is_empty() {
        bail!("user name and password must not be empty");
    }
    let creds = Credentials { username, password };
    let settings = Settings::load_default()?;
    kiln_registry::login::check_credentials(&domain, &settings, creds.clone()).with_context(|| format!("login to {domain} failed"))?;
    let mut cfg = config(&AuthFiles::locate(args.authfile.as_deref()))?;
    cfg.store(&domain, &creds).with_context(|| format!("saving credentials in {}", cfg.path().display()))?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(args: LogoutArgs) -> Result<()> {
    let domain = kiln_registry::login::registry_domain(args.server.as_deref())?;
    let files = AuthFiles::locate(args.authfile.as_deref());
    let mut cfg = config(&files)?;
    if cfg.erase(&domain).with_context(|| format!("removing credentials from {}", cfg.path().display()))? {
        println!("Removing login credentials for {domain}");
    } else {
        println!("Not logged in to {domain}");
    }
    // Another file kiln reads may still log it in: say so rather than leave it silently.
    for other in files.files().into_iter().filter(|p| *p != cfg.path()) {
        if DockerConfig::load(other).and_then(|c| c.credentials(&domain)).is_ok_and(|c| c.is_some()) {
            eprintln!("kiln: note: {} still has credentials for {domain}, which kiln uses", other.display());
        }
    }
    Ok(())
}
