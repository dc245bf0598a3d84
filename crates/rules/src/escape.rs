//! The escapes mitmproxy decodes in the subject and replacement of `modify_headers`
//! and `modify_body` patterns (Python's `codecs.escape_decode`), so that a pattern
//! written for mitmproxy means the same bytes here.

/// A malformed escape, at a 0-based character index of the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscapeError {
    pub index: usize,
    pub message: String,
}

/// `\\`, `\'`, `\"`, `\a`, `\b`, `\f`, `\n`, `\r`, `\t`, `\v`, `\ooo` (octal) and
/// `\xhh` become the bytes they name, and a backslash before a line break joins the
/// lines; any other escape stays as written, so a regex's `\d` or `\.` passes through.
pub fn escaped_str_to_bytes(text: &str) -> Result<Vec<u8>, EscapeError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            i += 1;
            continue;
        }
        let Some(&next) = chars.get(i + 1) else {
            return Err(EscapeError {
                index: i,
                message: "a trailing \\ escapes nothing".to_owned(),
            });
        };
        i += 2;
        match next {
            '\\' => out.push(b'\\'),
            '\'' => out.push(b'\''),
            '"' => out.push(b'"'),
            'a' => out.push(0x07),
            'b' => out.push(0x08),
            'f' => out.push(0x0c),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(0x0b),
            '\n' => {}
            '0'..='7' => {
                let mut value = next.to_digit(8).unwrap_or(0);
                let mut digits = 1;
                while digits < 3 {
                    match chars.get(i).and_then(|c| c.to_digit(8)) {
                        Some(digit) => {
                            value = value * 8 + digit;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                // Python keeps the low byte of \400 and above.
                out.push((value & 0xff) as u8);
            }
            'x' => {
                let hex: String = chars.iter().skip(i).take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(byte) if hex.len() == 2 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
                        out.push(byte);
                        i += 2;
                    }
                    _ => {
                        return Err(EscapeError {
                            index: i - 2,
                            message: "\\x needs two hexadecimal digits".to_owned(),
                        })
                    }
                }
            }
            other => {
                out.push(b'\\');
                let mut buf = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_escapes_become_bytes_and_unknown_ones_stay() {
        assert_eq!(escaped_str_to_bytes("plain").unwrap(), b"plain");
        assert_eq!(escaped_str_to_bytes(r"a\nb\tc\\d").unwrap(), b"a\nb\tc\\d");
        assert_eq!(escaped_str_to_bytes(r"\x41\x00\101").unwrap(), b"A\0A");
        assert_eq!(escaped_str_to_bytes(r"\d+\.json").unwrap(), br"\d+\.json");
        assert_eq!(escaped_str_to_bytes("é").unwrap(), "é".as_bytes());
    }

    #[test]
    fn malformed_escapes_say_where() {
        let error = escaped_str_to_bytes(r"ab\xZ1").unwrap_err();
        assert_eq!(error.index, 2);
        assert!(error.message.contains("hexadecimal"));
        assert_eq!(escaped_str_to_bytes("ab\\").unwrap_err().index, 2);
    }
}
