//! The two lines at the bottom: the status bar (flow count, filter, the intercept
//! filter and how many flows wait, listen address) and below it the message line,
//! where prompts also appear.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use crate::text::{sanitize, truncate};

pub struct Status<'a> {
    pub shown: usize,
    pub total: usize,
    pub filter: Option<&'a str>,
    pub filtering: bool,
    pub following: bool,
    pub saving: bool,
    pub listen: &'a str,
    /// The proxy's intercept filter.
    pub intercept: Option<&'a str>,
    /// Flows intercepted now.
    pub held: usize,
    /// False for a console without a proxy.
    pub proxy: bool,
}

pub fn render_status(frame: &mut Frame, area: Rect, status: &Status<'_>) {
    let bar = Style::new().bg(Color::Blue).fg(Color::White);
    let count = if status.filtering {
        format!("[…/{} flows]", status.total)
    } else if status.filter.is_some() {
        format!("[{}/{} flows]", status.shown, status.total)
    } else {
        format!("[{} flows]", status.total)
    };
    let mut left = vec![Span::styled(count, bar.add_modifier(Modifier::BOLD))];
    if let Some(filter) = status.filter {
        let state = if status.filtering {
            " filtering…"
        } else {
            ""
        };
        left.push(Span::styled(
            format!(" [filter: {}{state}]", sanitize(filter)),
            bar.fg(Color::Yellow),
        ));
    }
    if let Some(intercept) = status.intercept {
        left.push(Span::styled(
            format!(" [intercept: {}]", sanitize(intercept)),
            bar.fg(Color::LightRed).add_modifier(Modifier::BOLD),
        ));
    }
    if status.held > 0 {
        left.push(Span::styled(
            format!(" [{} intercepted: a resumes]", status.held),
            bar.bg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    if status.following {
        left.push(Span::styled(" [follow]", bar));
    }
    if status.saving {
        left.push(Span::styled(" [saving…]", bar));
    }
    let right = if status.proxy {
        format!("[{}] ? help ", status.listen)
    } else {
        "[no proxy] ? help ".to_owned()
    };
    let used: usize = left.iter().map(|s| s.content.width()).sum();
    let width = usize::from(area.width);
    let gap = width.saturating_sub(used + right.width());
    if gap > 0 {
        left.push(Span::styled(" ".repeat(gap), bar));
        left.push(Span::styled(right, bar));
    } else {
        left.push(Span::styled(" ".repeat(width.saturating_sub(used)), bar));
    }
    frame.render_widget(Line::from(left).style(bar), area);
}

pub fn render_message(frame: &mut Frame, area: Rect, text: &str, error: bool) {
    let style = if error {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    let text = sanitize(text);
    let line = Line::styled(truncate(&text, usize::from(area.width)).into_owned(), style);
    frame.render_widget(line, area);
}
