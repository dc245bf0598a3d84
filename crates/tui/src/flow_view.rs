//! One flow, in three tabs: Request and Response (the head, then the body as
//! `body.rs` shows it) and Detail (`detail.rs`). The lines of a tab are built once
//! when it is first shown and wrapped once per screen width; drawing takes only the
//! lines on screen, so a long body scrolls as fast as a short one.

use std::sync::Arc;

use periscope_flow::{Flow, FlowId, Headers, Interception, WebSocketMessage};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;

use crate::text::{plain_line, sanitize, wrap};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Request,
    Response,
    Detail,
}

impl Tab {
    const ALL: [Tab; 3] = [Tab::Request, Tab::Response, Tab::Detail];

    fn index(self) -> usize {
        match self {
            Tab::Request => 0,
            Tab::Response => 1,
            Tab::Detail => 2,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Tab::Request => "Request",
            Tab::Response => "Response",
            Tab::Detail => "Detail",
        }
    }
}

pub struct FlowView {
    id: FlowId,
    flow: Result<Arc<Flow>, String>,
    tab: Tab,
    scroll: [usize; 3],
    lines: [Option<Vec<Line<'static>>>; 3],
    wrapped: [Option<(u16, Vec<Line<'static>>)>; 3],
    /// Content rows at the last draw, for paging.
    page: usize,
}

impl FlowView {
    /// A view of `flow`, or of the reason it could not be read.
    pub fn new(id: FlowId, flow: Result<Arc<Flow>, String>) -> Self {
        FlowView {
            id,
            flow,
            tab: Tab::Request,
            scroll: [0; 3],
            lines: [None, None, None],
            wrapped: [None, None, None],
            page: 10,
        }
    }

    pub fn id(&self) -> FlowId {
        self.id
    }

    #[cfg(test)]
    pub fn tab(&self) -> Tab {
        self.tab
    }

    pub fn flow(&self) -> Option<&Arc<Flow>> {
        self.flow.as_ref().ok()
    }

    /// A newer version of the flow arrived (it completed, or its WebSocket closed):
    /// show it, keeping the tab and the scroll positions.
    pub fn replace(&mut self, flow: Arc<Flow>) {
        self.flow = Ok(flow);
        self.lines = [None, None, None];
        self.wrapped = [None, None, None];
    }

    /// The user marked or unmarked the flow.
    pub fn set_marked(&mut self, marked: bool) {
        if let Ok(flow) = &mut self.flow {
            Arc::make_mut(flow).marked = marked;
        }
    }

    /// A message passed on the flow's WebSocket connection: the Detail tab lists it.
    pub fn push_websocket_message(&mut self, message: WebSocketMessage) {
        if let Ok(flow) = &mut self.flow {
            Arc::make_mut(flow)
                .websocket
                .get_or_insert_with(Default::default)
                .messages
                .push(message);
            let detail = Tab::Detail.index();
            self.lines[detail] = None;
            self.wrapped[detail] = None;
        }
    }

    pub fn next_tab(&mut self) {
        self.tab = Tab::ALL[(self.tab.index() + 1) % 3];
    }

    pub fn previous_tab(&mut self) {
        self.tab = Tab::ALL[(self.tab.index() + 2) % 3];
    }

    pub fn scroll_by(&mut self, delta: isize) {
        let i = self.tab.index();
        self.scroll[i] = (self.scroll[i] as isize + delta).max(0) as usize;
    }

    pub fn page_down(&mut self) {
        self.scroll_by(self.page.max(1) as isize);
    }

    pub fn page_up(&mut self) {
        self.scroll_by(-(self.page.max(1) as isize));
    }

    pub fn scroll_to_top(&mut self) {
        self.scroll[self.tab.index()] = 0;
    }

    pub fn scroll_to_bottom(&mut self) {
        self.scroll[self.tab.index()] = usize::MAX;
    }

    fn tab_lines(&mut self, tab: Tab) -> &[Line<'static>] {
        let slot = &mut self.lines[tab.index()];
        if slot.is_none() {
            *slot = Some(match &self.flow {
                Ok(flow) => match tab {
                    Tab::Request => request_lines(flow),
                    Tab::Response => response_lines(flow),
                    Tab::Detail => crate::detail::render(flow),
                },
                Err(error) => vec![plain_line(
                    &format!("cannot show this flow: {error}"),
                    Style::new().fg(Color::Red),
                )],
            });
        }
        slot.as_deref().unwrap_or_default()
    }

    fn wrapped_lines(&mut self, width: u16) -> &[Line<'static>] {
        let i = self.tab.index();
        if self.wrapped[i].as_ref().is_none_or(|(w, _)| *w != width) {
            let wrapped = wrap(self.tab_lines(self.tab), width);
            self.wrapped[i] = Some((width, wrapped));
        }
        self.wrapped[i].as_ref().map_or(&[], |(_, lines)| lines)
    }

    pub fn render(&mut self, frame: &mut Frame, area: Rect) {
        if area.height < 3 {
            return;
        }
        let title = match &self.flow {
            Ok(flow) => title_line(flow),
            Err(_) => Line::raw(format!("Flow {}", self.id)),
        };
        frame.render_widget(title, Rect { height: 1, ..area });
        // Where an intercepted flow waits, the user's notes: under the title, in at
        // most a third of the screen.
        let info = match &self.flow {
            Ok(flow) => wrap(&info_lines(flow), area.width),
            Err(_) => Vec::new(),
        };
        let info_height = (info.len() as u16).min((area.height - 3) / 3);
        if info_height > 0 {
            let mut shown = info[..usize::from(info_height)].to_vec();
            if info.len() > shown.len() {
                if let Some(last) = shown.last_mut() {
                    *last = Line::styled("  …", Style::new().add_modifier(Modifier::DIM));
                }
            }
            frame.render_widget(
                Paragraph::new(shown),
                Rect {
                    y: area.y + 1,
                    height: info_height,
                    ..area
                },
            );
        }
        let area = Rect {
            y: area.y + info_height,
            height: area.height - info_height,
            ..area
        };
        let content = Rect {
            y: area.y + 2,
            height: area.height - 2,
            ..area
        };
        let height = usize::from(content.height);
        self.page = height.saturating_sub(1).max(1);
        let tab = self.tab.index();
        let total = self.wrapped_lines(content.width).len();
        let max_scroll = total.saturating_sub(height);
        self.scroll[tab] = self.scroll[tab].min(max_scroll);
        let start = self.scroll[tab];
        let end = (start + height).min(total);
        let position = if total > height {
            format!(" lines {}-{} of {} ", start + 1, end, total)
        } else {
            String::new()
        };
        let tabs = Tabs::new(Tab::ALL.iter().map(|t| t.title()))
            .select(tab)
            .highlight_style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED))
            .divider("|");
        let tab_row = Rect {
            y: area.y + 1,
            height: 1,
            ..area
        };
        frame.render_widget(tabs, tab_row);
        let position_width = position.chars().count() as u16;
        if position_width > 0 && position_width < tab_row.width {
            frame.render_widget(
                Line::styled(position, Style::new().add_modifier(Modifier::DIM)),
                Rect {
                    x: tab_row.x + tab_row.width - position_width,
                    width: position_width,
                    ..tab_row
                },
            );
        }
        let visible = self.wrapped_lines(content.width)[start..end].to_vec();
        frame.render_widget(Paragraph::new(visible), content);
    }
}

fn title_line(flow: &Flow) -> Line<'static> {
    let status = match (&flow.response, &flow.error) {
        (Some(response), _) => format!(" {}", response.status),
        (None, Some(_)) => " (failed)".to_owned(),
        (None, None) => " (in flight)".to_owned(),
    };
    Line::from(vec![
        Span::styled(
            format!("{} ", sanitize(&flow.request.method)),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(sanitize(&flow.request.url()).into_owned()),
        Span::styled(status, Style::new().add_modifier(Modifier::BOLD)),
    ])
}

/// How many lines of a held WebSocket message the view shows above the tabs.
const HELD_MESSAGE_LINES: usize = 8;
/// CA names shown for a held certificate request.
const CA_NAMES_SHOWN: usize = 8;

/// What the user should know first: where an intercepted flow waits (with the held
/// WebSocket message, or the CAs a server asks a certificate from) and the keys that
/// let it go; the comment; whether the flow was edited, replayed or copied.
pub fn info_lines(flow: &Flow) -> Vec<Line<'static>> {
    let held = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    match &flow.intercepted {
        None => {}
        Some(Interception::Request) => lines.push(Line::styled(
            "Intercepted at the request: nothing was sent to the server yet. \
             a resumes, e edits, X kills.",
            held,
        )),
        Some(Interception::Response) => lines.push(Line::styled(
            "Intercepted at the response: nothing was sent to the client yet. \
             a resumes, e edits, X kills.",
            held,
        )),
        Some(Interception::WebSocketMessage { message }) => {
            let from = if message.from_client {
                "the client"
            } else {
                "the server"
            };
            lines.push(Line::styled(
                format!(
                    "Intercepted WebSocket message from {from} ({}, {} bytes{}): \
                     a delivers it, W edits or drops it, X kills the connection.",
                    format!("{:?}", message.opcode).to_lowercase(),
                    message.size,
                    if message.truncated { ", cut" } else { "" }
                ),
                held,
            ));
            let mut message_lines = match message.text() {
                Some(text) => crate::text::text_lines(text),
                None => crate::body::hex_dump(&message.content),
            };
            if message_lines.len() > HELD_MESSAGE_LINES {
                let more = message_lines.len() - HELD_MESSAGE_LINES;
                message_lines.truncate(HELD_MESSAGE_LINES);
                message_lines.push(Line::raw(format!("… {more} more lines (W, e shows all)")));
            }
            for line in message_lines {
                let mut spans = vec![Span::raw("  │ ")];
                spans.extend(line.spans);
                lines.push(Line::from(spans));
            }
        }
        Some(Interception::ClientCertificate {
            ca_names,
            post_handshake,
        }) => {
            let how = if *post_handshake {
                "after the handshake (TLS 1.3 post-handshake authentication)"
            } else {
                "in a renegotiation"
            };
            lines.push(Line::styled(
                format!(
                    "Intercepted: the server asks for a client certificate {how}. \
                     c chooses one, a sends the configured one, X abandons the handshake."
                ),
                held,
            ));
            if ca_names.is_empty() {
                lines.push(Line::raw("  Acceptable CAs: any (the server named none)"));
            } else {
                lines.push(Line::raw("  Acceptable CAs:"));
                for name in ca_names.iter().take(CA_NAMES_SHOWN) {
                    lines.push(plain_line(&format!("    {name}"), Style::new()));
                }
                if ca_names.len() > CA_NAMES_SHOWN {
                    lines.push(Line::raw(format!(
                        "    … and {} more",
                        ca_names.len() - CA_NAMES_SHOWN
                    )));
                }
            }
        }
    }
    let notes = &flow.annotations;
    if !notes.comment.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("Comment: ", Style::new().add_modifier(Modifier::BOLD)),
            Span::styled(
                sanitize(&notes.comment).into_owned(),
                Style::new().fg(Color::Yellow),
            ),
        ]));
    }
    let mut facts = Vec::new();
    if notes.modified {
        facts.push("edited (V reverts to what was recorded)".to_owned());
    }
    if let Some(original) = notes.replay_of {
        facts.push(format!("a replay of flow {original}"));
    }
    if let Some(original) = notes.duplicate_of {
        facts.push(format!("a copy of flow {original}"));
    }
    if !facts.is_empty() {
        lines.push(Line::styled(
            format!("This flow is {}.", facts.join("; ")),
            Style::new().fg(Color::Cyan),
        ));
    }
    lines
}

fn header_lines(lines: &mut Vec<Line<'static>>, headers: &Headers) {
    for header in headers.iter() {
        lines.push(Line::from(vec![
            Span::styled(
                format!("{}: ", sanitize(&header.name)),
                Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD),
            ),
            Span::raw(sanitize(&header.value_lossy()).into_owned()),
        ]));
    }
}

fn section(lines: &mut Vec<Line<'static>>, title: &str) {
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        title.to_owned(),
        Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
    ));
}

/// Where an HTTP/2 message travelled: the stream of its connection.
fn stream_label(stream_id: Option<u32>, which: &str) -> String {
    stream_id.map_or_else(String::new, |id| format!("  ({which} {id})"))
}

fn request_lines(flow: &Flow) -> Vec<Line<'static>> {
    let request = &flow.request;
    let mut lines = vec![Line::styled(
        format!(
            "{} {} {}",
            sanitize(&request.method),
            sanitize(&request.path),
            sanitize(&request.http_version)
        ) + &stream_label(request.stream_id, "stream"),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    header_lines(&mut lines, &request.headers);
    if let Some((_, query)) = request.path.split_once('?') {
        section(&mut lines, "Query");
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            lines.push(plain_line(&format!("{key}={value}"), Style::new()));
        }
    }
    section(&mut lines, "Body");
    lines.extend(crate::body::render(&request.headers, &request.body));
    if let Some(trailers) = &request.trailers {
        section(&mut lines, "Trailers");
        header_lines(&mut lines, trailers);
    }
    lines
}

fn response_lines(flow: &Flow) -> Vec<Line<'static>> {
    let Some(response) = &flow.response else {
        let mut lines = Vec::new();
        match &flow.error {
            Some(error) => {
                lines.push(plain_line(
                    "No response: the flow failed.",
                    Style::new().add_modifier(Modifier::BOLD),
                ));
                lines.push(plain_line(&error.message, Style::new().fg(Color::Red)));
            }
            None => lines.push(Line::raw("No response yet.")),
        }
        return lines;
    };
    let mut lines = vec![Line::styled(
        format!(
            "{} {} {}",
            sanitize(&response.http_version),
            response.status,
            sanitize(&response.reason)
        ) + &stream_label(response.stream_id, "server's stream"),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if response.generated {
        lines.push(Line::styled(
            "(made by Periscope, not the server)",
            Style::new().fg(Color::Yellow),
        ));
    }
    header_lines(&mut lines, &response.headers);
    section(&mut lines, "Body");
    lines.extend(crate::body::render(&response.headers, &response.body));
    if let Some(trailers) = &response.trailers {
        section(&mut lines, "Trailers");
        header_lines(&mut lines, trailers);
    }
    if let Some(error) = &flow.error {
        section(&mut lines, "Error");
        lines.push(plain_line(&error.message, Style::new().fg(Color::Red)));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(view: &mut FlowView, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|frame| view.render(frame, frame.area()))
            .unwrap();
        fixtures::buffer_text(terminal.backend().buffer())
    }

    #[test]
    fn tabs_cycle_and_show_their_content() {
        let flow = Arc::new(fixtures::flow(
            "POST",
            "example.com",
            "/login?next=%2Fhome",
            Some(302),
        ));
        let mut view = FlowView::new(flow.id, Ok(flow));
        let text = screen(&mut view, 80, 24);
        assert!(
            text.contains("POST https://example.com/login?next=%2Fhome 302"),
            "{text}"
        );
        assert!(
            text.contains("content-type: application/x-www-form-urlencoded"),
            "{text}"
        );
        assert!(text.contains("next=/home"), "{text}");
        assert!(text.contains("user=alice"), "{text}");
        view.next_tab();
        let text = screen(&mut view, 80, 24);
        assert!(text.contains("HTTP/1.1 302 Found"), "{text}");
        view.next_tab();
        assert_eq!(view.tab(), Tab::Detail);
        let text = screen(&mut view, 80, 40);
        assert!(text.contains("Timing"), "{text}");
        view.next_tab();
        assert_eq!(view.tab(), Tab::Request);
        view.previous_tab();
        assert_eq!(view.tab(), Tab::Detail);
    }

    #[test]
    fn scrolling_is_clamped_and_resizing_rewraps() {
        let mut flow = fixtures::flow("GET", "example.com", "/", Some(200));
        if let Some(response) = &mut flow.response {
            response.body = periscope_flow::Body::complete("line\n".repeat(500));
            response.headers = Headers::default();
            response.headers.push("content-type", "text/plain");
        }
        let flow = Arc::new(flow);
        let mut view = FlowView::new(flow.id, Ok(flow));
        view.next_tab();
        view.scroll_to_bottom();
        let text = screen(&mut view, 60, 20);
        assert!(text.contains("lines 489-506 of 506"), "{text}");
        view.page_up();
        view.scroll_by(-10_000);
        let text = screen(&mut view, 60, 20);
        assert!(text.contains("lines 1-18"), "{text}");
        // Tiny and zero-sized areas draw nothing and do not panic.
        screen(&mut view, 1, 1);
        screen(&mut view, 3, 3);
    }

    #[test]
    fn odd_bodies_draw_at_any_width_without_panicking() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let types = [
            "application/json",
            "text/html",
            "application/x-www-form-urlencoded",
            "application/octet-stream",
            "",
        ];
        let pieces: [&[u8]; 8] = [
            "日本語".as_bytes(),
            "e\u{301}\u{200d}👩‍💻".as_bytes(),
            b"\x1b[2J\x1b]0;title\x07",
            b"\t\r\n",
            b"{\"a\":[",
            &[0xff, 0xfe, 0x00],
            "\u{2028}\u{202e}".as_bytes(),
            b"%zz&=&a=%e2%82",
        ];
        for round in 0..150 {
            let mut bytes = Vec::new();
            for _ in 0..(next() % 40) {
                bytes.extend_from_slice(pieces[(next() % 8) as usize]);
            }
            let mut flow = fixtures::flow("POST", "odd.example", "/?a=%ff&b", Some(200));
            if let Some(response) = &mut flow.response {
                response.headers = Headers::default();
                response
                    .headers
                    .push("content-type", types[round % types.len()]);
                response.body = periscope_flow::Body::complete(bytes.clone());
            }
            flow.request.body = periscope_flow::Body::complete(bytes);
            let flow = Arc::new(flow);
            let mut view = FlowView::new(flow.id, Ok(flow));
            let width = 1 + (next() % 120) as u16;
            let height = 1 + (next() % 40) as u16;
            for _ in 0..3 {
                screen(&mut view, width, height);
                view.page_down();
                view.next_tab();
            }
        }
    }

    #[test]
    fn unreadable_flow_says_why() {
        let mut view = FlowView::new(periscope_flow::FlowId::new(), Err("gone".into()));
        let text = screen(&mut view, 60, 10);
        assert!(text.contains("cannot show this flow: gone"), "{text}");
    }
}
