//! How times read in the console: short in the flow list (`12:01:02`), precise in
//! the Detail tab. Sizes and durations read as everywhere else
//! (`periscope_model::units`).

use chrono::{Local, TimeZone};
use periscope_flow::Timestamp;

/// Local wall-clock time, `12:01:02`.
pub fn clock(at: Timestamp) -> String {
    local(at, "%H:%M:%S")
}

/// Local date and time with microseconds, `2025-01-31 12:01:02.123456`.
pub fn precise_time(at: Timestamp) -> String {
    local(at, "%Y-%m-%d %H:%M:%S%.6f")
}

/// `+12.345ms` (or `-0.210ms`) from `base` to `at`.
pub fn offset(at: Timestamp, base: Timestamp) -> String {
    let millis = at.millis_since(base);
    if millis < 0.0 {
        format!("-{:.3}ms", -millis)
    } else {
        format!("+{millis:.3}ms")
    }
}

fn local(at: Timestamp, format: &str) -> String {
    match Local.timestamp_micros(at.0).single() {
        Some(time) => time.format(format).to_string(),
        None => format!("@{}µs", at.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_have_a_sign() {
        assert_eq!(offset(Timestamp(1_500), Timestamp(1_000)), "+0.500ms");
        assert_eq!(offset(Timestamp(1_000), Timestamp(1_210)), "-0.210ms");
    }

    #[test]
    fn out_of_range_times_do_not_panic() {
        assert!(clock(Timestamp(i64::MAX)).starts_with('@'));
        assert_eq!(clock(Timestamp(0)).len(), 8);
    }
}
