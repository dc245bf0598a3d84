//! Editing a part of a flow in the user's editor, as mitmproxy does: the part is
//! written to a temporary file as text, `$EDITOR` (else `vi`) runs on it while the
//! console is off the screen, and what was saved is read back and turned into a
//! [`FlowEdit`].
//!
//! The formats, one per part:
//!
//! | part | what the file holds |
//! |---|---|
//! | request line | one line, `METHOD URL` (`POST https://example.com/a?b=1`); a URL that starts with `/` changes the path alone |
//! | status | one line, `CODE REASON` (`404 Not Found`; the reason may be empty) |
//! | headers | one header a line, `Name: value`, in order; blank lines are skipped |
//! | a body, a WebSocket message | its bytes, exactly as saved (nothing is added or trimmed) |
//!
//! A line the format does not allow is refused with its number, and nothing changes.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use periscope_control::{Content, FlowEdit, RequestEdit, ResponseEdit};
use periscope_flow::{Flow, FlowId, Headers, Interception};

/// What the user edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    RequestLine,
    RequestHeaders,
    RequestBody,
    ResponseStatus,
    ResponseHeaders,
    ResponseBody,
    /// The WebSocket message the flow holds.
    HeldMessage,
    /// A new message to write into the flow's WebSocket.
    Inject {
        to_client: bool,
    },
}

impl Part {
    pub fn label(self) -> &'static str {
        match self {
            Part::RequestLine => "request: method and URL",
            Part::RequestHeaders => "request headers",
            Part::RequestBody => "request body",
            Part::ResponseStatus => "response: status and reason",
            Part::ResponseHeaders => "response headers",
            Part::ResponseBody => "response body",
            Part::HeldMessage => "the held WebSocket message",
            Part::Inject { to_client: true } => "a message to the client",
            Part::Inject { to_client: false } => "a message to the server",
        }
    }

    /// The temporary file's name ends with this, so that an editor picks a mode.
    fn suffix(self) -> &'static str {
        match self {
            Part::RequestHeaders | Part::ResponseHeaders => ".headers.txt",
            _ => ".txt",
        }
    }
}

/// One run of the editor: on what, starting from which text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditorJob {
    pub id: FlowId,
    pub part: Part,
    /// The part as the flow has it: saving it unchanged changes nothing.
    pub original: Vec<u8>,
    /// What the editor opens (the original, or the user's text after a refusal).
    pub text: Vec<u8>,
}

/// The text the editor starts with for `part` of `flow`; `Err` says why the part
/// cannot be edited.
pub fn text_of(flow: &Flow, part: Part) -> Result<Vec<u8>, String> {
    let request = &flow.request;
    let response = || {
        flow.response
            .as_ref()
            .ok_or_else(|| "the flow has no response".to_owned())
    };
    let body = |body: &periscope_flow::Body| {
        if body.truncated {
            Err(format!(
                "only the first {} of its {} bytes were recorded (--body-limit): \
                 an edit would lose the rest",
                body.content.len(),
                body.size
            ))
        } else {
            Ok(body.content.to_vec())
        }
    };
    match part {
        Part::RequestLine => Ok(format!("{} {}\n", request.method, request.url()).into_bytes()),
        Part::RequestHeaders => headers_text(&request.headers),
        Part::RequestBody => body(&request.body),
        Part::ResponseStatus => {
            let response = response()?;
            Ok(format!("{} {}\n", response.status, response.reason).into_bytes())
        }
        Part::ResponseHeaders => headers_text(&response()?.headers),
        Part::ResponseBody => body(&response()?.body),
        Part::HeldMessage => match &flow.intercepted {
            Some(Interception::WebSocketMessage { message }) if message.truncated => Err(format!(
                "only the first {} of its {} bytes were kept: an edit would lose the rest",
                message.content.len(),
                message.size
            )),
            Some(Interception::WebSocketMessage { message }) => Ok(message.content.to_vec()),
            _ => Err("it holds no WebSocket message".to_owned()),
        },
        Part::Inject { .. } => Ok(Vec::new()),
    }
}

fn headers_text(headers: &Headers) -> Result<Vec<u8>, String> {
    let mut text = String::new();
    for header in headers.iter() {
        let Ok(value) = std::str::from_utf8(&header.value) else {
            return Err(format!(
                "the value of {} is not UTF-8 text, which an edit would change",
                header.name
            ));
        };
        text.push_str(&header.name);
        text.push_str(": ");
        text.push_str(value);
        text.push('\n');
    }
    Ok(text.into_bytes())
}

/// What the saved file of `part` means as an edit of the flow. Only the flow parts:
/// a WebSocket message is its bytes.
pub fn parse(part: Part, saved: &[u8]) -> Result<FlowEdit, String> {
    let text = || std::str::from_utf8(saved).map_err(|_| "the file is not UTF-8 text".to_owned());
    let mut edit = FlowEdit::default();
    match part {
        Part::RequestLine => edit.request = Some(parse_request_line(one_line(text()?)?)?),
        Part::RequestHeaders => {
            edit.request = Some(RequestEdit {
                headers: Some(parse_headers(text()?)?),
                ..RequestEdit::default()
            })
        }
        Part::RequestBody => {
            edit.request = Some(RequestEdit {
                content: Some(Content::from_bytes(saved)),
                ..RequestEdit::default()
            })
        }
        Part::ResponseStatus => edit.response = Some(parse_status_line(one_line(text()?)?)?),
        Part::ResponseHeaders => {
            edit.response = Some(ResponseEdit {
                headers: Some(parse_headers(text()?)?),
                ..ResponseEdit::default()
            })
        }
        Part::ResponseBody => {
            edit.response = Some(ResponseEdit {
                content: Some(Content::from_bytes(saved)),
                ..ResponseEdit::default()
            })
        }
        Part::HeldMessage | Part::Inject { .. } => {
            return Err(format!("{} is not a part of the exchange", part.label()))
        }
    }
    Ok(edit)
}

/// The one line of a one-line format (a final newline is allowed, blank lines after
/// it too).
fn one_line(text: &str) -> Result<&str, String> {
    let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or("").trim();
    if first.is_empty() {
        return Err("line 1 is empty".to_owned());
    }
    if let Some((n, _)) = lines.enumerate().find(|(_, l)| !l.trim().is_empty()) {
        return Err(format!("line {}: the format is one line", n + 2));
    }
    Ok(first)
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `METHOD URL`, or `METHOD /path` for the path alone.
fn parse_request_line(line: &str) -> Result<RequestEdit, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [method, url] = words[..] else {
        return Err(format!(
            "line 1: \"{line}\" is not METHOD URL (two words: the URL has no spaces)"
        ));
    };
    if !is_token(method) {
        return Err(format!("line 1: \"{method}\" is not an HTTP method"));
    }
    let mut edit = RequestEdit {
        method: Some(method.to_owned()),
        ..RequestEdit::default()
    };
    if url.starts_with('/') || url == "*" {
        edit.path = Some(url.to_owned());
        return Ok(edit);
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("line 1: \"{url}\" is not a URL (http://… or https://…)"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("line 1: scheme \"{scheme}\": only http and https")),
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if path.starts_with('#') || path.contains('#') {
        return Err("line 1: a URL sent to a server has no #fragment".to_owned());
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    };
    if authority.contains('@') {
        return Err("line 1: user:password@ in the URL: use an Authorization header".to_owned());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("line 1: \"{authority}\": no ] after the IPv6 address"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("line 1: \"{authority}\" is not a host")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains([' ', '/', '[', ']']) {
        return Err(format!("line 1: \"{authority}\" is not a host"));
    }
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("line 1: \"{port}\" is not a port"))?,
    };
    edit.scheme = Some(scheme);
    edit.host = Some(host.to_owned());
    edit.port = Some(port);
    edit.path = Some(path);
    Ok(edit)
}

/// `CODE REASON`.
fn parse_status_line(line: &str) -> Result<ResponseEdit, String> {
    let (code, reason) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| code.len() == 3 && (100..=999).contains(c))
        .ok_or_else(|| format!("line 1: \"{code}\" is not a status code (three digits)"))?;
    Ok(ResponseEdit {
        status_code: Some(status),
        reason: Some(reason.trim().to_owned()),
        ..ResponseEdit::default()
    })
}

/// `Name: value` lines.
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let number = n + 1;
        if line.starts_with([' ', '\t']) {
            return Err(format!(
                "line {number}: starts with a space (a folded header): write it on one line"
            ));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "line {number}: \"{line}\" has no colon (Name: value)"
            ));
        };
        if !is_token(name) {
            return Err(format!(
                "line {number}: \"{name}\" is not a header name (letters, digits, -)"
            ));
        }
        if value.contains('\0') {
            return Err(format!("line {number}: the value has a NUL byte"));
        }
        headers.push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
    }
    Ok(headers)
}

/// The command that edits a file: `$EDITOR` (with its arguments, read by `sh` as git
/// does), else `vi`.
pub fn editor_command() -> String {
    std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned())
}

/// Runs the editor on a temporary file (mode 0600, removed afterwards) holding
/// `initial`, with the terminal as it is (the caller leaves the full screen first),
/// and returns what was saved. An editor that fails (`:cq` in vi) is an error.
pub fn run(initial: &[u8], part: Part, stderr: Stdio) -> io::Result<Vec<u8>> {
    let file = tempfile::Builder::new()
        .prefix("periscope-edit-")
        .suffix(part.suffix())
        .tempfile()?;
    std::fs::write(file.path(), initial)?;
    run_on(&editor_command(), file.path(), stderr)?;
    std::fs::read(file.path())
}

fn run_on(editor: &str, path: &Path, stderr: Stdio) -> io::Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$@\""))
        .arg(editor)
        .arg(path)
        .stderr(stderr)
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run the editor ({editor}): {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the editor ({editor}) ended with {status}: nothing was changed"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn request(edit: FlowEdit) -> RequestEdit {
        assert!(edit.response.is_none());
        edit.request.expect("a request edit")
    }

    #[test]
    fn headers_round_trip_and_keep_order_and_duplicates() {
        let mut flow = fixtures::flow("GET", "example.com", "/", Some(200));
        flow.request.headers.push("cookie", "a=1");
        flow.request.headers.push("Cookie", "b=2; c=3");
        let text = text_of(&flow, Part::RequestHeaders).unwrap();
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            "host: example.com\ncookie: a=1\nCookie: b=2; c=3\n"
        );
        let mut edited = text;
        edited.extend_from_slice(b"X-Edited:   yes  \r\n\n");
        let headers = request(parse(Part::RequestHeaders, &edited).unwrap())
            .headers
            .unwrap();
        let expected: Vec<(String, String)> = [
            ("host", "example.com"),
            ("cookie", "a=1"),
            ("Cookie", "b=2; c=3"),
            ("X-Edited", "yes"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(headers, expected);
        // An empty value is a value; an empty file removes every header.
        let headers = request(parse(Part::RequestHeaders, b"x-empty:\n").unwrap())
            .headers
            .unwrap();
        assert_eq!(headers, vec![("x-empty".to_owned(), String::new())]);
        assert_eq!(
            request(parse(Part::RequestHeaders, b"").unwrap()).headers,
            Some(vec![])
        );
    }

    #[test]
    fn bad_header_lines_are_refused_with_their_number() {
        for (text, expected) in [
            (
                &b"a: 1\nno colon here\n"[..],
                "line 2: \"no colon here\" has no colon",
            ),
            (
                b"bad name: 1\n",
                "line 1: \"bad name\" is not a header name",
            ),
            (b": value\n", "line 1: \"\" is not a header name"),
            (b"a: 1\n\n folded\n", "line 3: starts with a space"),
            (b"a: \xff\n", "not UTF-8"),
            (b"a: x\0y\n", "NUL"),
        ] {
            let error = parse(Part::ResponseHeaders, text).unwrap_err();
            assert!(error.contains(expected), "{error} / {expected}");
        }
    }

    #[test]
    fn method_and_url_make_one_line() {
        let mut flow = fixtures::flow("POST", "example.com", "/a?b=1", Some(200));
        assert_eq!(
            text_of(&flow, Part::RequestLine).unwrap(),
            b"POST https://example.com/a?b=1\n"
        );
        let edit =
            request(parse(Part::RequestLine, b"PUT http://other.test:8080/x?y=z\n").unwrap());
        assert_eq!(edit.method.as_deref(), Some("PUT"));
        assert_eq!(edit.scheme.as_deref(), Some("http"));
        assert_eq!(edit.host.as_deref(), Some("other.test"));
        assert_eq!(edit.port, Some(8080));
        assert_eq!(edit.path.as_deref(), Some("/x?y=z"));
        // Default ports, IPv6, a bare query, a path alone.
        let edit = request(parse(Part::RequestLine, b"GET https://[::1]?q").unwrap());
        assert_eq!(
            (edit.host.as_deref(), edit.port, edit.path.as_deref()),
            (Some("::1"), Some(443), Some("/?q"))
        );
        let edit = request(parse(Part::RequestLine, b"GET https://[::1]:8443").unwrap());
        assert_eq!((edit.port, edit.path.as_deref()), (Some(8443), Some("/")));
        let edit = request(parse(Part::RequestLine, b"DELETE /only/the/path\n").unwrap());
        assert_eq!(edit.path.as_deref(), Some("/only/the/path"));
        assert_eq!((edit.host, edit.scheme, edit.port), (None, None, None));

        // What was written reads back as the same request.
        let edit = parse(
            Part::RequestLine,
            &text_of(&flow, Part::RequestLine).unwrap(),
        )
        .unwrap();
        let before = flow.clone();
        periscope_control::apply_edit(&mut flow, &edit).unwrap();
        assert_eq!(flow.request, before.request);
    }

    #[test]
    fn bad_request_lines_are_refused() {
        for (text, expected) in [
            (&b""[..], "line 1 is empty"),
            (b"GET\n", "not METHOD URL"),
            (b"GET /a HTTP/1.1\n", "not METHOD URL"),
            (b"G(T /a\n", "not an HTTP method"),
            (b"GET example.com/a\n", "is not a URL"),
            (b"GET ftp://example.com/\n", "only http and https"),
            (b"GET https://example.com:0/\n", "is not a port"),
            (b"GET https://example.com:http/\n", "is not a port"),
            (b"GET https://user:pw@example.com/\n", "Authorization"),
            (b"GET https:///path\n", "is not a host"),
            (b"GET https://example.com/#top\n", "fragment"),
            (b"GET /a\nGET /b\n", "line 2: the format is one line"),
        ] {
            let error = parse(Part::RequestLine, text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error} / {expected}");
        }
    }

    #[test]
    fn status_lines() {
        let flow = fixtures::flow("GET", "example.com", "/", Some(400));
        assert_eq!(
            text_of(&flow, Part::ResponseStatus).unwrap(),
            b"400 Bad Request\n"
        );
        let edit = parse(Part::ResponseStatus, b"418 I'm a teapot\r\n\n").unwrap();
        let response = edit.response.unwrap();
        assert_eq!(response.status_code, Some(418));
        assert_eq!(response.reason.as_deref(), Some("I'm a teapot"));
        let response = parse(Part::ResponseStatus, b"204")
            .unwrap()
            .response
            .unwrap();
        assert_eq!(
            (response.status_code, response.reason.as_deref()),
            (Some(204), Some(""))
        );
        for bad in [&b"OK 200"[..], b"2000 Big", b"99 Low", b"200 OK\nmore"] {
            assert!(parse(Part::ResponseStatus, bad).is_err(), "{bad:?}");
        }
        let mut no_response = flow;
        no_response.response = None;
        assert!(text_of(&no_response, Part::ResponseStatus).is_err());
    }

    #[test]
    fn bodies_are_kept_byte_for_byte() {
        for bytes in [
            &b"no newline at the end"[..],
            b"two trailing newlines\n\n",
            b"crlf\r\n",
            b"\x00\xff\xfe binary",
            b"",
        ] {
            let edit = parse(Part::ResponseBody, bytes).unwrap();
            let content = edit.response.unwrap().content.unwrap();
            assert_eq!(content.bytes().unwrap(), bytes);
            let edit = parse(Part::RequestBody, bytes).unwrap();
            assert_eq!(
                edit.request.unwrap().content.unwrap().bytes().unwrap(),
                bytes
            );
        }
        let flow = fixtures::flow("POST", "example.com", "/", Some(200));
        assert_eq!(
            text_of(&flow, Part::RequestBody).unwrap(),
            b"user=alice&password=secret"
        );
    }

    #[test]
    fn a_body_recorded_in_part_is_not_offered() {
        let mut flow = fixtures::flow("GET", "example.com", "/", Some(200));
        if let Some(response) = &mut flow.response {
            response.body.truncated = true;
            response.body.size = 1_000_000;
        }
        let error = text_of(&flow, Part::ResponseBody).unwrap_err();
        assert!(error.contains("1000000 bytes"), "{error}");
    }

    #[test]
    fn the_editor_runs_on_a_file_and_its_failure_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.txt");
        std::fs::write(&path, b"a: 1\n").unwrap();
        let script = dir.path().join("append.sh");
        std::fs::write(&script, "#!/bin/sh\nprintf 'b: 2\\n' >> \"$1\"\n").unwrap();
        // $EDITOR with arguments, read by sh.
        run_on(&format!("sh {}", script.display()), &path, Stdio::null()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a: 1\nb: 2\n");
        let error = run_on("false", &path, Stdio::null()).unwrap_err();
        assert!(error.to_string().contains("nothing was changed"), "{error}");
    }
}
