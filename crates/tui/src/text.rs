//! Turning recorded text into terminal lines: control characters made visible (a
//! body or header must never move the cursor or change colours), and styled lines
//! wrapped to the width of the screen.

use std::borrow::Cow;

use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthChar;

/// How a tab is shown.
const TAB: &str = "    ";

/// `text` safe to draw: tabs become spaces, other control characters `\xNN` (or
/// `\u{NNNN}` for C1 controls), so that nothing in a peer's data reaches the
/// terminal as a command.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push_str(TAB),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One line of sanitized text in one style.
pub fn plain_line(text: &str, style: ratatui::style::Style) -> Line<'static> {
    Line::from(Span::styled(sanitize(text).into_owned(), style))
}

/// Splits `text` into lines (a trailing `\r` of each is dropped) and sanitizes each.
pub fn text_lines(text: &str) -> Vec<Line<'static>> {
    text.split('\n')
        .map(|line| Line::raw(sanitize(line.strip_suffix('\r').unwrap_or(line)).into_owned()))
        .collect()
}

/// Breaks every line wider than `width` columns into several, keeping the styles.
/// Lines are cut at the column, not at word boundaries: bodies and headers are data,
/// and every character must stay visible.
pub fn wrap(lines: &[Line<'static>], width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width.max(1));
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        if line.width() <= width {
            out.push(line.clone());
            continue;
        }
        let mut current: Vec<Span<'static>> = Vec::new();
        let mut used = 0;
        for span in &line.spans {
            let mut piece = String::new();
            for c in span.content.chars() {
                let w = c.width().unwrap_or(0);
                if used + w > width && used > 0 {
                    if !piece.is_empty() {
                        current.push(Span::styled(std::mem::take(&mut piece), span.style));
                    }
                    out.push(Line::from(std::mem::take(&mut current)).style(line.style));
                    used = 0;
                }
                piece.push(c);
                used += w;
            }
            if !piece.is_empty() {
                current.push(Span::styled(piece, span.style));
            }
        }
        if !current.is_empty() {
            out.push(Line::from(current).style(line.style));
        }
    }
    out
}

/// `text` cut to at most `width` columns, with `…` when something was cut.
pub fn truncate(text: &str, width: usize) -> Cow<'_, str> {
    let total: usize = text.chars().map(|c| c.width().unwrap_or(0)).sum();
    if total <= width {
        return Cow::Borrowed(text);
    }
    if width == 0 {
        return Cow::Borrowed("");
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    Cow::Owned(out)
}

/// `text` padded with spaces (or cut) to exactly `width` columns.
pub fn fit(text: &str, width: usize) -> String {
    let cut = truncate(text, width);
    let used: usize = cut.chars().map(|c| c.width().unwrap_or(0)).sum();
    let mut out = cut.into_owned();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
    out
}

/// The plain text of a line (for tests and searches).
#[cfg(test)]
pub fn line_text(line: &Line<'_>) -> String {
    line.spans.iter().map(|s| s.content.as_ref()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::style::{Style, Stylize};

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(sanitize("plain"), "plain");
        assert!(matches!(sanitize("plain"), Cow::Borrowed(_)));
        assert_eq!(sanitize("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(sanitize("a\tb"), "a    b");
        assert_eq!(sanitize("\u{9b}x"), "\\u{009b}x");
        assert_eq!(sanitize("\r"), "\\x0d");
    }

    #[test]
    fn text_lines_drop_the_cr_of_crlf() {
        let lines = text_lines("a\r\nb\n");
        let texts: Vec<String> = lines.iter().map(line_text).collect();
        assert_eq!(texts, vec!["a", "b", ""]);
    }

    #[test]
    fn wrap_cuts_at_the_width_and_keeps_styles() {
        let line = Line::from(vec![Span::raw("abcd"), "efgh".red()]);
        let wrapped = wrap(&[line], 3);
        let texts: Vec<String> = wrapped.iter().map(line_text).collect();
        assert_eq!(texts, vec!["abc", "def", "gh"]);
        assert_eq!(wrapped[1].spans[1].style, Style::new().red());
    }

    #[test]
    fn wrap_handles_wide_characters_and_zero_width() {
        let wrapped = wrap(&[Line::raw("日本語テキスト")], 5);
        let texts: Vec<String> = wrapped.iter().map(line_text).collect();
        assert_eq!(texts, vec!["日本", "語テ", "キス", "ト"]);
        // A width of zero is treated as one: no endless loop, no panic.
        assert_eq!(wrap(&[Line::raw("日本")], 0).len(), 2);
    }

    #[test]
    fn truncate_and_fit() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("abc", 0), "");
        assert_eq!(fit("ab", 4), "ab  ");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("日本語", 4), "日… ");
    }
}
