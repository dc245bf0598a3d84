//! The Detail tab: what only Periscope records first — the TLS events of the flow
//! (renegotiations, certificate requests, KeyUpdates, alerts) with their times
//! relative to the first request byte, and the notes (an HTTP/1.1 fallback) — then
//! what mitmproxy's shows: the timing list, both connections, the server
//! certificate; last the WebSocket messages.

use periscope_flow::{
    CertificateSummary, ConnectionInfo, Flow, Milestone, TimelineEvent, Timestamp, TlsInfo,
    WebSocketMessage,
};
use periscope_model::units::format_size;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use crate::text::{plain_line, sanitize};
use crate::units::{offset, precise_time};

/// How many WebSocket messages the tab lists (the newest are the ones cut).
const WEBSOCKET_LIMIT: usize = 2000;
/// Width of the label column.
const LABEL: usize = 28;

pub fn render(flow: &Flow) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    // Times are relative to the first request byte, the moment the user's request
    // began; flows without one (a failed handshake) use their first entry.
    let base = flow
        .started_at()
        .or_else(|| flow.timeline.entries().first().map(|e| e.at));

    if let Some(error) = &flow.error {
        heading(&mut lines, "Error");
        field(&mut lines, "Kind", &format!("{:?}", error.kind));
        field_styled(
            &mut lines,
            "Message",
            &error.message,
            Style::new().fg(Color::Red),
        );
        field(&mut lines, "At", &at_text(error.at, base));
        lines.push(Line::raw(""));
    }

    if !flow.rules.is_empty() {
        heading(&mut lines, "Rules");
        for applied in &flow.rules {
            lines.push(Line::from(vec![
                Span::styled(
                    format!("  {} ", applied.rule),
                    Style::new().fg(Color::Yellow),
                ),
                Span::raw(
                    sanitize(&format!("{:?}: {}", applied.spec, applied.effect)).into_owned(),
                ),
            ]));
        }
        lines.push(Line::raw(""));
    }

    heading(&mut lines, "TLS events");
    let mut any = false;
    for (at, event) in flow.timeline.tls_events() {
        any = true;
        let style = if event.is_renegotiation() {
            Style::new().fg(Color::Magenta)
        } else {
            Style::new().fg(Color::Cyan)
        };
        lines.push(Line::from(vec![
            Span::raw(format!("  {:>14}  ", relative(at, base))),
            Span::styled(sanitize(&event.to_string()).into_owned(), style),
        ]));
    }
    if !any {
        lines.push(Line::styled(
            "  (none after the handshakes: no renegotiation, certificate request or KeyUpdate)",
            dim(),
        ));
    }
    lines.push(Line::raw(""));

    let notes: Vec<(Timestamp, &str)> = flow.timeline.notes().collect();
    if !notes.is_empty() {
        heading(&mut lines, "Notes");
        for (at, message) in notes {
            lines.push(Line::raw(format!(
                "  {:>14}  {}",
                relative(at, base),
                sanitize(message)
            )));
        }
        lines.push(Line::raw(""));
    }

    heading(&mut lines, "Timing");
    let mut timed = false;
    for entry in flow.timeline.entries() {
        if let TimelineEvent::Milestone { milestone } = entry.event {
            timed = true;
            lines.push(Line::raw(format!(
                "  {:<LABEL$}{}  {:>14}",
                format!("{}:", milestone.label()),
                precise_time(entry.at),
                relative(entry.at, base),
            )));
        }
    }
    if !timed {
        lines.push(Line::styled("  (no timings recorded)", dim()));
    }
    let missing: Vec<&str> = Milestone::ALL
        .iter()
        .filter(|m| flow.timeline.milestone(**m).is_none())
        .map(|m| m.label())
        .collect();
    if timed && !missing.is_empty() {
        lines.push(plain_line(
            &format!("  not reached: {}", missing.join(", ")),
            dim(),
        ));
    }

    lines.push(Line::raw(""));
    heading(&mut lines, "Server connection");
    match &flow.server {
        Some(server) => connection(&mut lines, server, true),
        None => lines.push(Line::styled("  (none: no server was contacted)", dim())),
    }
    lines.push(Line::raw(""));

    if let Some(certificate) = flow
        .server
        .as_ref()
        .and_then(|s| s.tls.as_ref())
        .and_then(|t| t.peer_certificate.as_ref())
    {
        heading(&mut lines, "Server certificate");
        certificate_lines(&mut lines, certificate);
        lines.push(Line::raw(""));
    }
    heading(&mut lines, "Client connection");
    connection(&mut lines, &flow.client, false);
    if let Some(listener) = &flow.listener {
        let address = listener
            .address
            .map(|a| format!(" at {a}"))
            .unwrap_or_default();
        field(
            &mut lines,
            "proxy mode",
            &format!("{}{address}", listener.mode),
        );
    }
    lines.push(Line::raw(""));
    if let Some(tcp) = &flow.tcp {
        heading(&mut lines, "Relayed as TCP");
        field(&mut lines, "why", tcp.reason.describe());
        if let Some(sni) = &tcp.sni {
            field(&mut lines, "SNI", sni);
        }
        field(
            &mut lines,
            "from the client",
            &format_size(tcp.from_client.size),
        );
        field(
            &mut lines,
            "from the server",
            &format_size(tcp.from_server.size),
        );
        lines.push(Line::raw(""));
    }

    if let Some(certificate) = flow
        .client
        .tls
        .as_ref()
        .and_then(|t| t.peer_certificate.as_ref())
    {
        heading(&mut lines, "Client certificate");
        certificate_lines(&mut lines, certificate);
        lines.push(Line::raw(""));
    }

    if let Some(websocket) = &flow.websocket {
        heading(&mut lines, "WebSocket");
        if let Some(extensions) = &websocket.extensions {
            field(&mut lines, "Extensions", extensions);
        }
        let total = websocket.messages.len();
        for message in websocket.messages.iter().take(WEBSOCKET_LIMIT) {
            lines.push(websocket_line(message, base));
        }
        if total > WEBSOCKET_LIMIT {
            lines.push(plain_line(
                &format!("  … {} more messages", total - WEBSOCKET_LIMIT),
                dim(),
            ));
        }
        if websocket.dropped_messages > 0 {
            lines.push(plain_line(
                &format!(
                    "  {} messages not kept (over the body limit)",
                    websocket.dropped_messages
                ),
                dim(),
            ));
        }
        if let Some(at) = websocket.closed_at {
            let by = match websocket.closed_by_client {
                Some(true) => "client",
                Some(false) => "server",
                None => "?",
            };
            let code = websocket
                .close_code
                .map_or_else(String::new, |c| format!(" code {c}"));
            let reason = websocket
                .close_reason
                .as_deref()
                .map_or_else(String::new, |r| format!(" ({r})"));
            lines.push(plain_line(
                &format!(
                    "  {:>14}  closed by the {by}{code}{reason}",
                    relative(at, base)
                ),
                Style::new(),
            ));
        }
    }
    lines
}

fn dim() -> Style {
    Style::new().add_modifier(Modifier::DIM)
}

fn heading(lines: &mut Vec<Line<'static>>, title: &str) {
    lines.push(Line::styled(
        title.to_owned(),
        Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
    ));
}

fn field(lines: &mut Vec<Line<'static>>, label: &str, value: &str) {
    field_styled(lines, label, value, Style::new());
}

fn field_styled(lines: &mut Vec<Line<'static>>, label: &str, value: &str, style: Style) {
    lines.push(Line::from(vec![
        Span::styled(
            format!("  {:<width$}", format!("{label}:"), width = LABEL),
            dim(),
        ),
        Span::styled(sanitize(value).into_owned(), style),
    ]));
}

fn connection(lines: &mut Vec<Line<'static>>, info: &ConnectionInfo, server: bool) {
    if server {
        if let Some(target) = &info.target {
            field(lines, "Address", target);
        }
        if let Some(peer) = info.peer {
            field(lines, "Resolved address", &peer.to_string());
        }
        if let Some(local) = info.local {
            field(lines, "Source address", &local.to_string());
        }
    } else {
        if let Some(peer) = info.peer {
            field(lines, "Address", &peer.to_string());
        }
        if let Some(local) = info.local {
            field(lines, "Proxy address", &local.to_string());
        }
    }
    field(lines, "Connection id", &info.id.to_string());
    match &info.tls {
        Some(tls) => tls_lines(lines, tls),
        None => field(lines, "TLS", "no (plain TCP)"),
    }
}

fn tls_lines(lines: &mut Vec<Line<'static>>, tls: &TlsInfo) {
    field(lines, "TLS version", &tls.version);
    field(lines, "Cipher", &tls.cipher);
    field(lines, "SNI", tls.sni.as_deref().unwrap_or("(none)"));
    field(lines, "ALPN", tls.alpn.as_deref().unwrap_or("(none)"));
    field(
        lines,
        "Key exchange",
        tls.key_exchange.as_deref().unwrap_or("(none)"),
    );
    let handshake = if tls.resumed {
        "resumed an earlier session"
    } else {
        "full"
    };
    field(lines, "Handshake", handshake);
}

fn certificate_lines(lines: &mut Vec<Line<'static>>, cert: &CertificateSummary) {
    field(lines, "Subject", &cert.subject);
    field(lines, "Issuer", &cert.issuer);
    let sans = if cert.subject_alt_names.is_empty() {
        "(none)".to_owned()
    } else {
        cert.subject_alt_names.join(", ")
    };
    field(lines, "Subject alternative names", &sans);
    field(lines, "Valid from", &cert.not_before);
    field(lines, "Valid until", &cert.not_after);
    field(lines, "Serial", &cert.serial);
    field(lines, "SHA-256 fingerprint", &cert.sha256_fingerprint);
}

fn relative(at: Timestamp, base: Option<Timestamp>) -> String {
    match base {
        Some(base) => offset(at, base),
        None => String::new(),
    }
}

fn at_text(at: Timestamp, base: Option<Timestamp>) -> String {
    match base {
        Some(base) => format!("{} ({})", precise_time(at), offset(at, base)),
        None => precise_time(at),
    }
}

fn websocket_line(message: &WebSocketMessage, base: Option<Timestamp>) -> Line<'static> {
    let arrow = if message.from_client { "→" } else { "←" };
    let content = match message.text() {
        Some(text) => {
            let first = text.lines().next().unwrap_or("");
            crate::text::truncate(&sanitize(first), 200).into_owned()
        }
        None => {
            let shown = &message.content[..message.content.len().min(32)];
            let hex: Vec<String> = shown.iter().map(|b| format!("{b:02x}")).collect();
            hex.join(" ")
        }
    };
    Line::raw(format!(
        "  {:>14}  {arrow} {:<6} {:>6}  {content}",
        relative(message.at, base),
        message.opcode.name(),
        format_size(message.size),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::line_text;
    use periscope_flow::{Direction, Initiator, Leg, TlsEvent, TlsEventKind};

    #[test]
    fn detail_lists_connections_certificate_events_and_timings() {
        let mut flow = crate::fixtures::flow("GET", "example.com", "/", Some(200));
        flow.timeline.push_tls(
            Timestamp(1_000_000 + 2_500),
            TlsEvent {
                leg: Leg::Server,
                kind: TlsEventKind::HelloRequest {
                    direction: Direction::Received,
                },
            },
        );
        flow.timeline.push_tls(
            Timestamp(1_000_000 + 2_600),
            TlsEvent {
                leg: Leg::Server,
                kind: TlsEventKind::RenegotiationStarted {
                    initiator: Initiator::Peer,
                },
            },
        );
        flow.timeline
            .push_note(Timestamp(1_000_000 + 3_000), "retried over HTTP/1.1".into());
        let text: Vec<String> = render(&flow).iter().map(line_text).collect();
        let all = text.join("\n");
        for needle in [
            "Client connection",
            "Server connection",
            "TLSv1.3",
            "TLS_AES_128_GCM_SHA256",
            "Server certificate",
            "CN=example.com",
            "DNS:example.com",
            "AB:CD",
            "+1.000ms  server leg: HelloRequest received",
            "renegotiation started by server",
            "retried over HTTP/1.1",
            "First request byte:",
            "Response complete:",
        ] {
            assert!(all.contains(needle), "no {needle:?} in\n{all}");
        }
    }

    #[test]
    fn websocket_messages_are_listed() {
        use periscope_flow::{WebSocketMessage, WebSocketOpcode, WebSocketSession};
        let mut flow = crate::fixtures::flow("GET", "ws.example", "/chat", Some(101));
        let message = |from_client, opcode, content: &'static [u8]| WebSocketMessage {
            from_client,
            opcode,
            content: bytes::Bytes::from_static(content),
            size: content.len() as u64,
            truncated: false,
            frames: 1,
            at: Timestamp(1_000_000 + 4_000),
            fate: Default::default(),
        };
        flow.websocket = Some(WebSocketSession {
            messages: vec![
                message(true, WebSocketOpcode::Text, b"hello\nsecond line"),
                message(false, WebSocketOpcode::Binary, &[0xde, 0xad]),
            ],
            close_code: Some(1000),
            closed_by_client: Some(true),
            closed_at: Some(Timestamp(1_000_000 + 9_000)),
            ..WebSocketSession::default()
        });
        let all = render(&flow)
            .iter()
            .map(line_text)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("+2.500ms  → text      17b  hello"), "{all}");
        assert!(all.contains("← binary     2b  de ad"), "{all}");
        assert!(all.contains("closed by the client code 1000"), "{all}");
    }

    #[test]
    fn a_flow_without_server_or_timeline_still_renders() {
        let mut flow = crate::fixtures::flow("GET", "example.com", "/", None);
        flow.server = None;
        flow.timeline = periscope_flow::Timeline::new();
        let all: Vec<String> = render(&flow).iter().map(line_text).collect();
        assert!(all.iter().any(|l| l.contains("no server was contacted")));
        assert!(all.iter().any(|l| l.contains("no timings recorded")));
    }
}
