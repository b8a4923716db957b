//! RFC 3339 timestamps for image configs, honouring `SOURCE_DATE_EPOCH`.

use std::time::{SystemTime, UNIX_EPOCH};

/// `SOURCE_DATE_EPOCH`, if set; an error if it is set but not whole seconds.
pub fn source_date_epoch() -> Result<Option<i64>, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("invalid SOURCE_DATE_EPOCH {v:?}: expected whole seconds")),
        _ => Ok(None),
    }
}

/// The creation time to record: `SOURCE_DATE_EPOCH` if set and valid, else now.
pub fn created_seconds() -> Result<i64, String> {
    match source_date_epoch()? {
        Some(s) => Ok(s),
        None => Ok(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)),
    }
}

pub use kiln_store::time::rfc3339;
