//! How sizes and durations read wherever Periscope prints them (`periscope dump`,
//! the console's list and views), in mitmproxy's style: `1.5k`, `35ms`, `12.5s`.
//!
//! One implementation, so that a flow's line in `dump` and its row in the console
//! agree.
//!
//! ```
//! use periscope_model::units::{format_duration_ms, format_size};
//!
//! assert_eq!(format_size(1536), "1.5k");
//! assert_eq!(format_duration_ms(35.4), "35ms");
//! ```

/// `0b`, `1023b`, `1.5k`, `34.0k`, `100k`, `5.0m`: mitmproxy's `pretty_size`, at
/// most five characters below a petabyte. Units are powers of 1024.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["k", "m", "g", "t"];
    if bytes < 1024 {
        return format!("{bytes}b");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    // Below 99.95 one decimal still fits five characters (`{:.1}` of 99.95 would
    // print `100.0`).
    if value < 99.95 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// A duration given in milliseconds: `250µs`, `35ms`, `1.20s`, `12.5s`, `125s`;
/// `-` for a negative or not-a-number duration (a clock that went backwards).
///
/// From a second on this is mitmproxy's `pretty_duration`; below a millisecond it
/// keeps microseconds, which mitmproxy would print as `0ms`.
pub fn format_duration_ms(millis: f64) -> String {
    if !millis.is_finite() || millis < 0.0 {
        return "-".to_owned();
    }
    let seconds = millis / 1000.0;
    if millis < 1.0 {
        format!("{:.0}µs", millis * 1000.0)
    } else if millis < 1000.0 {
        format!("{millis:.0}ms")
    } else if seconds < 10.0 {
        format!("{seconds:.2}s")
    } else if seconds < 100.0 {
        format!("{seconds:.1}s")
    } else {
        format!("{seconds:.0}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_mitmproxy() {
        assert_eq!(format_size(0), "0b");
        assert_eq!(format_size(1023), "1023b");
        assert_eq!(format_size(1024), "1.0k");
        assert_eq!(format_size(1536), "1.5k");
        assert_eq!(format_size(34 * 1024), "34.0k");
        assert_eq!(format_size(99 * 1024 + 972), "99.9k");
        assert_eq!(format_size(100 * 1024), "100k");
        assert_eq!(format_size(1023 * 1024), "1023k");
        assert_eq!(format_size(1024 * 1024), "1.0m");
        assert_eq!(format_size(5 * 1024 * 1024), "5.0m");
        assert_eq!(format_size(3 << 30), "3.0g");
        assert_eq!(format_size(2048 << 30), "2.0t");
        assert_eq!(format_size(u64::MAX), "16777216t");
    }

    #[test]
    fn sizes_fit_five_characters_below_a_petabyte() {
        let mut bytes = 1u64;
        while bytes < 1 << 50 {
            for probe in [bytes - 1, bytes, bytes + bytes / 3] {
                let text = format_size(probe);
                assert!(text.chars().count() <= 5, "{probe} -> {text}");
            }
            bytes *= 2;
        }
    }

    #[test]
    fn durations_pick_their_unit() {
        assert_eq!(format_duration_ms(0.0), "0µs");
        assert_eq!(format_duration_ms(0.25), "250µs");
        assert_eq!(format_duration_ms(12.4), "12ms");
        assert_eq!(format_duration_ms(35.4), "35ms");
        assert_eq!(format_duration_ms(1200.0), "1.20s");
        assert_eq!(format_duration_ms(2500.0), "2.50s");
        assert_eq!(format_duration_ms(12_500.0), "12.5s");
        assert_eq!(format_duration_ms(125_000.0), "125s");
        assert_eq!(format_duration_ms(3_600_000.0), "3600s");
    }

    #[test]
    fn impossible_durations_read_as_a_dash() {
        assert_eq!(format_duration_ms(f64::NAN), "-");
        assert_eq!(format_duration_ms(f64::INFINITY), "-");
        assert_eq!(format_duration_ms(-1.0), "-");
    }
}
