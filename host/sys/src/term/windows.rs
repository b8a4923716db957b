//! Windows (experimental: built under Wine's console-less runs, not yet used interactively on
//! Windows): console modes (no line input, no echo, no Ctrl-C processing, VT sequences in and
//! out, as Windows Terminal and ConPTY clients expect), `GetConsoleScreenBufferInfo`.

use std::os::windows::io::AsRawHandle;
use std::sync::{Mutex, MutexGuard, OnceLock};

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Console::{
    GetConsoleMode, GetConsoleScreenBufferInfo, SetConsoleMode, CONSOLE_MODE, CONSOLE_SCREEN_BUFFER_INFO, ENABLE_ECHO_INPUT,
    ENABLE_LINE_INPUT, ENABLE_PROCESSED_INPUT, ENABLE_VIRTUAL_TERMINAL_INPUT, ENABLE_VIRTUAL_TERMINAL_PROCESSING,
};

use super::Stream;

/// Console modes of stdin and stdout before raw mode.
#[derive(Clone, Copy)]
struct Modes {
    input: CONSOLE_MODE,
    output: Option<CONSOLE_MODE>,
}

fn saved_modes() -> MutexGuard<'static, Option<Modes>> {
    static SAVED: OnceLock<Mutex<Option<Modes>>> = OnceLock::new();
    SAVED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

fn handle(stream: Stream) -> HANDLE {
    match stream {
        Stream::Stdin => std::io::stdin().as_raw_handle(),
        Stream::Stdout => std::io::stdout().as_raw_handle(),
        Stream::Stderr => std::io::stderr().as_raw_handle(),
    }
}

fn mode(stream: Stream) -> std::io::Result<CONSOLE_MODE> {
    let mut mode: CONSOLE_MODE = 0;
    // SAFETY: the handle is one of the process's standard handles; `mode` is ours.
    if unsafe { GetConsoleMode(handle(stream), &mut mode) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(mode)
}

fn set_mode(stream: Stream, mode: CONSOLE_MODE) -> std::io::Result<()> {
    // SAFETY: the handle is one of the process's standard handles.
    if unsafe { SetConsoleMode(handle(stream), mode) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn restore(modes: Modes) {
    let _ = set_mode(Stream::Stdin, modes.input);
    if let Some(output) = modes.output {
        let _ = set_mode(Stream::Stdout, output);
    }
}

/// Restores the console's modes when dropped.
pub struct RawMode {
    saved: Modes,
}

impl RawMode {
    /// Puts the console in raw mode: keys arrive as VT sequences, nothing is echoed, Ctrl-C is
    /// a byte for the container.
    pub fn enable() -> std::io::Result<Self> {
        let input = mode(Stream::Stdin)?;
        let output = mode(Stream::Stdout).ok();
        let raw = (input & !(ENABLE_LINE_INPUT | ENABLE_ECHO_INPUT | ENABLE_PROCESSED_INPUT)) | ENABLE_VIRTUAL_TERMINAL_INPUT;
        set_mode(Stream::Stdin, raw)?;
        if let Some(out) = output {
            let _ = set_mode(Stream::Stdout, out | ENABLE_VIRTUAL_TERMINAL_PROCESSING);
        }
        let saved = Modes { input, output };
        *saved_modes() = Some(saved);
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        saved_modes().take();
        restore(self.saved);
    }
}

/// Restores the console now, if raw mode is on (before `std::process::exit`).
pub fn restore_now() {
    if let Some(saved) = saved_modes().take() {
        restore(saved);
    }
}

/// Columns of the console window on `stream`, if it is one.
pub fn columns(stream: Stream) -> Option<u16> {
    size(stream).map(|(_, cols)| cols)
}

/// Rows and columns of the console window on `stream`, if it is one.
pub fn size(stream: Stream) -> Option<(u16, u16)> {
    // SAFETY: all-zero is a valid CONSOLE_SCREEN_BUFFER_INFO (plain integers).
    let mut info: CONSOLE_SCREEN_BUFFER_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is one of the process's standard handles; `info` is ours.
    if unsafe { GetConsoleScreenBufferInfo(handle(stream), &mut info) } == 0 {
        return None;
    }
    let rows = i32::from(info.srWindow.Bottom) - i32::from(info.srWindow.Top) + 1;
    let cols = i32::from(info.srWindow.Right) - i32::from(info.srWindow.Left) + 1;
    Some((u16::try_from(rows).ok()?, u16::try_from(cols).ok()?)).filter(|(r, c)| *r > 0 && *c > 0)
}
