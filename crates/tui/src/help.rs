//! The help screen (`?`): the key bindings (from the same table the keys go
//! through), what the list's markers mean, intercepting and editing, the filter
//! language, and where this session lives.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::flow_list::{Held, WAITING_MARKER};
use crate::keys::{keys_label, Context, BINDINGS};
use crate::text::{plain_line, wrap};

/// What the help screen says about the session.
pub struct SessionFacts<'a> {
    pub listen: &'a str,
    pub session: &'a str,
    pub ca_cert: &'a str,
}

const FILTERS: &[(&str, &str)] = &[
    ("~d rx", "host"),
    ("~u rx, rx", "URL"),
    ("~m rx", "method"),
    ("~c code", "response status"),
    ("~h rx, ~hq, ~hs", "header line (request, response)"),
    ("~b rx, ~bq, ~bs", "body, decoded (request, response)"),
    ("~t rx, ~tq, ~ts", "content type"),
    ("~q, ~s, ~e", "no response yet, has a response, failed"),
    ("~a", "assets: images, scripts, stylesheets, fonts"),
    ("~websocket", "WebSocket flows"),
    ("~http, ~all", "HTTP flows, every flow"),
    (
        "~tcp",
        "connections relayed as TCP (ignored hosts, --tcp-hosts)",
    ),
    (
        "~mode rx",
        "the proxy mode (regular, socks5, reverse:https://…)",
    ),
    ("~marked", "marked flows"),
    ("~comment rx", "the flow's comment"),
    (
        "~replay, ~replayq",
        "replays of a request (~replay: or of a response)",
    ),
    ("~replays", "answers from server replay"),
    (
        "~rule rx",
        "flows a rule changed (map_local, modify_headers, …)",
    ),
    (
        "~tls [rx]",
        "flows with TLS events (e.g. ~tls renegotiation)",
    ),
    ("~src rx, ~dst rx", "client, server address"),
    ("!, &, |, ( )", "not, and, or, grouping"),
];

pub fn lines(facts: &SessionFacts<'_>) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
    let mut lines = vec![Line::styled("Keys", bold)];
    let contexts = [
        (Context::List, "flow list"),
        (Context::Flow, "flow view"),
        (Context::EventLog, "event log"),
    ];
    for binding in BINDINGS {
        let places: Vec<&str> = contexts
            .iter()
            .filter(|(c, _)| binding.contexts.contains(c))
            .map(|(_, name)| *name)
            .collect();
        let places = if places.len() == contexts.len() {
            String::new()
        } else {
            format!("  [{}]", places.join(", "))
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("  {:<22}", keys_label(binding)),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(binding.help),
            Span::styled(places, Style::new().add_modifier(Modifier::DIM)),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Markers in the list", bold));
    for (marker, meaning) in [
        ("●", "marked (m)"),
        ("R", "the server or client renegotiated during the flow"),
        (
            "T",
            "other TLS events: certificate request, KeyUpdate, alert",
        ),
        ("!", "the flow failed (see Detail)"),
        ("↻", "a replay of another flow (r)"),
        ("D", "a copy of another flow (D)"),
        ("✎", "edited (e); V puts back what was recorded"),
        ("#", "has a comment (;)"),
        ("…", "in flight: no response yet"),
    ] {
        lines.push(Line::raw(format!("  {marker:<4}{meaning}")));
    }
    lines.push(Line::raw(format!(
        "  {WAITING_MARKER} (time column): the request still waits for its response"
    )));
    for (held, meaning) in [
        (
            Held::Request,
            "the request (nothing was sent to the server yet)",
        ),
        (
            Held::Response,
            "the response (nothing was sent to the client yet)",
        ),
        (Held::Message, "a WebSocket message (W decides about it)"),
        (
            Held::Certificate,
            "the server's certificate request (c answers it)",
        ),
    ] {
        lines.push(Line::raw(format!(
            "  {:<8}(time column, the row in red): intercepted, waiting at {meaning}",
            held.label()
        )));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Intercepting and editing", bold));
    for text in [
        "i sets the intercept filter (the filter language below): a matching flow waits at its request, at its response and at each WebSocket message until a (or A) resumes it or X kills it. The status bar shows the filter.",
        "e opens a part of the flow in $EDITOR (else vi): a paused flow is edited before it goes on, a recorded one in the session (V reverts it). The file holds:",
        "    method and URL: one line, METHOD URL (a URL starting with / changes the path alone)",
        "    status: one line, CODE REASON",
        "    headers: one Name: value line per header, in order",
        "    a body or a WebSocket message: its bytes, exactly as saved",
        "Save and quit to apply; quit without saving (or :cq in vi) to change nothing. An edit that is refused is explained, and y opens the editor again on what you wrote.",
    ] {
        lines.push(plain_line(&format!("  {text}"), Style::new()));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Filters (f)", bold));
    for (syntax, meaning) in FILTERS {
        lines.push(Line::raw(format!("  {syntax:<22}{meaning}")));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("This session", bold));
    lines.push(plain_line(
        &format!("  proxy listening at {}", facts.listen),
        Style::new(),
    ));
    lines.push(plain_line(
        &format!("  session file: {}", facts.session),
        Style::new(),
    ));
    lines.push(plain_line(
        &format!("  CA certificate for clients: {}", facts.ca_cert),
        Style::new(),
    ));
    lines
}

#[derive(Default)]
pub struct HelpView {
    scroll: usize,
    page: usize,
}

impl HelpView {
    pub fn scroll_by(&mut self, delta: isize) {
        self.scroll = (self.scroll as isize + delta).max(0) as usize;
    }

    pub fn page_down(&mut self) {
        self.scroll_by(self.page.max(1) as isize);
    }

    pub fn page_up(&mut self) {
        self.scroll_by(-(self.page.max(1) as isize));
    }

    pub fn scroll_to_top(&mut self) {
        self.scroll = 0;
    }

    pub fn scroll_to_bottom(&mut self) {
        self.scroll = usize::MAX;
    }

    pub fn render(&mut self, frame: &mut Frame, area: Rect, facts: &SessionFacts<'_>) {
        if area.height < 2 {
            return;
        }
        frame.render_widget(
            Line::styled(
                "Help — q to go back",
                Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
            ),
            Rect { height: 1, ..area },
        );
        let content = Rect {
            y: area.y + 1,
            height: area.height - 1,
            ..area
        };
        let lines = wrap(&lines(facts), content.width);
        let height = usize::from(content.height);
        self.page = height.saturating_sub(1).max(1);
        self.scroll = self.scroll.min(lines.len().saturating_sub(height));
        let end = (self.scroll + height).min(lines.len());
        frame.render_widget(Paragraph::new(lines[self.scroll..end].to_vec()), content);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Command;
    use crate::text::line_text;

    fn help_text() -> String {
        let facts = SessionFacts {
            listen: "127.0.0.1:8080",
            session: "/tmp/s.periscope",
            ca_cert: "/tmp/ca.pem",
        };
        lines(&facts)
            .iter()
            .map(line_text)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_help_shows_every_binding_with_its_keys() {
        let help = help_text();
        for binding in BINDINGS {
            let entry = format!("  {:<22}{}", keys_label(binding), binding.help);
            assert!(
                help.lines().any(|l| l.starts_with(&entry)),
                "no help line {entry:?} for {:?}",
                binding.command
            );
        }
    }

    /// The README's console key table names the first key of every command.
    #[test]
    fn the_readme_lists_every_command_key() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .unwrap();
        let start = readme.find("### The console").expect("the console section");
        let end = start
            + readme[start..]
                .find("### Headless")
                .expect("the next section");
        let table: Vec<&str> = readme[start..end]
            .lines()
            .filter(|l| l.starts_with("| `"))
            .collect();
        for command in Command::ALL {
            let binding = BINDINGS.iter().find(|b| b.command == *command).unwrap();
            let key = format!("`{}`", keys_label(binding).split(' ').next().unwrap());
            assert!(
                table
                    .iter()
                    .any(|row| row.split('|').nth(1).is_some_and(|k| k.contains(&key))),
                "README's console table has no {key} ({command:?})"
            );
        }
    }

    #[test]
    fn the_help_lists_every_filter_operator() {
        let listed: Vec<&str> = FILTERS
            .iter()
            .flat_map(|(syntax, _)| syntax.split([',', ' ']))
            .filter_map(|word| word.strip_prefix('~'))
            .collect();
        for name in periscope_flow::filter::operator_names() {
            assert!(listed.contains(&name), "~{name} is missing from {listed:?}");
        }
    }
}
