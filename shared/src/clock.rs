//! Wall-clock time as the wire, the activity log and the stores carry it: milliseconds since the
//! Unix epoch. One definition, so every node and service stamps times the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 on a clock set before it.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
