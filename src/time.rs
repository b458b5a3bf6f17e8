//! Wall-clock helpers in one place: milliseconds since the epoch and RFC 3339 UTC with
//! milliseconds (`2026-11-21T08:00:00.123Z`, the envelope's `received_at` format).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339_ms(now_ms())
}

/// `ms` since the epoch as RFC 3339 UTC with exactly three fractional digits.
pub fn rfc3339_ms(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return "1970-01-01T00:00:00.000Z".to_string();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses an RFC 3339 timestamp into ms since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_millisecond_precision_and_round_trips() {
        assert_eq!(rfc3339_ms(1_763_712_000_123), "2025-11-21T08:00:00.123Z");
        assert_eq!(parse_rfc3339_ms("2025-11-21T08:00:00.123Z"), Some(1_763_712_000_123));
    }
}
