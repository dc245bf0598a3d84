//! Showing a message body: `Content-Encoding` undone, then pretty JSON, a
//! form as `key=value` lines, XML/HTML and other text as it is, anything else as a
//! hex dump. Bodies come from untrusted peers, so everything here is bounded and
//! nothing panics: a huge body shows its first [`SHOWN_LIMIT`] bytes with a note,
//! a corrupt one says why and shows its raw bytes.

use periscope_flow::content::{decode_body_with_limit, DecodeError};
use periscope_flow::{Body, Headers};
use periscope_model::units::format_size;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;

use crate::text::{plain_line, text_lines};

/// How much of a (decoded) body is turned into lines; the rest is announced.
pub const SHOWN_LIMIT: usize = 256 * 1024;
/// How much a compressed body may inflate to before the view gives up.
pub const DECODE_LIMIT: usize = 16 * 1024 * 1024;
/// Bytes per hex dump line.
const HEX_WIDTH: usize = 16;
/// How many bytes a hex dump shows (each takes about four columns).
const HEX_LIMIT: usize = SHOWN_LIMIT / 4;

/// What a body looks like, by its `Content-Type` and, failing that, its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    /// XML, HTML and any other text.
    Text,
    Binary,
}

/// The lines that show `body`, sent with `headers`, starting with a one-line
/// description (size, type, decoding).
pub fn render(headers: &Headers, body: &Body) -> Vec<Line<'static>> {
    let note = Style::new().fg(Color::Yellow);
    let mut lines = Vec::new();
    if body.size == 0 && body.content.is_empty() {
        lines.push(Line::styled("(no body)", dim()));
        return lines;
    }
    let content_type = headers.get_str("content-type").map(|v| v.into_owned());
    let encoding = headers
        .get_str("content-encoding")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("identity"));

    let mut description = format!("{} bytes", body.size);
    if let Some(content_type) = &content_type {
        description.push_str(&format!(", {content_type}"));
    }
    let decoded = match &encoding {
        None => Ok(std::borrow::Cow::Borrowed(&body.content[..])),
        Some(encoding) => decode_body_with_limit(Some(encoding), &body.content, DECODE_LIMIT),
    };
    if let (Some(encoding), Ok(decoded)) = (&encoding, &decoded) {
        description.push_str(&format!(
            ", {encoding}-decoded to {}",
            format_size(decoded.len() as u64)
        ));
    }
    lines.push(plain_line(&description, dim()));
    if body.truncated {
        lines.push(plain_line(
            &format!(
                "recorded: the first {} of {} bytes (the body limit, --body-limit)",
                body.content.len(),
                body.size
            ),
            note,
        ));
    }
    let bytes: &[u8] = match &decoded {
        Ok(bytes) => bytes,
        Err(error) => {
            lines.push(plain_line(&decode_failure(error, body.truncated), note));
            lines.extend(hex_dump(&body.content));
            return lines;
        }
    };
    let kind = classify(content_type.as_deref(), bytes);
    match kind {
        BodyKind::Json => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => {
                let (pretty, cut) = pretty_json(bytes, SHOWN_LIMIT);
                lines.extend(text_lines(&pretty));
                if cut {
                    lines.push(shown_note(bytes.len()));
                }
            }
            Err(error) => {
                lines.push(plain_line(&format!("not valid JSON ({error}):"), note));
                push_text(&mut lines, bytes);
            }
        },
        BodyKind::Form => push_form(&mut lines, bytes),
        BodyKind::Text => push_text(&mut lines, bytes),
        BodyKind::Binary => lines.extend(hex_dump(bytes)),
    }
    lines
}

fn dim() -> Style {
    Style::new().add_modifier(Modifier::DIM)
}

fn shown_note(total: usize) -> Line<'static> {
    plain_line(
        &format!(
            "… showing the first {} of {}; save the flow (w) to see all of it",
            format_size(SHOWN_LIMIT as u64),
            format_size(total as u64)
        ),
        Style::new().fg(Color::Yellow),
    )
}

fn decode_failure(error: &DecodeError, truncated: bool) -> String {
    let why = if truncated {
        " (the recorded body was cut at the body limit)"
    } else {
        ""
    };
    format!("cannot decode: {error}{why}; the raw bytes:")
}

/// Decides how to show `bytes`: by `Content-Type` first, by the bytes otherwise.
pub fn classify(content_type: Option<&str>, bytes: &[u8]) -> BodyKind {
    let media = content_type
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media == "application/x-www-form-urlencoded" {
        return BodyKind::Form;
    }
    if media.ends_with("json") || media.ends_with("+json") {
        return BodyKind::Json;
    }
    let binary_media = (["image/", "audio/", "video/", "font/"]
        .iter()
        .any(|p| media.starts_with(p))
        && !media.contains("svg"))
        || [
            "application/octet-stream",
            "application/pdf",
            "application/zip",
            "application/gzip",
            "application/wasm",
            "application/grpc",
            "application/x-protobuf",
            "application/protobuf",
        ]
        .contains(&media.as_str());
    if binary_media {
        return BodyKind::Binary;
    }
    let textual_media = media.starts_with("text/")
        || media.contains("xml")
        || media.contains("javascript")
        || media.contains("html");
    if looks_like_text(bytes) || (textual_media && !bytes.contains(&0)) {
        if media.is_empty() && looks_like_json(bytes) {
            return BodyKind::Json;
        }
        return BodyKind::Text;
    }
    BodyKind::Binary
}

fn looks_like_json(bytes: &[u8]) -> bool {
    let start = bytes.iter().find(|b| !b.is_ascii_whitespace());
    matches!(start, Some(b'{' | b'['))
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// UTF-8 (a character cut at the end of a sample is fine) with few control
/// characters besides whitespace.
fn looks_like_text(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(4096)];
    let valid = match std::str::from_utf8(sample) {
        Ok(text) => text,
        Err(error) if error.error_len().is_none() => {
            // Only the end cut a character (the sample's, or the recording's).
            match std::str::from_utf8(&sample[..error.valid_up_to()]) {
                Ok(text) => text,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    let controls = valid
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c'))
        .count();
    controls * 20 <= valid.chars().count().max(1)
}

fn push_text(lines: &mut Vec<Line<'static>>, bytes: &[u8]) {
    let shown = &bytes[..bytes.len().min(SHOWN_LIMIT)];
    let text = String::from_utf8_lossy(shown);
    lines.extend(text_lines(&text));
    if shown.len() < bytes.len() {
        lines.push(shown_note(bytes.len()));
    }
}

fn push_form(lines: &mut Vec<Line<'static>>, bytes: &[u8]) {
    let shown = &bytes[..bytes.len().min(SHOWN_LIMIT)];
    for (key, value) in form_urlencoded::parse(shown) {
        lines.push(plain_line(&format!("{key}={value}"), Style::new()));
    }
    if shown.len() < bytes.len() {
        lines.push(shown_note(bytes.len()));
    }
}

/// `00000000  48 65 6c 6c 6f 0a …  Hello.` for the first [`HEX_LIMIT`] bytes.
pub fn hex_dump(bytes: &[u8]) -> Vec<Line<'static>> {
    let shown = &bytes[..bytes.len().min(HEX_LIMIT)];
    let mut lines: Vec<Line<'static>> = shown
        .chunks(HEX_WIDTH)
        .enumerate()
        .map(|(row, chunk)| {
            let mut text = format!("{:08x}  ", row * HEX_WIDTH);
            for i in 0..HEX_WIDTH {
                match chunk.get(i) {
                    Some(b) => text.push_str(&format!("{b:02x} ")),
                    None => text.push_str("   "),
                }
                if i == 7 {
                    text.push(' ');
                }
            }
            text.push(' ');
            text.extend(chunk.iter().map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            }));
            Line::raw(text)
        })
        .collect();
    if shown.len() < bytes.len() {
        lines.push(plain_line(
            &format!(
                "… showing the first {} of {} as hex; save the flow (w) to see all of it",
                format_size(HEX_LIMIT as u64),
                format_size(bytes.len() as u64)
            ),
            Style::new().fg(Color::Yellow),
        ));
    }
    lines
}

/// Re-indents valid JSON without parsing it into values, so keys keep their order
/// and numbers their spelling. Stops once the output passes `limit` bytes; the flag
/// says whether it did.
pub fn pretty_json(bytes: &[u8], limit: usize) -> (String, bool) {
    const INDENT: &str = "  ";
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len().min(limit) + 64);
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(INDENT);
        }
    };
    while let Some(c) = chars.next() {
        if out.len() > limit {
            return (out, true);
        }
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Keep `{}` and `[]` on one line.
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::line_text;
    use std::io::Write;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut headers = Headers::default();
        for (name, value) in pairs {
            headers.push(*name, *value);
        }
        headers
    }

    fn texts(lines: &[Line<'_>]) -> Vec<String> {
        lines.iter().map(line_text).collect()
    }

    #[test]
    fn json_is_pretty_and_keeps_key_order() {
        let body = Body::complete(&br#"{"z":1,"a":[1,2,{}],"s":"x,{y}:\"q\"","e":[]}"#[..]);
        let lines = texts(&render(
            &headers(&[("Content-Type", "application/json")]),
            &body,
        ));
        assert!(lines[0].contains("application/json"), "{lines:?}");
        assert_eq!(
            lines[1..],
            [
                "{",
                "  \"z\": 1,",
                "  \"a\": [",
                "    1,",
                "    2,",
                "    {}",
                "  ],",
                "  \"s\": \"x,{y}:\\\"q\\\"\",",
                "  \"e\": []",
                "}",
            ]
        );
    }

    #[test]
    fn json_without_content_type_is_recognised() {
        let body = Body::complete(&b"[1, 2]"[..]);
        let lines = texts(&render(&Headers::default(), &body));
        assert_eq!(lines[1..], ["[", "  1,", "  2", "]"]);
    }

    #[test]
    fn invalid_json_is_shown_as_text_with_the_reason() {
        let body = Body::complete(&b"{\"a\": "[..]);
        let lines = texts(&render(
            &headers(&[("Content-Type", "application/json")]),
            &body,
        ));
        assert!(lines[1].starts_with("not valid JSON"), "{lines:?}");
        assert_eq!(lines[2], "{\"a\": ");
    }

    #[test]
    fn gzip_is_decoded_before_anything_else() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(br#"{"ok":true}"#).unwrap();
        let body = Body::complete(encoder.finish().unwrap());
        let lines = texts(&render(
            &headers(&[
                ("content-type", "application/json; charset=utf-8"),
                ("content-encoding", "gzip"),
            ]),
            &body,
        ));
        assert!(lines[0].contains("gzip-decoded to 11b"), "{lines:?}");
        assert_eq!(lines[1..], ["{", "  \"ok\": true", "}"]);
    }

    #[test]
    fn corrupt_encoding_says_why_and_shows_raw_bytes() {
        let body = Body::complete(&b"not gzip at all"[..]);
        let lines = texts(&render(&headers(&[("content-encoding", "gzip")]), &body));
        assert!(lines[1].starts_with("cannot decode: gzip"), "{lines:?}");
        assert!(lines[2].starts_with("00000000  6e 6f 74"), "{lines:?}");
        let unknown = texts(&render(&headers(&[("content-encoding", "snappy")]), &body));
        assert!(unknown[1].contains("snappy"), "{unknown:?}");
    }

    #[test]
    fn forms_become_key_value_lines() {
        let body = Body::complete(&b"grant_type=client_credentials&scope=a+b%21&empty="[..]);
        let lines = texts(&render(
            &headers(&[("Content-Type", "application/x-www-form-urlencoded")]),
            &body,
        ));
        assert_eq!(
            lines[1..],
            ["grant_type=client_credentials", "scope=a b!", "empty="]
        );
    }

    #[test]
    fn html_is_text_and_escapes_are_neutralised() {
        let body = Body::complete(&b"<html>\r\n<b>\x1b[31mred</b>\r\n</html>"[..]);
        let lines = texts(&render(&headers(&[("Content-Type", "text/html")]), &body));
        assert_eq!(lines[1..], ["<html>", "<b>\\x1b[31mred</b>", "</html>"]);
    }

    #[test]
    fn binary_is_a_hex_dump() {
        let bytes: Vec<u8> = (0u8..=20).collect();
        let lines = texts(&render(&Headers::default(), &Body::complete(bytes)));
        assert_eq!(
            lines[1],
            "00000000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  ................"
        );
        assert!(
            lines[2].starts_with("00000010  10 11 12 13 14 "),
            "{lines:?}"
        );
        assert_eq!(
            classify(Some("image/png"), b"plain ascii"),
            BodyKind::Binary
        );
        assert_eq!(classify(Some("image/svg+xml"), b"<svg/>"), BodyKind::Text);
    }

    #[test]
    fn big_bodies_are_cut_with_a_note() {
        let body = Body::complete(vec![b'a'; SHOWN_LIMIT * 2]);
        let lines = texts(&render(&headers(&[("Content-Type", "text/plain")]), &body));
        assert!(lines
            .last()
            .unwrap()
            .contains("showing the first 256k of 512k"));
        let binary = Body::complete(vec![0u8; SHOWN_LIMIT * 2]);
        let lines = render(&Headers::default(), &binary);
        assert!(lines.len() <= HEX_LIMIT / HEX_WIDTH + 3, "{}", lines.len());
    }

    #[test]
    fn truncated_recordings_are_announced() {
        let body = Body {
            content: bytes::Bytes::from_static(b"abc"),
            size: 10,
            truncated: true,
        };
        let lines = texts(&render(&Headers::default(), &body));
        assert!(lines[1].contains("first 3 of 10 bytes"), "{lines:?}");
    }

    #[test]
    fn empty_body() {
        let lines = texts(&render(&Headers::default(), &Body::default()));
        assert_eq!(lines, ["(no body)"]);
    }

    #[test]
    fn odd_bytes_never_panic() {
        // Cut UTF-8, lone surrogates' bytes, NULs, overlong JSON nesting.
        let samples: Vec<Vec<u8>> = vec![
            "héllo".as_bytes()[..2].to_vec(),
            vec![0xed, 0xa0, 0x80],
            vec![0; 3],
            "[".repeat(10_000).into_bytes(),
            "]]]}}}".into(),
            vec![0xff; 5000],
        ];
        for bytes in samples {
            for content_type in [
                "application/json",
                "text/plain",
                "",
                "application/x-www-form-urlencoded",
            ] {
                let headers = headers(&[("content-type", content_type)]);
                let _ = render(&headers, &Body::complete(bytes.clone()));
            }
        }
        let (pretty, _) = pretty_json(b"]]]", 100);
        assert_eq!(pretty, "\n]\n]\n]");
    }
}
