//! Child processes that must not outlive kiln (VMs, virtiofsd) or must (a container's
//! supervisor).
//!
//! [`harden`] before spawning: the process dies with kiln even when kiln is SIGKILLed
//! (`PR_SET_PDEATHSIG` on Linux, a kqueue watcher on macOS) and stays out of the terminal's
//! Ctrl-C; [`adopt`] right after spawning (Windows: the kill-on-close Job Object); [`kill`] by
//! pid from a signal thread; [`detach`] for a process that must outlive kiln's terminal;
//! [`console`] a copy of kiln's stderr for a child's output; [`start_time`] an opaque stamp of
//! when a process started, so a recorded pid is known to still be the same process.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{harden, os_release, start_time};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::{harden, os_release, start_time};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_stable_start_time_and_a_finished_child_has_none() {
        let me = std::process::id();
        let start = super::start_time(me).expect("this process runs");
        assert_eq!(super::start_time(me), Some(start));
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe")).arg("--list").stdout(std::process::Stdio::null()).spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        assert_eq!(super::start_time(pid), None, "a reaped child has no start time");
    }
}
