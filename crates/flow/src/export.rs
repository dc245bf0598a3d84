//! A flow's request as a command line that sends it again (curl, HTTPie), and a
//! flow as raw HTTP/1.1 messages.
//!
//! ```
//! # let flow: periscope_flow::Flow = serde_json::from_str(include_str!("../benches/sample_flow.json")).unwrap();
//! use periscope_flow::export;
//!
//! let line = export::curl(&flow);
//! assert!(line.starts_with("curl "));
//! let request = export::raw_request(&flow);
//! assert!(request.starts_with(b"GET /"));
//! ```
//!
//! # The command lines
//!
//! Both are POSIX shell commands (`sh`, `dash`, `bash`, `zsh`) that send the request
//! as recorded: the method, the URL, every header in its order and the body byte
//! for byte. What the tool would add of its own is taken away (`-H 'Accept:'`), and
//! what it computes from its own framing is left to it:
//!
//! - **Content-Length** is dropped when a body is sent: the tool counts the bytes it
//!   sends (a recorded value could only disagree, for a body cut at the body limit).
//!   Without a body it is kept as recorded (`POST` with `Content-Length: 0`).
//! - **Transfer-Encoding: chunked** stays for curl, which then chunks the body itself
//!   as the client did; HTTPie gets `--chunked`.
//! - **Host** stays as recorded (both tools put a given Host in place of their own);
//!   an HTTP/1.x request that had none gets `-H 'Host:'` (curl).
//! - **HTTP/2 pseudo-headers** (`:authority`, ...) are dropped: the method and the
//!   URL carry them.
//!
//! curl sends the headers in their recorded order, except that it writes Host first
//! and its own Content-Length after them; HTTPie (through Python's requests) writes
//! Content-Length and the headers it has defaults for first. The protocol follows
//! the recording (`--http1.1` over TLS, where curl would offer HTTP/2 first;
//! `--http2-prior-knowledge` for cleartext HTTP/2); HTTPie speaks only HTTP/1.1.
//! Paths go as they are: `--path-as-is` keeps `..` segments, `--globoff` curl's
//! brackets and braces, and a target no URL can carry (`*`, whitespace, `#`) goes
//! in curl's `--request-target`.
//!
//! Arguments are quoted with `shlex` when they are text a terminal shows as it is.
//! Anything else — bytes that are not UTF-8, control characters — cannot be written
//! inside quotes portably (`$'…'` is not in dash, Debian's `sh`), so it is written
//! with `printf`, whose octal escapes (`\377`) are POSIX and exact for every byte:
//! a body goes through the tool's standard input (`printf '…' | curl --data-binary
//! @-`), which carries NUL bytes too, and a header value through a command
//! substitution (`-H "$(printf 'X: \377')"`). Text bodies up to 64 KiB are given as
//! an argument (`--data-raw '…'`), readable and still exact; longer ones go through
//! standard input as well, since Linux refuses an argument longer than 128 KiB.
//!
//! What a tool cannot send — the request's trailers, a body Periscope recorded only
//! in part, a NUL byte in a header, HTTP/2 with HTTPie — is said in a `#` comment
//! line before the command.
//!
//! # Raw messages
//!
//! [`raw_request`] and [`raw_response`] write the messages as HTTP/1.1 text with the
//! bodies as recorded (still content-encoded). A chunked body is written chunked
//! again, with its trailers. An HTTP/2 message is written as the HTTP/1.1 message
//! that means the same, as mitmproxy does: no pseudo-headers, a Host header from the
//! authority, and a Content-Length (or, with trailers, chunked framing) for its body.

use std::fmt::Write as _;

use crate::model::{Body, Flow, Headers, Request, Response};

/// Longer text bodies go through standard input rather than an argument: Linux
/// refuses to start a program with one argument over 128 KiB (`MAX_ARG_STRLEN`).
const MAX_BODY_ARGUMENT: usize = 64 * 1024;

/// Older curl releases add `Expect: 100-continue` to HTTP/1.1 bodies larger than
/// this, newer ones (7.88 here) to bodies over 1 MiB: above it the command unsets
/// the header for either.
const CURL_EXPECT_THRESHOLD: usize = 1024;

/// The request as a curl command line.
pub fn curl(flow: &Flow) -> String {
    let request = &flow.request;
    let mut command = Command::new(&["curl"]);
    let framing = Framing::of(request);

    if let Some(flag) = curl_version_flag(&request.http_version, &request.scheme) {
        command.word(flag);
    }
    let target = Target::of(request);
    if target.needs_request_target() {
        command.word("--request-target");
        command.bytes(target.text.as_bytes());
    } else {
        if target.has_dot_segments() {
            command.word("--path-as-is");
        }
        if target.url.contains(['[', ']', '{', '}']) {
            // Brackets and braces are curl's URL globbing (and an IPv6 address's).
            command.word("--globoff");
        }
    }
    let inferred = if framing.sends_body { "POST" } else { "GET" };
    if request.method == "HEAD" && !framing.sends_body {
        // `-X HEAD` would make curl wait for a body that never comes.
        command.word("--head");
    } else if request.method != inferred {
        command.word("-X");
        command.bytes(request.method.as_bytes());
    }
    command.bytes(target.url_for_tool().as_bytes());

    for header in request.headers.iter() {
        if framing.leaves_to_the_tool(&header.name) {
            continue;
        }
        command.word("-H");
        command.bytes(&header_line(&header.name, &header.value, ": ", ";"));
    }
    let recorded = |name: &str| request.headers.get(name).is_some();
    let mut unset = vec!["User-Agent", "Accept"];
    if request.http_version.starts_with("HTTP/1") && !recorded("Host") {
        unset.push("Host");
    }
    if framing.sends_body {
        unset.push("Content-Type");
        if request.http_version == "HTTP/1.1" && request.body.content.len() > CURL_EXPECT_THRESHOLD
        {
            unset.push("Expect");
        }
    }
    for name in unset.into_iter().filter(|name| !recorded(name)) {
        // A header with nothing after the colon is one curl must not send.
        command.word("-H");
        command.bytes(format!("{name}:").as_bytes());
    }

    if framing.sends_body {
        match BodyArgument::of(&request.body.content) {
            BodyArgument::Text(text) => {
                command.word("--data-raw");
                command.text(text);
            }
            BodyArgument::Stdin(bytes) => {
                command.stdin(bytes);
                command.word("--data-binary");
                command.word("@-");
            }
        }
    }
    command.notes.extend(request_notes(request, "curl"));
    command.render()
}

/// The request as an HTTPie (`http`) command line.
///
/// HTTPie speaks HTTP/1.1 only and cannot send header values that are not UTF-8; a
/// comment says so when that changes the request. It keeps the headers' order,
/// except that those it has defaults for (User-Agent, Accept-Encoding, Accept,
/// Connection) and Content-Length come first.
pub fn httpie(flow: &Flow) -> String {
    let request = &flow.request;
    let mut command = Command::new(&["http"]);
    let framing = Framing::of(request);
    let target = Target::of(request);

    let body = framing
        .sends_body
        .then(|| BodyArgument::of(&request.body.content));
    match &body {
        Some(BodyArgument::Text(text)) => {
            command.word("--ignore-stdin");
            // `--raw=…` in one word: argparse would take a body starting with `-` for
            // an option.
            command.text(&format!("--raw={text}"));
        }
        Some(BodyArgument::Stdin(bytes)) => command.stdin(bytes),
        // HTTPie reads a body from any standard input that is not a terminal.
        None => command.word("--ignore-stdin"),
    }
    if framing.chunked {
        command.word("--chunked");
    }
    if target.has_dot_segments() {
        command.word("--path-as-is");
    }
    command.bytes(request.method.as_bytes());
    command.bytes(target.url_for_tool().as_bytes());

    let mut inexact_headers = Vec::new();
    let mut not_utf8 = Vec::new();
    for header in request.headers.iter() {
        if framing.leaves_to_the_tool(&header.name)
            || (framing.chunked && header.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            continue;
        }
        if std::str::from_utf8(&header.value).is_err() {
            // HTTPie fails on the whole command (UnicodeEncodeError) for one such
            // value: better the request without it, and a note.
            not_utf8.push(header.name.as_str());
            continue;
        }
        if !httpie_can_send(&header.name, &header.value) {
            inexact_headers.push(header.name.as_str());
        }
        command.bytes(&httpie_header_item(&header.name, &header.value));
    }
    let recorded = |name: &str| request.headers.get(name).is_some();
    let mut unset = vec!["User-Agent", "Accept", "Accept-Encoding", "Connection"];
    if framing.sends_body {
        unset.push("Content-Type");
    }
    for name in unset.into_iter().filter(|name| !recorded(name)) {
        // `Name:` with no value removes one of HTTPie's default headers.
        command.bytes(format!("{name}:").as_bytes());
    }

    let mut notes = request_notes(request, "HTTPie");
    if request.http_version != "HTTP/1.1" {
        notes.push(format!(
            "HTTPie sends HTTP/1.1; this request was {}",
            printable(&request.http_version)
        ));
    }
    if !request.method.bytes().all(|b| b.is_ascii_alphabetic()) {
        notes.push("HTTPie takes only letters for a method: it reads this one as a URL".into());
    }
    if target.needs_request_target() {
        notes.push(format!(
            "HTTPie cannot send the request target {} as it is",
            printable(&target.text)
        ));
    }
    if request.http_version.starts_with("HTTP/1") && !recorded("Host") {
        notes.push("the request had no Host header; HTTPie sends one".into());
    }
    if !not_utf8.is_empty() {
        notes.push(format!(
            "HTTPie cannot send header values that are not UTF-8; left out: {}",
            printable(&not_utf8.join(", "))
        ));
    }
    if !inexact_headers.is_empty() {
        notes.push(format!(
            "HTTPie reads a backslash before : ; = @ as an escape: these headers change: {}",
            printable(&inexact_headers.join(", "))
        ));
    }
    command.notes.extend(notes);
    command.render()
}

/// The request as an HTTP/1.1 message: head, then the body as recorded.
pub fn raw_request(flow: &Flow) -> Vec<u8> {
    let request = &flow.request;
    let target = Target::of(request);
    let version = http1_version(&request.http_version);
    let mut start = Vec::new();
    start.extend_from_slice(request.method.as_bytes());
    start.push(b' ');
    start.extend_from_slice(target.text.as_bytes());
    start.push(b' ');
    start.extend_from_slice(version.as_bytes());
    let host = is_http2(&request.http_version).then_some(target.authority());
    message(
        start,
        &request.headers,
        host.as_deref(),
        is_http2(&request.http_version),
        &request.body,
        request.trailers.as_ref(),
    )
}

/// The response as an HTTP/1.1 message, if the flow has one.
pub fn raw_response(flow: &Flow) -> Option<Vec<u8>> {
    let response: &Response = flow.response.as_ref()?;
    let reason = if response.reason.is_empty() {
        // HTTP/2 has no reason phrase; an HTTP/1.1 status line reads better with one.
        http::StatusCode::from_u16(response.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("")
    } else {
        &response.reason
    };
    let start = format!(
        "{} {} {reason}",
        http1_version(&response.http_version),
        response.status
    );
    Some(message(
        start.into_bytes(),
        &response.headers,
        None,
        is_http2(&response.http_version),
        &response.body,
        response.trailers.as_ref(),
    ))
}

/// The request, then the response (if any) after a blank line, as mitmproxy's raw
/// export writes them.
pub fn raw(flow: &Flow) -> Vec<u8> {
    let mut out = raw_request(flow);
    if let Some(response) = raw_response(flow) {
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&response);
    }
    out
}

// ---------------------------------------------------------------------------
// Command lines

/// A shell command: comment lines, then `printf '…' | ` when the body goes through
/// standard input, then the words.
struct Command {
    notes: Vec<String>,
    stdin: Option<String>,
    words: Vec<String>,
}

impl Command {
    fn new(program: &[&str]) -> Command {
        Command {
            notes: Vec::new(),
            stdin: None,
            words: program.iter().map(|word| (*word).to_owned()).collect(),
        }
    }

    /// A word that needs no quoting (a flag).
    fn word(&mut self, word: &str) {
        self.words.push(word.to_owned());
    }

    /// Any bytes, quoted as one word.
    fn bytes(&mut self, bytes: &[u8]) {
        self.words.push(shell_word(bytes));
    }

    /// Printable text that may span lines ([`BodyArgument::Text`]), quoted as one
    /// word: line breaks inside quotes are exact in every POSIX shell.
    fn text(&mut self, text: &str) {
        match shlex::try_quote(text) {
            Ok(quoted) => self.words.push(quoted.into_owned()),
            Err(_) => self.bytes(text.as_bytes()),
        }
    }

    fn stdin(&mut self, bytes: &[u8]) {
        self.stdin = Some(format!("printf '{}' | ", printf_format(bytes)));
    }

    fn render(self) -> String {
        let mut out = String::new();
        for note in &self.notes {
            let _ = writeln!(out, "# {note}");
        }
        if let Some(pipe) = &self.stdin {
            out.push_str(pipe);
        }
        out.push_str(&self.words.join(" "));
        out
    }
}

/// How a body is passed to the tool.
enum BodyArgument<'a> {
    /// As an argument: text a terminal shows as it is (lines and tabs allowed).
    Text(&'a str),
    /// Through standard input, written by `printf`.
    Stdin(&'a [u8]),
}

impl<'a> BodyArgument<'a> {
    fn of(content: &'a [u8]) -> BodyArgument<'a> {
        match printable_text(content, true) {
            Some(text) if text.len() <= MAX_BODY_ARGUMENT => BodyArgument::Text(text),
            _ => BodyArgument::Stdin(content),
        }
    }
}

/// What the tool frames for itself.
struct Framing {
    /// A body goes with the request (even an empty one, when it was chunked).
    sends_body: bool,
    chunked: bool,
}

impl Framing {
    fn of(request: &Request) -> Framing {
        let chunked = is_chunked(&request.headers);
        Framing {
            sends_body: !request.body.content.is_empty() || chunked,
            chunked,
        }
    }

    /// Headers the command leaves out because the tool writes them from its own
    /// framing: pseudo-headers always, Content-Length when a body is sent.
    fn leaves_to_the_tool(&self, name: &str) -> bool {
        name.starts_with(':') || (self.sends_body && name.eq_ignore_ascii_case("content-length"))
    }
}

/// Where a request goes: its URL and the request target it sent.
struct Target {
    /// `scheme://authority` followed by the target.
    url: String,
    /// The request target as sent: a path and query, `*`, or the authority of a
    /// CONNECT.
    text: String,
    /// Length of `scheme://authority` in `url`.
    origin_len: usize,
}

impl Target {
    fn of(request: &Request) -> Target {
        // `Request::url` is the origin followed by the path.
        let url = request.url();
        let origin_len = url.len() - request.path.len();
        let text = if request.path.is_empty() {
            // A CONNECT names the host and port instead of a path.
            if request.host.contains(':') && !request.host.starts_with('[') {
                format!("[{}]:{}", request.host, request.port)
            } else {
                format!("{}:{}", request.host, request.port)
            }
        } else {
            request.path.clone()
        };
        Target {
            url,
            text,
            origin_len,
        }
    }

    fn origin(&self) -> &str {
        &self.url[..self.origin_len]
    }

    fn authority(&self) -> String {
        self.origin()
            .split_once("://")
            .map_or_else(String::new, |(_, authority)| authority.to_owned())
    }

    /// The target cannot be written in a URL as it is: curl would reject or change
    /// it (whitespace, `#` starts a fragment, control characters), or it is not a
    /// path (`*`, a CONNECT's authority).
    fn needs_request_target(&self) -> bool {
        !self.text.starts_with('/')
            || self
                .text
                .contains(|c: char| c.is_whitespace() || c == '#' || c.is_control())
    }

    /// The URL to give the tool: the whole URL, or only the origin when the target
    /// goes separately.
    fn url_for_tool(&self) -> String {
        if self.needs_request_target() {
            format!("{}/", self.origin())
        } else {
            self.url.clone()
        }
    }

    /// `.` or `..` path segments, which curl and HTTPie remove unless told not to.
    fn has_dot_segments(&self) -> bool {
        let path = self.text.split('?').next().unwrap_or("");
        path.split('/')
            .any(|segment| segment == "." || segment == "..")
    }
}

fn curl_version_flag(version: &str, scheme: &str) -> Option<&'static str> {
    match (version, scheme) {
        ("HTTP/1.0", _) => Some("--http1.0"),
        // Over TLS curl would offer HTTP/2 first.
        ("HTTP/1.1", "https") => Some("--http1.1"),
        ("HTTP/2.0" | "HTTP/2", "https") => Some("--http2"),
        // Cleartext HTTP/2 that Periscope records is spoken from the first byte (h2c
        // with prior knowledge), not upgraded to.
        ("HTTP/2.0" | "HTTP/2", _) => Some("--http2-prior-knowledge"),
        ("HTTP/3.0" | "HTTP/3", _) => Some("--http3"),
        _ => None,
    }
}

/// `Name: value`, or `Name;` (the syntax both tools use for an empty value: `Name:`
/// would remove the header).
fn header_line(name: &str, value: &[u8], separator: &str, empty: &str) -> Vec<u8> {
    let mut line = name.as_bytes().to_vec();
    if value.is_empty() {
        line.extend_from_slice(empty.as_bytes());
    } else {
        line.extend_from_slice(separator.as_bytes());
        line.extend_from_slice(value);
    }
    line
}

/// The characters of HTTPie's request-item separators (`:`, `;`, `=`, `@`, and
/// those made of them: `:=`, `==`, `=@`, `:@`, ...).
const HTTPIE_SEPARATOR_CHARS: [u8; 4] = [b':', b';', b'=', b'@'];

/// `Name:value` as an HTTPie request item. A value starting with `=` or `@` would
/// make `:` part of another separator (`:=` JSON, `:@` a file): a backslash escapes
/// it.
fn httpie_header_item(name: &str, value: &[u8]) -> Vec<u8> {
    let mut escaped = Vec::with_capacity(value.len() + 1);
    if matches!(value.first(), Some(b'=' | b'@')) {
        escaped.push(b'\\');
    }
    escaped.extend_from_slice(value);
    header_line(name, &escaped, ":", ";")
}

/// HTTPie reads a backslash before a separator character as an escape, in names and
/// values alike, and has no way to write a literal one there; a name with a
/// separator character in it splits at the wrong place.
fn httpie_can_send(name: &str, value: &[u8]) -> bool {
    let name_ok = !name
        .bytes()
        .any(|b| b == b'\\' || HTTPIE_SEPARATOR_CHARS.contains(&b));
    let value_ok = !value
        .windows(2)
        .any(|pair| pair[0] == b'\\' && HTTPIE_SEPARATOR_CHARS.contains(&pair[1]));
    name_ok && value_ok
}

/// What a tool cannot send, as comment lines.
fn request_notes(request: &Request, tool: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let body = &request.body;
    if body.truncated || body.size > body.content.len() as u64 {
        notes.push(format!(
            "Periscope kept {} of the request body's {} bytes: only those are sent",
            body.content.len(),
            body.size
        ));
    }
    if let Some(trailers) = request.trailers.as_ref().filter(|t| !t.is_empty()) {
        let names: Vec<&str> = trailers.iter().map(|h| h.name.as_str()).collect();
        notes.push(format!(
            "{tool} cannot send the request's trailers: {}",
            printable(&names.join(", "))
        ));
    }
    if request.headers.iter().any(|h| h.value.contains(&0)) {
        notes.push(
            "a header value holds a NUL byte, which no command-line argument can carry".into(),
        );
    }
    notes
}

/// `text` with control characters escaped, for a comment line.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// `bytes` as text a terminal shows as it is: UTF-8 without control characters
/// (except line breaks and tabs, when `lines` allows them).
fn printable_text(bytes: &[u8], lines: bool) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let shown = |c: char| !c.is_control() || (lines && (c == '\n' || c == '\t'));
    text.chars().all(shown).then_some(text)
}

/// `bytes` as one word of a POSIX shell command.
///
/// Printable text is quoted by `shlex`. Anything else becomes a `printf` command
/// substitution: exact for every byte but NUL (no argument can hold one), and for a
/// trailing line break, which command substitution removes (no header value ends
/// with one: HTTP/1.1 ends the line there and HTTP/2 forbids it).
fn shell_word(bytes: &[u8]) -> String {
    if let Some(quoted) = printable_text(bytes, false).and_then(|text| shlex::try_quote(text).ok())
    {
        return quoted.into_owned();
    }
    format!("\"$(printf '{}')\"", printf_format(bytes))
}

/// A `printf` format, to be written in single quotes, that prints exactly `bytes`:
/// printable characters as they are, everything else as POSIX escapes (`\n`, `\t`,
/// `\r`, and octal `\ooo` for the rest, which every POSIX printf understands).
fn printf_format(bytes: &[u8]) -> String {
    let mut format = String::with_capacity(bytes.len() + bytes.len() / 4);
    let octal = |format: &mut String, byte: u8| {
        let _ = write!(format, "\\{byte:03o}");
    };
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => format.push_str("\\\\"),
                '%' => format.push_str("%%"),
                // Cannot appear inside single quotes.
                '\'' => octal(&mut format, b'\''),
                '\n' => format.push_str("\\n"),
                '\t' => format.push_str("\\t"),
                '\r' => format.push_str("\\r"),
                c if c.is_control() => {
                    for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                        octal(&mut format, byte);
                    }
                }
                c => format.push(c),
            }
        }
        for &byte in chunk.invalid() {
            octal(&mut format, byte);
        }
    }
    if format.starts_with('-') {
        // bash's printf would read a leading `-` as an option.
        format.replace_range(..1, "\\055");
    }
    format
}

// ---------------------------------------------------------------------------
// Raw messages

fn is_http2(version: &str) -> bool {
    matches!(version, "HTTP/2.0" | "HTTP/2")
}

/// The version for an HTTP/1 start line: HTTP/2 (and 3) messages are written as
/// HTTP/1.1, HTTP/1.0 and 1.1 as they were.
fn http1_version(version: &str) -> &str {
    if version.starts_with("HTTP/1") {
        version
    } else {
        "HTTP/1.1"
    }
}

fn is_chunked(headers: &Headers) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .any(|h| {
            h.value_lossy()
                .split(',')
                .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
        })
}

/// One HTTP/1.1 message. `from_http2` adds what HTTP/1.1 needs and HTTP/2 does not
/// carry as headers: `host` (the authority) and the body's framing.
fn message(
    start_line: Vec<u8>,
    headers: &Headers,
    host: Option<&str>,
    from_http2: bool,
    body: &Body,
    trailers: Option<&Headers>,
) -> Vec<u8> {
    let trailers = trailers.filter(|t| !t.is_empty());
    let mut out = start_line;
    out.reserve(body.content.len() + 64 * (headers.len() + 2));
    out.extend_from_slice(b"\r\n");
    fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        if !value.is_empty() {
            out.push(b' ');
            out.extend_from_slice(value);
        }
        out.extend_from_slice(b"\r\n");
    }
    if let Some(host) = host.filter(|_| headers.get("host").is_none()) {
        line(&mut out, "host", host.as_bytes());
    }
    for header in headers.iter().filter(|h| !h.name.starts_with(':')) {
        line(&mut out, &header.name, &header.value);
    }
    let mut chunked = is_chunked(headers);
    if from_http2 && !chunked && headers.get("content-length").is_none() {
        if trailers.is_some() {
            // Only chunked framing carries trailers in HTTP/1.1.
            line(&mut out, "transfer-encoding", b"chunked");
            chunked = true;
        } else if !body.content.is_empty() {
            line(
                &mut out,
                "content-length",
                body.content.len().to_string().as_bytes(),
            );
        }
    }
    out.extend_from_slice(b"\r\n");
    if chunked {
        if !body.content.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", body.content.len()).as_bytes());
            out.extend_from_slice(&body.content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for trailer in trailers.into_iter().flat_map(Headers::iter) {
            line(&mut out, &trailer.name, &trailer.value);
        }
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(&body.content);
    }
    out
}

#[cfg(test)]
mod tests;
