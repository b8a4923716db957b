//! `kiln-guest-agent`: PID 1 (`/init`) of the kiln build guest.
//!
//! Sets up the minimal system ([`init`]), opens the host connection named on the kernel command
//! line ([`cmdline`], [`transport`]) and serves the kiln protocol ([`server`]): receiving tars
//! ([`receive`]), mounting overlays ([`mounts`]), running build steps ([`run`]) and diffing
//! upper dirs into layers ([`diff`]). As PID 1 it never exits: a fatal error is logged to the
//! console and the machine powers off.
//!
//! Outside a VM (not PID 1) it skips system setup and takes the command line from its first
//! argument, e.g. `kiln-guest-agent kiln.transport=vsock:1024`, which helps local debugging.

mod binfmt;
mod cmdline;
mod dhcp;
mod copyup;
mod diff;
mod error;
mod forward;
mod fresh;
mod fsat;
mod init;
mod log;
mod mounts;
mod net;
mod reaper;
mod receive;
mod run;
mod safepath;
mod splice;
mod server;
mod transport;
mod udp;
mod xattr;

#[cfg(test)]
mod root_tests;

use std::panic::{catch_unwind, AssertUnwindSafe};

use kiln_protocol::Mux;

use crate::error::{Context, Error, Result};
use crate::log::info;

fn main() {
    let pid1 = std::process::id() == 1;
    if pid1 {
        if let Err(e) = init::setup_system() {
            init::fatal(&e);
        }
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| serve(pid1)));
    match outcome {
        Ok(Ok(())) => info!("host connection closed"),
        Ok(Err(e)) => info!("fatal: {e}"),
        Err(_) => info!("fatal: the agent panicked"),
    }
    if pid1 {
        init::power_off();
    }
    std::process::exit(1);
}

fn serve(pid1: bool) -> Result<()> {
    let text = if pid1 {
        std::fs::read_to_string("/proc/cmdline").ctx(|| "read /proc/cmdline".to_string())?
    } else {
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    };
    let options = cmdline::parse(&text).map_err(Error::msg)?;
    log::set_debug(options.debug);
    init::set_reboot_to_exit(options.reboot_to_exit);
    if let (true, Some(secs)) = (pid1, options.host_time) {
        if let Err(e) = init::set_clock(secs) {
            info!("could not set the clock from kiln.time: {e}");
        }
    }
    if pid1 {
        if let Err(e) = net::setup(options.net.as_ref()) {
            info!("network setup: {e} (RUN steps get loopback only)");
        }
    }
    info!(
        "kiln guest agent {} starting (transport {:?})",
        env!("CARGO_PKG_VERSION"),
        options.transport
    );
    // Hash the agent binary while the host connects, not inside the first Hello.
    let _ = std::thread::Builder::new().name("kiln-build-id".into()).spawn(|| server::build_id().len());
    let reaper = reaper::Reaper::start().ctx(|| "start the reaper thread".to_string())?;
    let conn = transport::connect(&options.transport)?;
    match conn.writer.try_clone() {
        Ok(dup) => splice::init(dup.into()),
        Err(e) => info!("no zero-copy output (dup of the connection: {e})"),
    }
    let (mux, requests) = Mux::agent(conn.reader, conn.writer);
    server::Server::new(mux, reaper, init::power_off).serve(requests);
    Ok(())
}
