//! Exporting one flow (`o`): the request as a curl or HTTPie command line, or the
//! messages as raw HTTP/1.1 (`periscope_flow::export`), to a file or to the
//! terminal's clipboard through an OSC 52 escape sequence (no clipboard program
//! needed; the terminal must allow it, and tmux needs `set-clipboard on`).

use std::io::Write;
use std::path::Path;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use periscope_flow::{export, Flow};

/// The most a clipboard export sends: terminals cap OSC 52 sequences (xterm at about
/// 100 kB of base64).
pub const CLIPBOARD_LIMIT: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Curl,
    Httpie,
    RawRequest,
    RawResponse,
    Raw,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Curl,
        Format::Httpie,
        Format::RawRequest,
        Format::RawResponse,
        Format::Raw,
    ];

    /// The menu letter.
    pub fn key(self) -> char {
        match self {
            Format::Curl => 'c',
            Format::Httpie => 'h',
            Format::RawRequest => 'r',
            Format::RawResponse => 's',
            Format::Raw => 'a',
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Format::Curl => "curl command line",
            Format::Httpie => "HTTPie command line",
            Format::RawRequest => "raw request (HTTP/1.1)",
            Format::RawResponse => "raw response (HTTP/1.1)",
            Format::Raw => "raw request and response",
        }
    }

    /// A file name to offer.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Curl => "flow.curl.sh",
            Format::Httpie => "flow.httpie.sh",
            Format::RawRequest => "flow.request.http",
            Format::RawResponse => "flow.response.http",
            Format::Raw => "flow.http",
        }
    }

    /// The export of `flow`; `Err` when the flow has no such part.
    pub fn render(self, flow: &Flow) -> Result<Vec<u8>, String> {
        Ok(match self {
            Format::Curl => export::curl(flow).into_bytes(),
            Format::Httpie => export::httpie(flow).into_bytes(),
            Format::RawRequest => export::raw_request(flow),
            Format::RawResponse => export::raw_response(flow)
                .ok_or_else(|| "the flow has no response to export".to_owned())?,
            Format::Raw => export::raw(flow),
        })
    }
}

/// Writes an export to a new or replaced file, readable by its owner only (a flow
/// holds cookies and tokens).
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The OSC 52 sequence that puts `bytes` on the clipboard; `Err` when they are more
/// than terminals take.
pub fn clipboard_sequence(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() > CLIPBOARD_LIMIT {
        return Err(format!(
            "{} bytes is more than a terminal takes for its clipboard ({} at most): \
             export to a file",
            bytes.len(),
            CLIPBOARD_LIMIT
        ));
    }
    Ok(format!("\x1b]52;c;{}\x07", BASE64.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn every_format_renders_and_a_missing_response_is_said() {
        let mut flow = fixtures::flow("POST", "example.com", "/login", Some(200));
        let curl = String::from_utf8(Format::Curl.render(&flow).unwrap()).unwrap();
        assert!(curl.starts_with("curl "), "{curl}");
        assert!(curl.contains("https://example.com/login"), "{curl}");
        let httpie = String::from_utf8(Format::Httpie.render(&flow).unwrap()).unwrap();
        assert!(httpie.contains("https://example.com/login"), "{httpie}");
        assert!(Format::RawRequest
            .render(&flow)
            .unwrap()
            .starts_with(b"POST /login HTTP/1.1\r\n"));
        assert!(Format::RawResponse
            .render(&flow)
            .unwrap()
            .starts_with(b"HTTP/1.1 200 OK\r\n"));
        let both = Format::Raw.render(&flow).unwrap();
        assert!(both.starts_with(b"POST /login"));
        flow.response = None;
        assert!(Format::RawResponse.render(&flow).is_err());
        let keys: std::collections::HashSet<char> = Format::ALL.iter().map(|f| f.key()).collect();
        assert_eq!(keys.len(), Format::ALL.len());
    }

    #[test]
    fn files_are_private_and_the_clipboard_sequence_is_osc_52() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.sh");
        write_file(&path, b"curl x").unwrap();
        write_file(&path, b"curl y").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"curl y");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(clipboard_sequence(b"hi").unwrap(), "\x1b]52;c;aGk=\x07");
        assert!(clipboard_sequence(&vec![b'a'; CLIPBOARD_LIMIT + 1]).is_err());
    }
}
