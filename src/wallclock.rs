//! Wall-clock time in the two forms kextwatch uses: nanoseconds since the Unix epoch (every event
//! time) and RFC 3339 UTC (every time an alert or heartbeat shows).

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch: 0 before the epoch, the largest `i64` past 2262.
pub fn epoch_ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The wall clock as [`epoch_ns`].
pub fn now_ns() -> i64 {
    epoch_ns(SystemTime::now())
}

/// RFC 3339 UTC with nanoseconds; the epoch for out-of-range values.
pub fn format_time(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// The wall-clock time, for heartbeats and status (alerts carry their events' times).
pub fn now_rfc3339() -> String {
    format_time(now_ns())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn epoch_ns_is_nanoseconds_since_1970_and_saturates() {
        assert_eq!(epoch_ns(UNIX_EPOCH + Duration::new(1, 5)), 1_000_000_005);
        assert_eq!(epoch_ns(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(
            epoch_ns(UNIX_EPOCH + Duration::from_secs(300 * 365 * 86_400)),
            i64::MAX
        );
    }

    #[test]
    fn times_are_shown_as_rfc3339_utc() {
        assert_eq!(format_time(1_000_000_005), "1970-01-01T00:00:01.000000005Z");
        assert_eq!(format_time(-1_000_000_000), "1969-12-31T23:59:59Z");
    }
}
