//! The help screen (`?`): the key bindings (from the same table the keys go
//! through), what the list's markers mean, the filter language, and where this
//! session lives.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::flow_list::WAITING_MARKER;
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
    ("~replay, ~replayq", "replays of a request"),
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
        ("…", "in flight: no response yet"),
    ] {
        lines.push(Line::raw(format!("  {marker:<4}{meaning}")));
    }
    lines.push(Line::raw(format!(
        "  {WAITING_MARKER} (time column): the request still waits for its response"
    )));
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
    use super::FILTERS;

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
