//! The one-line prompt at the bottom of the screen: the filter (`f`), the intercept
//! filter (`i`), a comment (`;`), the file to save or export to, a certificate's
//! path, and yes/no questions.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use periscope_flow::FlowId;

use crate::editor::EditorJob;
use crate::export::Format;
use crate::text::sanitize;

/// What the prompt is asking for; the app acts on the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Question {
    Filter,
    SavePath,
    /// Overwrite this existing file?
    Overwrite(std::path::PathBuf),
    /// Delete every flow of the session?
    ClearAll,
    /// The intercept filter.
    Intercept,
    /// `NAME=VALUE`: one of the proxy's options.
    SetOption,
    /// The flow's comment.
    Comment(FlowId),
    /// The PEM file (certificate and key) to answer the flow's certificate request.
    CertificatePath(FlowId),
    /// Where to export the flow.
    ExportPath(FlowId, Format),
    /// Replace this existing file with the export?
    ExportOverwrite(FlowId, Format, std::path::PathBuf),
    /// The edit was refused: open the editor again on what the user wrote?
    EditAgain(Box<EditorJob>),
}

impl Question {
    fn is_yes_no(&self) -> bool {
        matches!(
            self,
            Question::Overwrite(_)
                | Question::ClearAll
                | Question::ExportOverwrite(..)
                | Question::EditAgain(_)
        )
    }
}

/// What a key did to the prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still editing.
    Editing,
    /// The user answered (Enter, or `y`/`n` to a yes/no question).
    Submitted(String),
    /// Esc or ctrl-c: the question is withdrawn.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Prompt {
    pub question: Question,
    label: String,
    input: String,
    /// Cursor position in characters.
    cursor: usize,
}

impl Prompt {
    pub fn new(question: Question, label: impl Into<String>, initial: &str) -> Self {
        Prompt {
            question,
            label: label.into(),
            input: initial.to_owned(),
            cursor: initial.chars().count(),
        }
    }

    #[cfg(test)]
    pub fn input(&self) -> &str {
        &self.input
    }

    pub fn handle_key(&mut self, key: &KeyEvent) -> Outcome {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if self.question.is_yes_no() {
            return match key.code {
                KeyCode::Char('y' | 'Y') => Outcome::Submitted("y".to_owned()),
                KeyCode::Char('c') if ctrl => Outcome::Cancelled,
                KeyCode::Char(_) | KeyCode::Enter | KeyCode::Esc => {
                    Outcome::Submitted("n".to_owned())
                }
                _ => Outcome::Editing,
            };
        }
        match key.code {
            KeyCode::Enter => return Outcome::Submitted(self.input.clone()),
            KeyCode::Esc => return Outcome::Cancelled,
            KeyCode::Char('c') if ctrl => return Outcome::Cancelled,
            KeyCode::Char('u') if ctrl => {
                self.input.clear();
                self.cursor = 0;
            }
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = self.len(),
            KeyCode::Char(c) if !ctrl => {
                let at = self.byte_index(self.cursor);
                self.input.insert(at, c);
                self.cursor += 1;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = self.byte_index(self.cursor);
                self.input.remove(at);
            }
            KeyCode::Delete if self.cursor < self.len() => {
                let at = self.byte_index(self.cursor);
                self.input.remove(at);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.len()),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.len(),
            _ => {}
        }
        Outcome::Editing
    }

    fn len(&self) -> usize {
        self.input.chars().count()
    }

    fn byte_index(&self, chars: usize) -> usize {
        self.input
            .char_indices()
            .nth(chars)
            .map_or(self.input.len(), |(i, _)| i)
    }

    pub fn render(&self, frame: &mut Frame, area: Rect) {
        let label = format!("{}: ", self.label);
        let input = sanitize(&self.input).into_owned();
        let line = Line::from(vec![
            Span::styled(label.clone(), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(input),
        ]);
        frame.render_widget(line, area);
        let before: String = self.input.chars().take(self.cursor).collect();
        let x = area.x as usize + label.width() + sanitize(&before).width();
        let x = x.min((area.x + area.width).saturating_sub(1) as usize);
        frame.set_cursor_position(Position::new(x as u16, area.y));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(prompt: &mut Prompt, code: KeyCode) -> Outcome {
        prompt.handle_key(&KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn type_text(prompt: &mut Prompt, text: &str) {
        for c in text.chars() {
            press(prompt, KeyCode::Char(c));
        }
    }

    #[test]
    fn editing_and_submitting() {
        let mut prompt = Prompt::new(Question::Filter, "Filter", "~c");
        type_text(&mut prompt, " 400");
        assert_eq!(prompt.input(), "~c 400");
        press(&mut prompt, KeyCode::Home);
        press(&mut prompt, KeyCode::Delete);
        type_text(&mut prompt, "!~");
        press(&mut prompt, KeyCode::End);
        press(&mut prompt, KeyCode::Backspace);
        assert_eq!(prompt.input(), "!~c 40");
        assert_eq!(
            press(&mut prompt, KeyCode::Enter),
            Outcome::Submitted("!~c 40".into())
        );
        assert_eq!(press(&mut prompt, KeyCode::Esc), Outcome::Cancelled);
    }

    #[test]
    fn multibyte_input_is_edited_by_character() {
        let mut prompt = Prompt::new(Question::SavePath, "Save", "");
        type_text(&mut prompt, "fé日");
        press(&mut prompt, KeyCode::Left);
        press(&mut prompt, KeyCode::Backspace);
        assert_eq!(prompt.input(), "f日");
        press(&mut prompt, KeyCode::Backspace);
        press(&mut prompt, KeyCode::Backspace);
        press(&mut prompt, KeyCode::Backspace);
        assert_eq!(prompt.input(), "日");
    }

    #[test]
    fn yes_no_questions_take_one_key() {
        let mut prompt = Prompt::new(Question::ClearAll, "Delete all?", "");
        assert_eq!(
            press(&mut prompt, KeyCode::Char('y')),
            Outcome::Submitted("y".into())
        );
        assert_eq!(
            press(&mut prompt, KeyCode::Char('x')),
            Outcome::Submitted("n".into())
        );
    }
}
