//! How sizes, durations and times read in the console: short in the flow list
//! (`1.2k`, `35ms`, `12:01:02`), precise in the Detail tab.

use chrono::{Local, TimeZone};
use periscope_flow::Timestamp;

/// `0b`, `512b`, `1.2k`, `34k`, `1.5m`, `2.0g`: at most five characters, as in
/// mitmproxy's list.
pub fn short_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "g"), (1 << 20, "m"), (1 << 10, "k")];
    for (scale, unit) in UNITS {
        if bytes >= scale {
            let value = bytes as f64 / scale as f64;
            return if value < 10.0 {
                format!("{value:.1}{unit}")
            } else {
                format!("{value:.0}{unit}")
            };
        }
    }
    format!("{bytes}b")
}

/// `950µs`, `35ms`, `1.20s`, `2m05s`.
pub fn short_duration(millis: f64) -> String {
    if !millis.is_finite() || millis < 0.0 {
        return "-".to_owned();
    }
    if millis < 1.0 {
        format!("{:.0}µs", millis * 1000.0)
    } else if millis < 1000.0 {
        format!("{millis:.0}ms")
    } else if millis < 60_000.0 {
        format!("{:.2}s", millis / 1000.0)
    } else {
        let seconds = (millis / 1000.0) as u64;
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    }
}

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
    fn sizes_are_short() {
        assert_eq!(short_size(0), "0b");
        assert_eq!(short_size(1023), "1023b");
        assert_eq!(short_size(1024), "1.0k");
        assert_eq!(short_size(1536), "1.5k");
        assert_eq!(short_size(34 * 1024), "34k");
        assert_eq!(short_size(5 * 1024 * 1024), "5.0m");
        assert_eq!(short_size(u64::MAX), "17179869184g");
    }

    #[test]
    fn durations_pick_their_unit() {
        assert_eq!(short_duration(0.25), "250µs");
        assert_eq!(short_duration(35.4), "35ms");
        assert_eq!(short_duration(1200.0), "1.20s");
        assert_eq!(short_duration(125_000.0), "2m05s");
        assert_eq!(short_duration(f64::NAN), "-");
        assert_eq!(short_duration(-1.0), "-");
    }

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
