//! `kiln`: the command line. Wiring only — parse arguments, open the store, call the layers
//! below, print results and one-line errors. No build or store logic lives here.

mod build;
mod builder;
mod container;
mod dockerfile;
mod doctor;
mod fileout;
mod history;
mod humanize;
mod image;
mod images;
mod import;
mod inspect;
mod load;
mod login;
mod output;
mod paths;
mod progress;
mod prune;
mod pull;
mod push;
mod rmi;
mod save;
mod stdout;
mod system;
mod tag;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", version, about = "Build and manage container images in a microVM, without a root daemon")]
struct Cli {
    /// Store directory (default: $KILN_ROOT, else $XDG_DATA_HOME/kiln)
    #[arg(long, global = true, env = "KILN_ROOT")]
    root: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Save images to a tar archive (OCI layout + docker manifest.json)
    Save(save::SaveArgs),
    /// List images
    Images(images::ImagesArgs),
    /// Manage images (ls, rm, prune, inspect, history, tag)
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Give an image another name
    Tag(tag::TagArgs),
    /// Remove images
    Rmi(rmi::RmiArgs),
    /// Show details of containers or images as JSON
    Inspect(inspect::InspectArgs),
    /// Show the history of an image
    History(history::HistoryArgs),
    /// Load images from a docker-archive or OCI archive (file or stdin)
    Load(load::LoadArgs),
    /// Download an image from a registry
    Pull(pull::PullArgs),
    /// Log in to a registry (credentials go to kiln's auth file or Docker's config.json)
    Login(login::LoginArgs),
    /// Log out from a registry
    Logout(login::LogoutArgs),
    /// Upload an image to a registry
    Push(push::PushArgs),
    /// Create a one-layer image from a root filesystem tarball
    Import(import::ImportArgs),
    /// Manage the store (check)
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Inspect a Dockerfile (`parse`: BuildKit's parser dump)
    Dockerfile(dockerfile::DockerfileArgs),
    /// Show what kiln found on this machine and which backend builds will use, with reasons
    Doctor,
    /// Manage the build cache (prune)
    #[command(subcommand)]
    Builder(builder::BuilderCommand),
    /// Run a command in a new container, in its own microVM
    Run(Box<container::run::RunArgs>),
    /// List containers
    Ps(container::ps::PsArgs),
    /// Stop running containers (stop signal, then SIGKILL after the timeout)
    Stop(container::stop::StopArgs),
    /// Send a signal to running containers
    Kill(container::stop::KillArgs),
    /// Start stopped containers
    Start(container::start::StartArgs),
    /// Stop and start containers
    Restart(container::stop::StopArgs),
    /// Remove containers
    Rm(container::rm::RmArgs),
    /// Show a container's output
    Logs(container::logs::LogsArgs),
    /// Run a command in a running container
    Exec(container::exec::ExecArgs),
    /// List a container's published ports
    Port(container::ps::PortArgs),
    /// Attach kiln's terminal to a running container (Ctrl-P Ctrl-Q detaches)
    Attach(container::attach::AttachArgs),
    /// List a container's processes
    Top(container::exec::TopArgs),
    /// Show the files a container changed (A added, C changed, D deleted)
    Diff(container::inspect::DiffArgs),
    /// Rename a container
    Rename(container::inspect::RenameArgs),
    /// Copy files between a container and the host
    Cp(container::cp::CpArgs),
    /// Wait for containers to stop and print their exit codes
    Wait(container::stop::WaitArgs),
    /// Create an image from a container's changes
    Commit(container::commit::CommitArgs),
    /// Manage containers (run, ls, stop, kill, start, restart, rm, logs, wait, commit, prune)
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// Manage named volumes (create, ls, rm, inspect)
    #[command(subcommand)]
    Volume(container::volume::VolumeCommand),
    /// The process that owns a detached container's VM (started by kiln itself)
    #[command(name = "__supervise", hide = true)]
    Supervise(container::SuperviseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Dockerfile(args) = cli.command {
        return match dockerfile::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    if let Command::Login(args) = cli.command {
        return login::login(args).map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS);
    }
    if let Command::Logout(args) = cli.command {
        return login::logout(args).map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS);
    }
    let root = match paths::store_root(cli.root) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    // Containers in the foreground handle their signals themselves (they go to the container).
    let command = match cli.command {
        Command::Run(args) => return container::run::run(&root, *args),
        Command::Start(args) => return container::start::run(&root, args),
        Command::Exec(args) => return container::exec::run(&root, args),
        Command::Top(args) => return container::exec::top(&root, args),
        Command::Attach(args) => return container::attach::run(&root, args),
        Command::Container(cmd) => return container::run_command(&root, cmd),
        other => other,
    };
    install_signal_handler();
    let result = match command {
        Command::Build(args) => build::run(&root, *args),
        Command::Save(args) => save::run(&root, args),
        Command::Images(args) => images::run(&root, args),
        Command::Image(cmd) => image::run(&root, cmd),
        Command::Tag(args) => tag::run(&root, args),
        Command::Rmi(args) => rmi::run(&root, args),
        Command::Inspect(args) => inspect::run(&root, args),
        Command::History(args) => history::run(&root, args),
        Command::Load(args) => load::run(&root, args),
        Command::Import(args) => import::run(&root, args),
        Command::Pull(args) => pull::run(&root, args),
        Command::Push(args) => push::run(&root, args),
        Command::System(cmd) => system::run(&root, cmd),
        Command::Doctor => doctor::run(&root),
        Command::Builder(cmd) => builder::run(&root, cmd),
        Command::Ps(args) => container::ps::run(&root, args),
        Command::Stop(args) => container::stop::stop(&root, args),
        Command::Kill(args) => container::stop::kill(&root, args),
        Command::Restart(args) => container::stop::restart(&root, args),
        Command::Rm(args) => container::rm::run(&root, args),
        Command::Logs(args) => container::logs::run(&root, args),
        Command::Port(args) => container::ps::port(&root, args),
        Command::Diff(args) => container::inspect::diff(&root, args),
        Command::Rename(args) => container::inspect::rename(&root, args),
        Command::Cp(args) => container::cp::run(&root, args),
        Command::Wait(args) => container::stop::wait(&root, args),
        Command::Commit(args) => container::commit::run(&root, args),
        Command::Supervise(args) => container::supervise(&root, args),
        Command::Volume(cmd) => container::volume::run(&root, cmd),
        // Handled above.
        Command::Dockerfile(_) | Command::Login(_) | Command::Logout(_) | Command::Run(_) | Command::Start(_) | Command::Exec(_) | Command::Top(_) | Command::Attach(_) | Command::Container(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    if kiln_sandbox::children::interrupted() {
        eprintln!("kiln: interrupted");
        return ExitCode::from(130);
    }
    eprintln!("kiln: error: {e:#}");
    ExitCode::FAILURE
}

/// On SIGINT/SIGTERM/SIGHUP: stop every VM at once (the build then fails on its dead agent
/// connection and unwinds, removing its temp files), and exit if unwinding takes too long.
fn install_signal_handler() {
    let Some(events) = kiln_sys::signals::watch(true, false) else {
        return; // Without a handler the default action still ends kiln; PDEATHSIG ends QEMU.
    };
    std::thread::spawn(move || {
        if events.recv().is_ok() {
            kiln_sandbox::children::kill_all();
            std::thread::sleep(std::time::Duration::from_secs(3));
            eprintln!("kiln: interrupted");
            std::process::exit(130);
        }
    });
}
