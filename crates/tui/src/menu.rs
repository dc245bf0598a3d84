//! A small menu over the screen, as mitmproxy's choosers: which part to edit, which
//! export format, which certificate. An item is chosen with its letter, or with the
//! arrows (`j`/`k`) and Enter; Esc or `q` closes the menu.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use crate::text::sanitize;

pub struct Menu<A> {
    pub title: String,
    items: Vec<(char, String, A)>,
    selected: usize,
}

/// What a key did to the menu.
pub enum MenuOutcome<A> {
    Open,
    Chosen(A),
    Cancelled,
}

impl<A: Clone> Menu<A> {
    /// A menu of `(letter, label, action)` items; the letters must differ, and `q`
    /// is not one (it closes the menu).
    pub fn new(title: impl Into<String>, items: Vec<(char, String, A)>) -> Self {
        debug_assert!(items.iter().all(|(key, _, _)| *key != 'q'));
        Menu {
            title: title.into(),
            items,
            selected: 0,
        }
    }

    #[cfg(test)]
    pub fn labels(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|(key, label, _)| format!("{key} {label}"))
            .collect()
    }

    pub fn handle_key(&mut self, key: &KeyEvent) -> MenuOutcome<A> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let last = self.items.len().saturating_sub(1);
        match key.code {
            KeyCode::Esc | KeyCode::Char('q') => return MenuOutcome::Cancelled,
            KeyCode::Char('c') if ctrl => return MenuOutcome::Cancelled,
            KeyCode::Down | KeyCode::Tab => self.selected = (self.selected + 1).min(last),
            KeyCode::Char('n') if ctrl => self.selected = (self.selected + 1).min(last),
            KeyCode::Up | KeyCode::BackTab => self.selected = self.selected.saturating_sub(1),
            KeyCode::Char('p') if ctrl => self.selected = self.selected.saturating_sub(1),
            KeyCode::Enter => {
                if let Some((_, _, action)) = self.items.get(self.selected) {
                    return MenuOutcome::Chosen(action.clone());
                }
                return MenuOutcome::Cancelled;
            }
            KeyCode::Char(c) if !ctrl => {
                if let Some((_, _, action)) = self.items.iter().find(|(key, _, _)| *key == c) {
                    return MenuOutcome::Chosen(action.clone());
                }
                // j and k move when no item has them as its letter.
                match c {
                    'j' => self.selected = (self.selected + 1).min(last),
                    'k' => self.selected = self.selected.saturating_sub(1),
                    _ => {}
                }
            }
            _ => {}
        }
        MenuOutcome::Open
    }

    /// Draws the menu in a box near the middle of `area`.
    pub fn render(&self, frame: &mut Frame, area: Rect) {
        let lines: Vec<Line<'static>> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, (key, label, _))| {
                let line = Line::from(vec![
                    Span::styled(
                        format!(" {key} "),
                        Style::new().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(format!(" {} ", sanitize(label))),
                ]);
                if i == self.selected {
                    line.style(Style::new().add_modifier(Modifier::REVERSED))
                } else {
                    line
                }
            })
            .collect();
        let hint = "Esc closes";
        let widest = lines
            .iter()
            .map(Line::width)
            .chain([self.title.chars().count() + 2, hint.len() + 2])
            .max()
            .unwrap_or(10);
        let width = (widest as u16 + 2).min(area.width);
        let height = (lines.len() as u16 + 2).min(area.height);
        if width < 4 || height < 3 {
            return;
        }
        let popup = Rect {
            x: area.x + (area.width - width) / 2,
            y: area.y + (area.height - height) / 3,
            width,
            height,
        };
        let block = Block::default()
            .borders(Borders::ALL)
            .title(Span::styled(
                format!(" {} ", sanitize(&self.title)),
                Style::new().add_modifier(Modifier::BOLD),
            ))
            .title_bottom(Line::raw(format!(" {hint} ")).right_aligned());
        frame.render_widget(Clear, popup);
        frame.render_widget(Paragraph::new(lines).block(block), popup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(menu: &mut Menu<u8>, code: KeyCode) -> Option<Option<u8>> {
        match menu.handle_key(&KeyEvent::new(code, KeyModifiers::NONE)) {
            MenuOutcome::Open => None,
            MenuOutcome::Chosen(action) => Some(Some(action)),
            MenuOutcome::Cancelled => Some(None),
        }
    }

    fn menu() -> Menu<u8> {
        Menu::new(
            "Pick",
            vec![('a', "first".into(), 1), ('b', "second".into(), 2)],
        )
    }

    #[test]
    fn letters_arrows_and_escape() {
        let mut menu = menu();
        assert_eq!(press(&mut menu, KeyCode::Char('b')), Some(Some(2)));
        assert_eq!(press(&mut menu, KeyCode::Char('x')), None);
        assert_eq!(press(&mut menu, KeyCode::Down), None);
        assert_eq!(press(&mut menu, KeyCode::Down), None);
        assert_eq!(press(&mut menu, KeyCode::Enter), Some(Some(2)));
        assert_eq!(press(&mut menu, KeyCode::Char('k')), None);
        assert_eq!(press(&mut menu, KeyCode::Enter), Some(Some(1)));
        assert_eq!(press(&mut menu, KeyCode::Esc), Some(None));
        assert_eq!(press(&mut menu, KeyCode::Char('q')), Some(None));
    }
}
