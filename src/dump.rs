//! `periscope dump`: one line per flow on stdout, in the spirit of mitmdump, with the
//! flow's TLS events and error on indented lines below it.

use std::fmt::Write as _;

use periscope_flow::Flow;

pub fn flow_lines(flow: &Flow) -> String {
    let mut out = String::new();
    let client = flow
        .client
        .peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "-".into());
    let target = if flow.request.method == "CONNECT" {
        format!("{}:{}", flow.request.host, flow.request.port)
    } else {
        flow.request.url()
    };
    let _ = write!(out, "{client} {} {target}", flow.request.method);
    match &flow.response {
        Some(response) => {
            let _ = write!(
                out,
                " {} {}{} {}",
                response.status,
                response.reason,
                if response.generated {
                    " (periscope)"
                } else {
                    ""
                },
                human_size(response.body.size)
            );
        }
        None => out.push_str(" <no response>"),
    }
    if let Some(millis) = flow.duration_millis() {
        let _ = write!(out, " {}", human_duration(millis));
    }
    for (_, event) in flow.timeline.tls_events() {
        let _ = write!(out, "\n    {event}");
    }
    if let Some(error) = &flow.error {
        let _ = write!(out, "\n    error: {}", error.message);
    }
    out
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kb", "mb", "gb", "tb"];
    if bytes < 1024 {
        return format!("{bytes}b");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

fn human_duration(millis: f64) -> String {
    if millis < 1.0 {
        format!("{:.0}µs", millis * 1000.0)
    } else if millis < 1000.0 {
        format!("{millis:.0}ms")
    } else {
        format!("{:.2}s", millis / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_mitmdump() {
        assert_eq!(human_size(12), "12b");
        assert_eq!(human_size(1536), "1.5kb");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0mb");
        assert_eq!(human_duration(0.25), "250µs");
        assert_eq!(human_duration(12.4), "12ms");
        assert_eq!(human_duration(2500.0), "2.50s");
    }
}
