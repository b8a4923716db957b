//! A connection one side of kiln carries over two data streams (the ssh agent forwarding, a
//! published port): unix and TCP sockets, with what carrying one needs beyond Read + Write.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

pub trait Duplex: Read + Write + Send + Sized + 'static {
    /// A second handle on the connection, for the other direction's thread.
    fn dup(&self) -> io::Result<Self>;
    /// Ends the writing direction (the peer reads EOF), keeping the reading one.
    fn shut_write(&self);
}

impl Duplex for TcpStream {
    fn dup(&self) -> io::Result<Self> {
        self.try_clone()
    }

    fn shut_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Unix sockets exist only on unix hosts (and in the guest).
#[cfg(unix)]
mod unix {
    use std::io;
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;

    impl super::Duplex for UnixStream {
        fn dup(&self) -> io::Result<Self> {
            self.try_clone()
        }

        fn shut_write(&self) {
            let _ = self.shutdown(Shutdown::Write);
        }
    }
}

/// Windows hosts reach the agent over AF_UNIX through `uds_windows`.
#[cfg(windows)]
mod windows {
    use std::io;
    use std::net::Shutdown;

    use uds_windows::UnixStream;

    impl super::Duplex for UnixStream {
        fn dup(&self) -> io::Result<Self> {
            self.try_clone()
        }

        fn shut_write(&self) {
            let _ = self.shutdown(Shutdown::Write);
        }
    }
}
