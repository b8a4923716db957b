//! Linux signal numbers by name: the guest is Linux whatever the host is, so a container's
//! stop signal or `kiln kill -s` is numbered as Linux numbers it (x86_64 and arm64 agree), never
//! by the host's table (macOS numbers SIGUSR1 30, Linux 10).

/// SIGKILL.
pub const SIGKILL: i32 = 9;
/// SIGTERM.
pub const SIGTERM: i32 = 15;

const NAMES: &[(&str, i32)] = &[
    ("HUP", 1), ("INT", 2), ("QUIT", 3), ("ILL", 4), ("TRAP", 5), ("ABRT", 6), ("IOT", 6), ("BUS", 7), ("FPE", 8),
    ("KILL", 9), ("USR1", 10), ("SEGV", 11), ("USR2", 12), ("PIPE", 13), ("ALRM", 14), ("TERM", 15), ("STKFLT", 16),
    ("CHLD", 17), ("CONT", 18), ("STOP", 19), ("TSTP", 20), ("TTIN", 21), ("TTOU", 22), ("URG", 23), ("XCPU", 24),
    ("XFSZ", 25), ("VTALRM", 26), ("PROF", 27), ("WINCH", 28), ("IO", 29), ("POLL", 29), ("PWR", 30), ("SYS", 31),
];
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// The number of `name` (`SIGTERM`, `TERM`, `term`, `RTMIN+3`, `SIGRTMAX-1` or `15`), if it
/// names a Linux signal (1..=64).
pub fn number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(n, _)| *n == bare) {
        return Some(n);
    }
    // "RTMIN", "RTMIN+3", "RTMAX", "RTMAX-1": an offset needs its sign and digits.
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let digits = rest.strip_prefix(sign).filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))?;
        digits.parse::<u8>().ok().map(i32::from)
    };
    let n = if let Some(rest) = bare.strip_prefix("RTMIN") {
        RTMIN + offset(rest, '+')?
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        RTMAX - offset(rest, '-')?
    } else {
        return None;
    };
    (RTMIN..=RTMAX).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn names_numbers_and_realtime_signals_are_linux_numbers() {
        assert_eq!(number("SIGTERM"), Some(15));
        assert_eq!(number("term"), Some(15));
        assert_eq!(number("USR1"), Some(10));
        assert_eq!(number("SIGWINCH"), Some(28));
        assert_eq!(number("9"), Some(9));
        assert_eq!(number("RTMIN"), Some(34));
        assert_eq!(number("SIGRTMIN+3"), Some(37));
        assert_eq!(number("RTMAX-1"), Some(63));
        for bad in ["0", "65", "-1", "SIGFOO", "RTMIN+31", "RTMAX-31", "RTMINx", "RTMIN+", "RTMIN++3", "RTMAX-+1", ""] {
            assert_eq!(number(bad), None, "{bad}");
        }
    }
}
