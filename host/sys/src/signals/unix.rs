//! Unix: signal-hook's iterator on a thread.

use std::sync::mpsc::{self, Receiver};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};

use super::{Event, LINUX_SIGHUP, LINUX_SIGINT, LINUX_SIGTERM};

/// Starts delivering events (stops only when `stops`, resizes only when `resize`); `None` if
/// no handler could be set, in which case the default actions still apply.
pub fn watch(stops: bool, resize: bool) -> Option<Receiver<Event>> {
    let mut wanted = if stops { vec![SIGINT, SIGTERM, SIGHUP] } else { vec![] };
    if resize {
        wanted.push(SIGWINCH);
    }
    let mut signals = signal_hook::iterator::Signals::new(&wanted).ok()?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("kiln-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let event = match sig {
                    SIGWINCH => Event::Resize,
                    SIGHUP => Event::Stop(LINUX_SIGHUP),
                    SIGTERM => Event::Stop(LINUX_SIGTERM),
                    _ => Event::Stop(LINUX_SIGINT),
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        })
        .ok()?;
    Some(rx)
}
