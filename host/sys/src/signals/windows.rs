//! Windows (experimental: compiled and built under Wine, not yet used on a Windows console):
//! a console control handler (`SetConsoleCtrlHandler`) fans Ctrl-C, Ctrl-Break and console
//! close out to every watcher; a thread polls the console size for resizes.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use windows_sys::core::BOOL;
use windows_sys::Win32::System::Console::{SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT};

use super::{Event, LINUX_SIGHUP, LINUX_SIGINT, LINUX_SIGTERM};
use crate::term::{size, Stream};

static WATCHERS: Mutex<Vec<Sender<Event>>> = Mutex::new(Vec::new());
/// Whether `on_control` is registered (once per process, however often watchers come and go).
static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

unsafe extern "system" fn on_control(kind: u32) -> BOOL {
    let sig = match kind {
        CTRL_C_EVENT => LINUX_SIGINT,
        CTRL_BREAK_EVENT => LINUX_SIGTERM,
        CTRL_CLOSE_EVENT => LINUX_SIGHUP,
        _ => return 0,
    };
    WATCHERS.lock().unwrap_or_else(|e| e.into_inner()).retain(|tx| tx.send(Event::Stop(sig)).is_ok());
    1
}

/// Starts delivering events (stops only when `stops`, resizes only when `resize`); `None` if
/// no handler could be set.
pub fn watch(stops: bool, resize: bool) -> Option<Receiver<Event>> {
    let (tx, rx) = mpsc::channel();
    if stops {
        // SAFETY: registers a function with the right signature that lives for the program's
        // life, exactly once (the OnceLock), so each event reaches each watcher once.
        let registered = *REGISTERED.get_or_init(|| unsafe { SetConsoleCtrlHandler(Some(on_control), 1) } != 0);
        if !registered {
            return None;
        }
        WATCHERS.lock().unwrap_or_else(|e| e.into_inner()).push(tx.clone());
    }
    if resize {
        std::thread::Builder::new()
            .name("kiln-resize".into())
            .spawn(move || {
                let mut last = size(Stream::Stdout);
                loop {
                    std::thread::sleep(Duration::from_millis(250));
                    let now = size(Stream::Stdout);
                    if now != last {
                        last = now;
                        if tx.send(Event::Resize).is_err() {
                            return;
                        }
                    }
                }
            })
            .ok()?;
    }
    Some(rx)
}
