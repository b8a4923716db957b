//! Opening the byte stream to the host: a virtio-serial port or an AF_VSOCK connection.
//!
//! Returns a reader and a writer over the same connection, ready for `Mux::agent`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::cmdline::Transport;
use crate::error::{Context, Error, Result};
use crate::log::info;

/// How long to wait before re-reading a virtio-serial port the host is not connected to.
const NOT_CONNECTED_POLL: Duration = Duration::from_millis(10);

/// The two halves of the host connection.
pub struct Connection {
    pub reader: Box<dyn Read + Send>,
    pub writer: File,
}

/// Opens the transport named on the kernel command line. Blocks until a connection exists
/// (vsock: until the host connects; virtio-serial: opening never waits for the host).
pub fn connect(transport: &Transport) -> Result<Connection> {
    match transport {
        Transport::VirtioSerial(path) => open_port(path),
        Transport::Vsock(port) => accept_vsock(*port),
    }
}

/// The port name the host gives the agent's virtio-serial port (`virtserialport,name=`).
const PORT_NAME: &str = "kiln.agent";

/// The device node of the port named [`PORT_NAME`], if the driver has probed it. Device
/// numbers follow the order the transports are probed in, which differs between machines
/// (`-M virt` probes its virtio-mmio slots from the top), so the name is what identifies it.
fn named_port() -> Option<String> {
    let ports = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    ports.flatten().find_map(|entry| {
        let name = std::fs::read_to_string(entry.path().join("name")).ok()?;
        (name.trim() == PORT_NAME).then(|| format!("/dev/{}", entry.file_name().to_string_lossy()))
    })
}

fn open_port(given: &str) -> Result<Connection> {
    // The device node appears once the virtio-serial driver has probed the port; give udev-less
    // devtmpfs a moment rather than failing on a race with the driver.
    let mut attempts = 0;
    let mut path = given.to_string();
    let file = loop {
        if !std::path::Path::new(&path).exists() {
            if let Some(found) = named_port() {
                path = found;
            }
        }
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 500 => {
                attempts += 1;
                std::thread::sleep(NOT_CONNECTED_POLL);
            }
            Err(e) => return Err(Error::io(format!("open virtio-serial port {path}"), e)),
        }
    };
    if path != given {
        info!("the agent's port is {path}");
    }
    let reader = file.try_clone().ctx(|| format!("dup {path}"))?;
    Ok(Connection {
        reader: Box::new(PortReader { file: reader }),
        writer: file,
    })
}

/// Reads a virtio-serial port. The Linux virtio-console driver returns 0 from read() while the
/// host side is not connected, which is not an end of stream here: wait and read again.
struct PortReader {
    file: File,
}

impl Read for PortReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.file.read(buf) {
                Ok(0) => std::thread::sleep(NOT_CONNECTED_POLL),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

fn accept_vsock(port: u32) -> Result<Connection> {
    // SAFETY: plain socket(2) call; the fd is wrapped in an OwnedFd right away.
    let raw = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::io("socket(AF_VSOCK)", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let listener = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_vm is plain old data; all-zero is valid before we fill it in.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes; the fd is a valid socket.
    if unsafe { libc::bind(listener.as_raw_fd(), (&raw const addr).cast(), len) } < 0 {
        return Err(Error::io(
            format!("bind vsock port {port}"),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(listener.as_raw_fd(), 1) } < 0 {
        return Err(Error::io(
            format!("listen on vsock port {port}"),
            io::Error::last_os_error(),
        ));
    }
    info!("waiting for the host on vsock port {port}");
    let conn = loop {
        // SAFETY: accept4 on our listening socket; peer address not wanted (null pointers).
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: accept4 returned a fresh descriptor nobody else owns.
            break unsafe { OwnedFd::from_raw_fd(fd) };
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::io(format!("accept on vsock port {port}"), err));
        }
    };
    let writer = File::from(conn);
    let reader = writer
        .try_clone()
        .ctx(|| "dup vsock connection".to_string())?;
    Ok(Connection {
        reader: Box::new(reader),
        writer,
    })
}
