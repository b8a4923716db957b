//! Parsing of the agent's options from the kernel command line (`/proc/cmdline`).
//!
//! Pure functions only: reading the file is the caller's job, so this is fully unit-tested.

/// Where the host connection comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A virtio-serial port character device (QEMU).
    VirtioSerial(String),
    /// Listen on this AF_VSOCK port and serve the first connection (kiln's own VMM).
    Vsock(u32),
}

/// The default transport when `kiln.transport=` is absent.
pub const DEFAULT_PORT_DEVICE: &str = "/dev/vport0p1";

/// Options the agent reads from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub transport: Transport,
    pub debug: bool,
    /// `kiln.poweroff=reboot`: end the VM with reboot(RB_AUTOBOOT) instead of RB_POWER_OFF.
    /// Without ACPI (QEMU microvm, acpi=off) power-off only halts the CPU; a reboot with
    /// `-no-reboot` (or a VMM that treats reboot as exit) ends the VM at once.
    pub reboot_to_exit: bool,
    /// `kiln.time=SECONDS`: the host's wall clock at VM start. The guest has no RTC, so
    /// without it files made by RUN steps would be dated 1970.
    pub host_time: Option<i64>,
    /// `kiln.net=ADDR/PREFIX,GATEWAY,DNS` or `kiln.net=dhcp`: the guest's network (see
    /// [`crate::net`]).
    pub net: Option<crate::net::NetSetting>,
}

/// Parses the whole command line. Unknown words are ignored; a malformed `kiln.transport=`
/// is an error (the host asked for something the agent cannot do).
pub fn parse(cmdline: &str) -> Result<Options, String> {
    let mut opts = Options {
        transport: Transport::VirtioSerial(DEFAULT_PORT_DEVICE.into()),
        debug: false,
        reboot_to_exit: false,
        host_time: None,
        net: None,
    };
    for word in cmdline.split_ascii_whitespace() {
        if let Some(value) = word.strip_prefix("kiln.transport=") {
            opts.transport = parse_transport(value)?;
        } else if let Some(value) = word.strip_prefix("kiln.debug=") {
            opts.debug = matches!(value, "1" | "y" | "yes" | "true" | "on");
        } else if let Some(value) = word.strip_prefix("kiln.poweroff=") {
            opts.reboot_to_exit = value == "reboot";
        } else if let Some(value) = word.strip_prefix("kiln.time=") {
            opts.host_time = Some(value.parse().map_err(|_| format!("kiln.time={value}: expected whole seconds"))?);
        } else if let Some(value) = word.strip_prefix("kiln.net=") {
            opts.net = Some(crate::net::NetSetting::parse(value)?);
        } else if word == "kiln.debug" {
            opts.debug = true;
        }
    }
    Ok(opts)
}

fn parse_transport(value: &str) -> Result<Transport, String> {
    if let Some(dev) = value.strip_prefix("virtio-serial:") {
        if !dev.starts_with('/') {
            return Err(format!(
                "kiln.transport={value}: the device must be an absolute path"
            ));
        }
        return Ok(Transport::VirtioSerial(dev.to_string()));
    }
    if value == "virtio-serial" {
        return Ok(Transport::VirtioSerial(DEFAULT_PORT_DEVICE.into()));
    }
    if let Some(port) = value.strip_prefix("vsock:") {
        return port
            .parse::<u32>()
            .map(Transport::Vsock)
            .map_err(|e| format!("kiln.transport={value}: bad vsock port: {e}"));
    }
    Err(format!(
        "kiln.transport={value}: expected virtio-serial:DEVICE or vsock:PORT"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_time_is_read_and_checked() {
        assert_eq!(parse("kiln.time=1800000000").expect("parse").host_time, Some(1_800_000_000));
        assert_eq!(parse("quiet").expect("parse").host_time, None);
        assert!(parse("kiln.time=soon").is_err());
    }

    #[test]
    fn default_is_virtio_serial_port() {
        let o = parse("console=ttyS0 quiet").expect("parse");
        assert_eq!(o.transport, Transport::VirtioSerial("/dev/vport0p1".into()));
        assert!(!o.debug);
    }

    #[test]
    fn explicit_transports_and_debug() {
        let o = parse("a kiln.transport=vsock:1024 kiln.debug=1\n").expect("parse");
        assert_eq!(o.transport, Transport::Vsock(1024));
        assert!(o.debug && !o.reboot_to_exit);
        assert!(parse("kiln.poweroff=reboot").expect("parse").reboot_to_exit);
        let o = parse("kiln.transport=virtio-serial:/dev/vport1p1").expect("parse");
        assert_eq!(o.transport, Transport::VirtioSerial("/dev/vport1p1".into()));
    }

    #[test]
    fn malformed_transport_is_an_error() {
        assert!(parse("kiln.transport=vsock:x").is_err());
        assert!(parse("kiln.transport=tcp:1").is_err());
        assert!(parse("kiln.transport=virtio-serial:dev").is_err());
    }
}
