//! A real pseudo-terminal for driving `kiln run -it`: kiln's stdin, stdout and stderr are the
//! terminal's slave (its controlling terminal, in a session of its own); the test types into
//! the master, reads what the terminal shows, and resizes it (the kernel then sends SIGWINCH
//! to kiln, as a terminal emulator's resize does).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub struct Pty {
    master: OwnedFd,
    writer: File,
    child: Child,
    output: Receiver<Vec<u8>>,
    /// Everything the terminal showed so far.
    pub seen: String,
    /// How much of `seen` the last [`Pty::expect`] consumed.
    mark: usize,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }
}

impl Pty {
    /// Starts `cmd` on a new terminal of `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Self {
        let ws = winsize(rows, cols);
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        let slave = File::from(pty.slave);
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the slave set up above.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn kiln on a terminal");
        drop(cmd); // closes the parent's copies of the slave
        let mut reader = File::from(pty.master.try_clone().expect("dup master"));
        let writer = File::from(pty.master.try_clone().expect("dup master"));
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self { master: pty.master, writer, child, output: rx, seen: String::new(), mark: 0 }
    }

    /// Types `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the terminal");
    }

    /// Waits until the terminal shows `needle` after what the last expect consumed.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen[self.mark..].find(needle) {
                self.mark += i + needle.len();
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.output.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Sets the terminal's size.
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid for the call.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ");
    }

    /// The terminal's local flags (`c_lflag`: ICANON, ECHO, ISIG...), as its user sees them.
    pub fn local_flags(&self) -> libc::tcflag_t {
        // SAFETY: tcgetattr fills the termios, valid for the call; a zeroed termios is valid.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let r = unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut t) };
        assert_eq!(r, 0, "tcgetattr");
        t.c_lflag
    }

    /// Waits for kiln to exit (killing it after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                // Collect what is still in flight.
                while let Ok(bytes) = self.output.recv_timeout(Duration::from_millis(100)) {
                    self.seen.push_str(&String::from_utf8_lossy(&bytes));
                }
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
