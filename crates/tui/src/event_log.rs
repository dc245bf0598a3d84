//! The event log (`E`): what the proxy logged (the session's earlier entries from
//! the store, then live ones), what the console itself reports, and whatever
//! would otherwise have been written over the screen on stderr.

use std::collections::VecDeque;

use periscope_flow::{LogEntry, LogLevel};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::text::{sanitize, wrap};
use crate::units::clock;

/// Entries kept; the oldest go first.
pub const CAPACITY: usize = 5000;

#[derive(Default)]
pub struct EventLog {
    entries: VecDeque<LogEntry>,
    /// First line on screen; `None` follows the newest entries.
    scroll: Option<usize>,
    /// First line on screen at the last draw.
    shown_from: usize,
    page: usize,
}

impl EventLog {
    pub fn new(earlier: Vec<LogEntry>) -> Self {
        let mut log = EventLog::default();
        for entry in earlier {
            log.push(entry);
        }
        log
    }

    pub fn push(&mut self, entry: LogEntry) {
        if self.entries.len() == CAPACITY {
            self.entries.pop_front();
            if let Some(scroll) = &mut self.scroll {
                *scroll = scroll.saturating_sub(1);
            }
        }
        self.entries.push_back(entry);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn scroll_by(&mut self, delta: isize) {
        let current = self.scroll.unwrap_or(self.shown_from) as isize;
        self.scroll = Some((current + delta).max(0) as usize);
    }

    pub fn page_down(&mut self) {
        self.scroll_by(self.page.max(1) as isize);
    }

    pub fn page_up(&mut self) {
        self.scroll_by(-(self.page.max(1) as isize));
    }

    pub fn scroll_to_top(&mut self) {
        self.scroll = Some(0);
    }

    /// Follows new entries again.
    pub fn scroll_to_bottom(&mut self) {
        self.scroll = None;
    }

    pub fn render(&mut self, frame: &mut Frame, area: Rect) {
        if area.height < 2 {
            return;
        }
        frame.render_widget(
            Line::styled(
                format!("Event log ({} entries)", self.entries.len()),
                Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
            ),
            Rect { height: 1, ..area },
        );
        let content = Rect {
            y: area.y + 1,
            height: area.height - 1,
            ..area
        };
        let height = usize::from(content.height);
        self.page = height.saturating_sub(1).max(1);
        let lines: Vec<Line<'static>> = self.entries.iter().map(entry_line).collect();
        let lines = wrap(&lines, content.width);
        let max = lines.len().saturating_sub(height);
        let start = self.scroll.map_or(max, |s| s.min(max));
        // Scrolled to the end: follow new entries again.
        if self.scroll.is_some_and(|s| s >= max) {
            self.scroll = None;
        }
        self.shown_from = start;
        let end = (start + height).min(lines.len());
        if lines.is_empty() {
            frame.render_widget(
                Line::styled(
                    "  (nothing logged yet)",
                    Style::new().add_modifier(Modifier::DIM),
                ),
                content,
            );
            return;
        }
        frame.render_widget(Paragraph::new(lines[start..end].to_vec()), content);
    }
}

fn entry_line(entry: &LogEntry) -> Line<'static> {
    let (label, style) = match entry.level {
        LogLevel::Debug => ("debug", Style::new().add_modifier(Modifier::DIM)),
        LogLevel::Info => ("info ", Style::new()),
        LogLevel::Warn => ("warn ", Style::new().fg(Color::Yellow)),
        LogLevel::Error => ("error", Style::new().fg(Color::Red)),
    };
    Line::from(vec![
        Span::styled(
            format!("{} ", clock(entry.at)),
            Style::new().add_modifier(Modifier::DIM),
        ),
        Span::styled(format!("{label} "), style),
        Span::raw(sanitize(&entry.message).replace('\n', " ⏎ ")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::buffer_text;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    #[test]
    fn shows_the_newest_entries_and_caps_its_size() {
        let mut log = EventLog::new(vec![LogEntry::new(LogLevel::Info, "from the store")]);
        for i in 0..CAPACITY + 10 {
            log.push(LogEntry::new(LogLevel::Warn, format!("entry {i}")));
        }
        assert_eq!(log.len(), CAPACITY);
        let mut terminal = Terminal::new(TestBackend::new(60, 6)).unwrap();
        terminal.draw(|f| log.render(f, f.area())).unwrap();
        let text = buffer_text(terminal.backend().buffer());
        assert!(text.contains(&format!("entry {}", CAPACITY + 9)), "{text}");
        log.scroll_to_top();
        terminal.draw(|f| log.render(f, f.area())).unwrap();
        let text = buffer_text(terminal.backend().buffer());
        assert!(text.contains("entry 10 "), "{text}");
    }
}
