//! How image commands print sizes and times: Docker's `12.3MB` and `2 hours ago`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Decimal units as Docker prints them: `512B`, `1.5kB`, `12.35MB`.
pub use kiln_store::human_size as size;

/// Seconds since the epoch of an RFC 3339 time (`2026-01-02T03:04:05.123Z`, `+01:00`).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// `2 hours ago`, or the raw text when it is not a time kiln can read.
pub fn ago(created: Option<&str>) -> String {
    let Some(text) = created else { return "N/A".into() };
    let Some(t) = parse_rfc3339(text) else { return text.to_string() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let secs = now - t;
    if secs < 0 {
        return "Less than a second from now".into();
    }
    let plural = |n: i64, unit: &str| if n == 1 { format!("1 {unit} ago") } else { format!("{n} {unit}s ago") };
    match secs {
        0 => "Less than a second ago".into(),
        s if s < 60 => plural(s, "second"),
        s if s < 3600 => plural(s / 60, "minute"),
        s if s < 2 * 86400 => plural(s / 3600, "hour"),
        s if s < 14 * 86400 => plural(s / 86400, "day"),
        s if s < 60 * 86400 => plural(s / (7 * 86400), "week"),
        s if s < 730 * 86400 => plural(s / (30 * 86400), "month"),
        s => plural(s / (365 * 86400), "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(size(999), "999B");
        assert_eq!(size(1_500), "1.5kB");
        assert_eq!(size(12_345_678), "12.35MB");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00.5Z"), Some(1_767_225_600));
        assert_eq!(parse_rfc3339("2026-01-01T01:00:00+01:00"), Some(1_767_225_600));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
