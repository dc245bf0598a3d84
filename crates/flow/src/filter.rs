//! The filter language: mitmproxy's, so users can bring their muscle memory, plus
//! `~tls` for the TLS events Periscope records.
//!
//! ```
//! use periscope_flow::filter::Filter;
//!
//! let filter: Filter = "~d example.com & !(~c 200 | ~c 304)".parse().unwrap();
//! // Display prints a canonical form that parses back to the same filter.
//! assert_eq!(filter.to_string(), "~d example.com & !(~c 200 | ~c 304)");
//! assert_eq!(filter.to_string().parse::<Filter>().unwrap(), filter);
//!
//! let error = Filter::parse("~q & ~zz").unwrap_err();
//! assert_eq!(error.to_string(), "column 6: unknown filter ~zz");
//! ```
//!
//! # Syntax
//!
//! | filter        | matches flows whose ...                                                  |
//! |---------------|--------------------------------------------------------------------------|
//! | `~a`          | response content type is an asset: JavaScript, CSS, image, font          |
//! | `~all`        | (all flows)                                                              |
//! | `~b rx`       | request or response body (decoded) matches                               |
//! | `~bq rx`, `~bs rx` | request / response body matches                                     |
//! | `~c code`     | response status is `code`                                                |
//! | `~comment rx` | the user's comment matches                                               |
//! | `~d rx`       | request host matches                                                     |
//! | `~dst rx`     | server address (`host:port` asked for, or `ip:port` connected to) matches |
//! | `~e`          | flow has an error                                                        |
//! | `~h rx`       | a request or response header line `Name: value` matches                  |
//! | `~hq rx`, `~hs rx` | a request / response header line matches                            |
//! | `~http`       | flow is HTTP (not a connection relayed as TCP)                           |
//! | `~m rx`       | method matches                                                           |
//! | `~marked`     | the user marked the flow                                                 |
//! | `~mode rx`    | the proxy mode the flow came through, as written (`regular`, `socks5`, `reverse:https://example.com`, ...), matches |
//! | `~q`          | request has no response (yet)                                            |
//! | `~replay`     | the request was replayed, or the response came from server replay        |
//! | `~replayq`    | flow is a replay of another flow's request                               |
//! | `~replays`    | the response came from server replay (`--server-replay`)                 |
//! | `~rule rx`    | a rule changed the flow whose name or pattern matches (`map_local`, ...) |
//! | `~s`          | flow has a response                                                      |
//! | `~src rx`     | client address `ip:port` matches (IPv6 as `[ip]:port`)                   |
//! | `~t rx`       | request or response `Content-Type` matches                               |
//! | `~tcp`        | flow is a connection relayed as TCP (ignored host, `--tcp-hosts`, neither TLS nor HTTP) |
//! | `~tq rx`, `~ts rx` | request / response `Content-Type` matches                           |
//! | `~tls [rx]`   | timeline has a TLS event (whose one-line description matches `rx`)       |
//! | `~u rx`, `rx` | URL matches                                                              |
//! | `~websocket`  | request asks to upgrade to WebSocket, or the response accepted it        |
//!
//! Combine with `!` (not), `&` (and), `|` (or) and parentheses; `!` binds tightest,
//! then `&`, then `|`. Filters written side by side are ANDed, and — exactly as in
//! mitmproxy, whose grammar is a sequence of complete expressions — that implicit
//! AND binds looser than `|`: `~q | ~s ~e` means `(~q | ~s) & ~e`.
//!
//! Regexes are case-insensitive, `~h` and `~comment` regexes are multi-line (`^`/`$`
//! match at each header line, each line of the comment) and `~b` regexes let `.`
//! match newlines, all as in mitmproxy. A regex is written bare (up to whitespace,
//! `(`, `)`, `~` or a quote, and not starting with `!`, `&` or `|`) or quoted with
//! `"..."` or `'...'`. Inside quotes `\"`, `\'` and `\\` stand for the character
//! itself; any other backslash is kept, so regex escapes such as `"\d+ items"` work
//! as written.
//!
//! An empty (or blank) expression is an error, as in mitmproxy: callers that accept
//! "no filter" should keep an `Option<Filter>`; `~all` is the explicit match-all.
//!
//! # Differences from mitmproxy
//!
//! Accepted here but rejected by mitmproxy: `(~q)` and `~q&~s` (an operator may
//! follow a filter name directly) and side-by-side filters inside parentheses.
//! Rejected here but accepted by mitmproxy: a bare regex running straight into `(`,
//! `~` or a quote (`~u get(a|b)` silently meant `~u get & ~u a|b` there), and
//! arguments starting with `!`, `&` or `|` (quote them). `~tls` and `~mode` are Periscope's own (`~mode` searches the mode as written, so
//! `~mode socks5` also matches `upstream:socks5://…`; `~mode ^socks5` does not).

use std::fmt;
use std::str::FromStr;

use regex::bytes::{Regex, RegexBuilder};
use winnow::combinator::{opt, peek};
use winnow::error::{ErrMode, ModalResult, ParserError};
use winnow::stream::Location;
use winnow::token::{any, take_while};
use winnow::{LocatingSlice, Parser};

use crate::content::decode_body;
use crate::model::{Body, Flow, Headers};

/// A parsed filter expression, ready to test flows. Regexes are compiled once, when
/// the filter is parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    node: Node,
}

/// Why a filter expression did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct FilterError {
    /// 1-based position, in characters, of where the problem is.
    pub column: usize,
    pub message: String,
}

/// Parses a filter expression; see the [module documentation](self) for the syntax.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    Filter::parse(input)
}

/// Every `~` operator the language has, without the `~`: for help screens, which a
/// test holds to listing them all.
pub fn operator_names() -> Vec<&'static str> {
    let flags = Flag::ALL.iter().map(|flag| flag.name());
    let fields = Field::ALL.iter().map(|field| field.name());
    flags.chain(fields).chain([CODE_NAME, TLS_NAME]).collect()
}

impl Filter {
    /// Parses a filter expression; see the [module documentation](self) for the syntax.
    pub fn parse(input: &str) -> Result<Filter, FilterError> {
        if input.trim().is_empty() {
            return Err(FilterError {
                column: 1,
                message: "empty filter expression".to_owned(),
            });
        }
        let mut stream = LocatingSlice::new(input);
        match expression(&mut stream) {
            Ok(node) => Ok(Filter { node }),
            Err(error) => {
                let fail = match error {
                    ErrMode::Backtrack(fail) | ErrMode::Cut(fail) => fail,
                    ErrMode::Incomplete(_) => Fail {
                        offset: input.len(),
                        message: "unexpected end of input".to_owned(),
                    },
                };
                Err(FilterError {
                    column: column_at(input, fail.offset),
                    message: fail.message,
                })
            }
        }
    }

    pub fn matches(&self, flow: &Flow) -> bool {
        self.node.matches(flow)
    }

    /// Whether the filter looks at a body (`~b`, `~bq`, `~bs`): a flow in flight must
    /// have read its body before such a filter can say anything about it.
    pub fn reads_bodies(&self) -> bool {
        self.node.reads_bodies()
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(input: &str) -> Result<Filter, FilterError> {
        Filter::parse(input)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.node.fmt(f)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Flag(Flag),
    Code(u16),
    Match(Field, Pattern),
    Tls(Option<Pattern>),
    Not(Box<Node>),
    /// Always two or more operands.
    And(Vec<Node>),
    /// Always two or more operands.
    Or(Vec<Node>),
}

/// Filters without an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flag {
    All,
    Asset,
    Error,
    Http,
    Marked,
    NoResponse,
    /// mitmproxy's `~replay`: a replayed request or response.
    Replay,
    /// mitmproxy's `~replayq`.
    ReplayRequest,
    /// mitmproxy's `~replays`: the response was answered by server replay.
    ReplayResponse,
    Response,
    Tcp,
    WebSocket,
}

impl Flag {
    const ALL: [Flag; 12] = [
        Flag::All,
        Flag::Asset,
        Flag::Error,
        Flag::Http,
        Flag::Marked,
        Flag::NoResponse,
        Flag::Replay,
        Flag::ReplayRequest,
        Flag::ReplayResponse,
        Flag::Response,
        Flag::Tcp,
        Flag::WebSocket,
    ];

    fn name(self) -> &'static str {
        match self {
            Flag::All => "all",
            Flag::Asset => "a",
            Flag::Error => "e",
            Flag::Http => "http",
            Flag::Marked => "marked",
            Flag::NoResponse => "q",
            Flag::Replay => "replay",
            Flag::ReplayRequest => "replayq",
            Flag::ReplayResponse => "replays",
            Flag::Response => "s",
            Flag::Tcp => "tcp",
            Flag::WebSocket => "websocket",
        }
    }
}

/// Filters that match a regex against some part of the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Body,
    BodyRequest,
    BodyResponse,
    ContentType,
    ContentTypeRequest,
    ContentTypeResponse,
    Comment,
    Domain,
    Dst,
    Header,
    HeaderRequest,
    HeaderResponse,
    Method,
    Mode,
    Rule,
    Src,
    Url,
}

impl Field {
    const ALL: [Field; 17] = [
        Field::Body,
        Field::BodyRequest,
        Field::BodyResponse,
        Field::ContentType,
        Field::ContentTypeRequest,
        Field::ContentTypeResponse,
        Field::Comment,
        Field::Domain,
        Field::Dst,
        Field::Header,
        Field::HeaderRequest,
        Field::HeaderResponse,
        Field::Method,
        Field::Mode,
        Field::Rule,
        Field::Src,
        Field::Url,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Body => "b",
            Field::BodyRequest => "bq",
            Field::BodyResponse => "bs",
            Field::ContentType => "t",
            Field::ContentTypeRequest => "tq",
            Field::ContentTypeResponse => "ts",
            Field::Comment => "comment",
            Field::Domain => "d",
            Field::Dst => "dst",
            Field::Header => "h",
            Field::HeaderRequest => "hq",
            Field::HeaderResponse => "hs",
            Field::Method => "m",
            Field::Mode => "mode",
            Field::Rule => "rule",
            Field::Src => "src",
            Field::Url => "u",
        }
    }

    /// mitmproxy's flags: header regexes see one line per header (and comment
    /// regexes one line of the comment), body regexes see the whole body as one
    /// string.
    fn regex_options(self) -> RegexOptions {
        match self {
            Field::Header
            | Field::HeaderRequest
            | Field::HeaderResponse
            | Field::Comment
            | Field::Rule => RegexOptions {
                multi_line: true,
                ..RegexOptions::default()
            },
            Field::Body | Field::BodyRequest | Field::BodyResponse => RegexOptions {
                dot_matches_new_line: true,
                ..RegexOptions::default()
            },
            _ => RegexOptions::default(),
        }
    }
}

const CODE_NAME: &str = "c";
const TLS_NAME: &str = "tls";

/// What follows `~`: decides how many arguments to read.
enum Syntax {
    Flag(Flag),
    Field(Field),
    Code,
    Tls,
}

impl Syntax {
    fn lookup(name: &str) -> Option<Syntax> {
        if let Some(&flag) = Flag::ALL.iter().find(|f| f.name() == name) {
            return Some(Syntax::Flag(flag));
        }
        if let Some(&field) = Field::ALL.iter().find(|f| f.name() == name) {
            return Some(Syntax::Field(field));
        }
        match name {
            CODE_NAME => Some(Syntax::Code),
            TLS_NAME => Some(Syntax::Tls),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct RegexOptions {
    multi_line: bool,
    dot_matches_new_line: bool,
}

/// A compiled regex that remembers its source, which is what equality and printing
/// use: two regexes with the same source and field behave the same.
#[derive(Clone)]
struct Pattern {
    source: String,
    // Bytes regexes serve every field: bodies and header values need not be UTF-8,
    // and on UTF-8 text they match exactly as `regex::Regex` would.
    regex: Regex,
}

impl Pattern {
    fn new(source: String, options: RegexOptions) -> Result<Pattern, String> {
        let regex = RegexBuilder::new(&source)
            .case_insensitive(true)
            .multi_line(options.multi_line)
            .dot_matches_new_line(options.dot_matches_new_line)
            .build()
            .map_err(|e| regex_error_message(&e))?;
        Ok(Pattern { source, regex })
    }

    fn is_match(&self, haystack: &[u8]) -> bool {
        self.regex.is_match(haystack)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.source)
    }
}

/// regex's syntax errors are a multi-line drawing; a filter error is one line, and
/// its column already points at the regex.
fn regex_error_message(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => {
            let reason = text
                .lines()
                .find_map(|line| line.strip_prefix("error: "))
                .unwrap_or(text.as_str());
            format!("invalid regex: {reason}")
        }
        regex::Error::CompiledTooBig(_) => "invalid regex: too large once compiled".to_owned(),
        other => format!("invalid regex: {other}"),
    }
}

// ---------------------------------------------------------------------------
// Matching

/// Content types mitmproxy's `~a` treats as page assets (searched, not anchored,
/// so parameters such as `; charset=utf-8` do not matter).
const ASSET_TYPES: [&str; 7] = [
    "text/javascript",
    "application/x-javascript",
    "application/javascript",
    "text/css",
    "image/",
    "font/",
    "application/font",
];

impl Node {
    fn reads_bodies(&self) -> bool {
        match self {
            Node::Match(field, _) => {
                matches!(
                    field,
                    Field::Body | Field::BodyRequest | Field::BodyResponse
                )
            }
            Node::Not(inner) => inner.reads_bodies(),
            Node::And(operands) | Node::Or(operands) => operands.iter().any(Node::reads_bodies),
            Node::Flag(_) | Node::Code(_) | Node::Tls(_) => false,
        }
    }

    fn matches(&self, flow: &Flow) -> bool {
        match self {
            Node::Flag(flag) => flag.matches(flow),
            Node::Code(code) => flow.response.as_ref().is_some_and(|r| r.status == *code),
            Node::Match(field, pattern) => field.matches(pattern, flow),
            Node::Tls(None) => flow.timeline.has_tls_events(),
            Node::Tls(Some(pattern)) => flow
                .timeline
                .tls_events()
                .any(|(_, event)| pattern.is_match(event.to_string().as_bytes())),
            Node::Not(inner) => !inner.matches(flow),
            Node::And(operands) => operands.iter().all(|n| n.matches(flow)),
            Node::Or(operands) => operands.iter().any(|n| n.matches(flow)),
        }
    }
}

impl Flag {
    fn matches(self, flow: &Flow) -> bool {
        match self {
            Flag::All => true,
            Flag::Http => flow.tcp.is_none(),
            Flag::Tcp => flow.tcp.is_some(),
            Flag::Asset => flow.response.as_ref().is_some_and(|response| {
                content_types(&response.headers).any(|value| {
                    let value = String::from_utf8_lossy(value).to_ascii_lowercase();
                    ASSET_TYPES.iter().any(|asset| value.contains(asset))
                })
            }),
            Flag::Error => flow.error.is_some(),
            Flag::Marked => flow.marked,
            Flag::NoResponse => flow.response.is_none(),
            Flag::ReplayRequest => flow.annotations.replay_of.is_some(),
            Flag::ReplayResponse => replayed_response(flow),
            Flag::Replay => flow.annotations.replay_of.is_some() || replayed_response(flow),
            Flag::Response => flow.response.is_some(),
            // A recorded WebSocket session, as mitmproxy's `flow.websocket is not
            // None`; the handshake headers also count, for flows still being set up.
            Flag::WebSocket => {
                flow.websocket.is_some()
                    || upgrades_to_websocket(&flow.request.headers)
                    || flow.response.as_ref().is_some_and(|response| {
                        response.status == 101 && upgrades_to_websocket(&response.headers)
                    })
            }
        }
    }
}

impl Field {
    fn matches(self, pattern: &Pattern, flow: &Flow) -> bool {
        let request = &flow.request;
        let response = flow.response.as_ref();
        match self {
            Field::Body => {
                body_matches(pattern, &request.headers, &request.body)
                    || response.is_some_and(|r| body_matches(pattern, &r.headers, &r.body))
            }
            Field::BodyRequest => body_matches(pattern, &request.headers, &request.body),
            Field::BodyResponse => {
                response.is_some_and(|r| body_matches(pattern, &r.headers, &r.body))
            }
            Field::ContentType => {
                content_type_matches(pattern, &request.headers)
                    || response.is_some_and(|r| content_type_matches(pattern, &r.headers))
            }
            Field::ContentTypeRequest => content_type_matches(pattern, &request.headers),
            Field::ContentTypeResponse => {
                response.is_some_and(|r| content_type_matches(pattern, &r.headers))
            }
            Field::Comment => pattern.is_match(flow.annotations.comment.as_bytes()),
            Field::Rule => flow.rules.iter().any(|applied| {
                pattern.is_match(applied.rule.as_bytes())
                    || pattern.is_match(applied.spec.as_bytes())
            }),
            Field::Domain => pattern.is_match(request.host.as_bytes()),
            // Both the address asked for and the one connected to, because a user may
            // know either: the name in the URL, or the IP from a packet capture.
            Field::Dst => flow.server.as_ref().is_some_and(|server| {
                server
                    .target
                    .as_deref()
                    .is_some_and(|target| pattern.is_match(target.as_bytes()))
                    || server
                        .peer
                        .is_some_and(|peer| pattern.is_match(peer.to_string().as_bytes()))
            }),
            Field::Header => {
                headers_match(pattern, &request.headers)
                    || response.is_some_and(|r| headers_match(pattern, &r.headers))
            }
            Field::HeaderRequest => headers_match(pattern, &request.headers),
            Field::HeaderResponse => response.is_some_and(|r| headers_match(pattern, &r.headers)),
            Field::Method => pattern.is_match(request.method.as_bytes()),
            Field::Mode => pattern.is_match(
                flow.listener
                    .as_ref()
                    .map_or("regular", |listener| listener.mode.as_str())
                    .as_bytes(),
            ),
            Field::Src => flow
                .client
                .peer
                .is_some_and(|peer| pattern.is_match(peer.to_string().as_bytes())),
            Field::Url => pattern.is_match(request.url().as_bytes()),
        }
    }
}

fn content_types(headers: &Headers) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| h.value.as_slice())
}

fn content_type_matches(pattern: &Pattern, headers: &Headers) -> bool {
    content_types(headers).any(|value| pattern.is_match(value))
}

/// Matches against all header lines at once, as mitmproxy does, so a multi-line
/// regex can relate two headers.
fn headers_match(pattern: &Pattern, headers: &Headers) -> bool {
    let mut block = Vec::new();
    for header in headers.iter() {
        block.extend_from_slice(header.name.as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(&header.value);
        block.push(b'\n');
    }
    pattern.is_match(&block)
}

fn body_matches(pattern: &Pattern, headers: &Headers, body: &Body) -> bool {
    // A header may be repeated; HTTP defines that as one comma-separated list.
    let encodings: Vec<_> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-encoding"))
        .map(|h| h.value_lossy())
        .collect();
    let encoding = (!encodings.is_empty()).then(|| encodings.join(","));
    // A body we cannot decode (truncated by the body limit, mislabelled) is still
    // worth searching as it is.
    match decode_body(encoding.as_deref(), &body.content) {
        Ok(decoded) => pattern.is_match(&decoded),
        Err(_) => pattern.is_match(&body.content),
    }
}

fn upgrades_to_websocket(headers: &Headers) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .any(|h| {
            h.value_lossy()
                .split(',')
                .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"))
        })
}

// ---------------------------------------------------------------------------
// Printing

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Flag(flag) => write!(f, "~{}", flag.name()),
            Node::Code(code) => write!(f, "~{CODE_NAME} {code}"),
            Node::Match(field, pattern) => {
                write!(f, "~{} {}", field.name(), Quoted(&pattern.source))
            }
            Node::Tls(None) => write!(f, "~{TLS_NAME}"),
            Node::Tls(Some(pattern)) => write!(f, "~{TLS_NAME} {}", Quoted(&pattern.source)),
            Node::Not(inner) => {
                f.write_str("!")?;
                write_operand(f, inner, |n| matches!(n, Node::And(_) | Node::Or(_)))
            }
            // A nested AND keeps its parentheses so that the printed form parses back
            // to the same tree, not merely an equivalent one.
            Node::And(operands) => write_list(f, operands, " & ", |n| {
                matches!(n, Node::And(_) | Node::Or(_))
            }),
            Node::Or(operands) => write_list(f, operands, " | ", |n| matches!(n, Node::Or(_))),
        }
    }
}

fn write_list(
    f: &mut fmt::Formatter<'_>,
    operands: &[Node],
    separator: &str,
    needs_parentheses: fn(&Node) -> bool,
) -> fmt::Result {
    for (i, operand) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        write_operand(f, operand, needs_parentheses)?;
    }
    Ok(())
}

fn write_operand(
    f: &mut fmt::Formatter<'_>,
    node: &Node,
    needs_parentheses: fn(&Node) -> bool,
) -> fmt::Result {
    if needs_parentheses(node) {
        write!(f, "({node})")
    } else {
        write!(f, "{node}")
    }
}

/// An argument as the parser will read it back: bare when that is unambiguous,
/// otherwise double-quoted with `\` and `"` escaped.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let bare = text.chars().next().is_some_and(starts_bare) && text.chars().all(is_bare);
        if bare {
            return f.write_str(text);
        }
        f.write_str("\"")?;
        for c in text.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

// ---------------------------------------------------------------------------
// Parsing
//
// expression := sequence EOF
// sequence   := or*                      (side by side: ANDed)
// or         := and ("|" and)*
// and        := unary ("&" unary)*
// unary      := "!" unary | primary
// primary    := "(" sequence ")" | "~" name argument? | value
//
// Every error is a cut: once a token is recognised there is only one reading, and
// the first problem found is the one to report.

type Input<'i> = LocatingSlice<&'i str>;
type PResult<T> = ModalResult<T, Fail>;

/// Parentheses and `!` may nest this deep. Far beyond any filter a person writes,
/// and it keeps the recursive parser, matcher and printer off the end of the stack.
const MAX_NESTING: usize = 100;

#[derive(Debug)]
struct Fail {
    /// Byte offset into the input.
    offset: usize,
    message: String,
}

impl<'i> ParserError<Input<'i>> for Fail {
    type Inner = Self;

    fn from_input(input: &Input<'i>) -> Self {
        Fail {
            offset: input.current_token_start(),
            message: "unexpected input".to_owned(),
        }
    }

    fn into_inner(self) -> Result<Self, Self> {
        Ok(self)
    }
}

fn fail<T>(offset: usize, message: impl Into<String>) -> PResult<T> {
    Err(ErrMode::Cut(Fail {
        offset,
        message: message.into(),
    }))
}

fn column_at(input: &str, offset: usize) -> usize {
    input
        .get(..offset)
        .map_or_else(|| input.chars().count(), |before| before.chars().count())
        + 1
}

/// What a bare argument may contain: mitmproxy's set, everything but whitespace,
/// parentheses, `~` and quotes.
fn is_bare(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '~' | '\'' | '"')
}

/// A bare argument or filter name cannot start with an operator, which is how
/// `!~q` and `~q&~s` read as operators rather than as regexes.
fn starts_bare(c: char) -> bool {
    is_bare(c) && !matches!(c, '!' | '&' | '|')
}

fn whitespace(input: &mut Input<'_>) -> PResult<()> {
    take_while(0.., char::is_whitespace)
        .void()
        .parse_next(input)
}

fn next_char(input: &mut Input<'_>) -> PResult<Option<char>> {
    opt(peek(any)).parse_next(input)
}

/// Consumes `op` if it comes next (after whitespace), returning its offset.
fn operator(input: &mut Input<'_>, op: char) -> PResult<Option<usize>> {
    whitespace(input)?;
    let at = input.current_token_start();
    Ok(opt(op).parse_next(input)?.map(|_| at))
}

fn deeper(depth: usize, at: usize) -> PResult<usize> {
    if depth >= MAX_NESTING {
        return fail(at, format!("nested more than {MAX_NESTING} levels deep"));
    }
    Ok(depth + 1)
}

fn expression(input: &mut Input<'_>) -> PResult<Node> {
    let operands = sequence(input, 0)?;
    whitespace(input)?;
    let at = input.current_token_start();
    if next_char(input)?.is_some() {
        // sequence() stops only at the end or at a `)` it did not open.
        return fail(at, "unmatched )");
    }
    Ok(and_of(operands))
}

/// Operands of the implicit AND; empty when the sequence is.
fn sequence(input: &mut Input<'_>, depth: usize) -> PResult<Vec<Node>> {
    let mut operands = Vec::new();
    loop {
        whitespace(input)?;
        match next_char(input)? {
            None | Some(')') => return Ok(operands),
            Some(_) => {
                let mut alternatives = or_expr(input, depth)?;
                // An unparenthesised `a & b` beside `c` joins the same AND, so that
                // `a & b c` and `a b c` are the same filter.
                if alternatives.len() == 1 {
                    operands.extend(alternatives.pop().unwrap_or_default());
                } else {
                    operands.push(Node::Or(alternatives.into_iter().map(and_of).collect()));
                }
            }
        }
    }
}

fn and_of(mut operands: Vec<Node>) -> Node {
    if operands.len() == 1 {
        if let Some(only) = operands.pop() {
            return only;
        }
    }
    Node::And(operands)
}

/// The alternatives, each a list of AND operands, left unbuilt so that
/// sequence() can merge a lone AND into its own.
fn or_expr(input: &mut Input<'_>, depth: usize) -> PResult<Vec<Vec<Node>>> {
    let mut alternatives = vec![and_chain(input, depth, None)?];
    while let Some(at) = operator(input, '|')? {
        alternatives.push(and_chain(input, depth, Some((at, '|')))?);
    }
    Ok(alternatives)
}

/// `after` is the operator this operand belongs to, for errors that point at it.
fn and_chain(
    input: &mut Input<'_>,
    depth: usize,
    after: Option<(usize, char)>,
) -> PResult<Vec<Node>> {
    let mut operands = vec![unary(input, depth, after)?];
    while let Some(at) = operator(input, '&')? {
        operands.push(unary(input, depth, Some((at, '&')))?);
    }
    Ok(operands)
}

fn unary(input: &mut Input<'_>, depth: usize, after: Option<(usize, char)>) -> PResult<Node> {
    if let Some(at) = operator(input, '!')? {
        let depth = deeper(depth, at)?;
        let inner = unary(input, depth, Some((at, '!')))?;
        return Ok(Node::Not(Box::new(inner)));
    }
    primary(input, depth, after)
}

fn primary(input: &mut Input<'_>, depth: usize, after: Option<(usize, char)>) -> PResult<Node> {
    whitespace(input)?;
    let at = input.current_token_start();
    match next_char(input)? {
        Some('(') => group(input, depth),
        Some('~') => term(input),
        Some(c) if c == '"' || c == '\'' || starts_bare(c) => match argument(input)? {
            Some(value) => {
                pattern(Field::Url.regex_options(), value).map(|p| Node::Match(Field::Url, p))
            }
            None => fail(at, "expected a filter"),
        },
        // The operand is missing: blame the operator that wanted it, since what
        // follows (end, `)`, another operator) is not itself wrong.
        found => match (after, found) {
            (Some((op_at, op)), _) => fail(op_at, format!("expected a filter after {op}")),
            (None, Some(c)) => fail(at, format!("expected a filter before {c}")),
            (None, None) => fail(at, "expected a filter"),
        },
    }
}

fn group(input: &mut Input<'_>, depth: usize) -> PResult<Node> {
    let open = input.current_token_start();
    '('.parse_next(input)?;
    let depth = deeper(depth, open)?;
    let operands = sequence(input, depth)?;
    if operator(input, ')')?.is_none() {
        return fail(open, "( is never closed");
    }
    if operands.is_empty() {
        return fail(open, "empty parentheses");
    }
    Ok(and_of(operands))
}

fn term(input: &mut Input<'_>) -> PResult<Node> {
    let at = input.current_token_start();
    '~'.parse_next(input)?;
    let name = take_while(0.., starts_bare).parse_next(input)?;
    if name.is_empty() {
        return fail(at, "expected a filter name after ~");
    }
    let Some(syntax) = Syntax::lookup(name) else {
        return fail(at, format!("unknown filter ~{name}"));
    };
    match syntax {
        Syntax::Flag(flag) => Ok(Node::Flag(flag)),
        Syntax::Code => {
            whitespace(input)?;
            let Some(value) = argument(input)? else {
                return fail(at, format!("~{name} needs a status code"));
            };
            if value.text.is_empty() || !value.text.bytes().all(|b| b.is_ascii_digit()) {
                return fail(
                    value.offset,
                    format!("~{name} needs a status code, not {:?}", value.text),
                );
            }
            match value.text.parse::<u16>() {
                Ok(code) => Ok(Node::Code(code)),
                Err(_) => fail(
                    value.offset,
                    format!("status code {} is too large", value.text),
                ),
            }
        }
        Syntax::Field(field) => {
            whitespace(input)?;
            let Some(value) = argument(input)? else {
                return fail(at, format!("~{name} needs a regex"));
            };
            pattern(field.regex_options(), value).map(|p| Node::Match(field, p))
        }
        // The argument is optional, so `~tls foo` reads `foo` as its regex rather
        // than as a URL filter beside it; write `~tls ~u foo` for the latter.
        Syntax::Tls => {
            whitespace(input)?;
            match argument(input)? {
                Some(value) => pattern(RegexOptions::default(), value).map(|p| Node::Tls(Some(p))),
                None => Ok(Node::Tls(None)),
            }
        }
    }
}

fn pattern(options: RegexOptions, value: Argument) -> PResult<Pattern> {
    match Pattern::new(value.text, options) {
        Ok(pattern) => Ok(pattern),
        Err(message) => fail(value.offset, message),
    }
}

struct Argument {
    offset: usize,
    text: String,
}

/// A quoted or bare argument, or `None` when what comes next cannot start one.
fn argument(input: &mut Input<'_>) -> PResult<Option<Argument>> {
    let offset = input.current_token_start();
    let text = match next_char(input)? {
        Some(quote @ ('"' | '\'')) => quoted(input, quote)?,
        Some(c) if starts_bare(c) => {
            let text = take_while(1.., is_bare).parse_next(input)?.to_owned();
            let end = input.current_token_start();
            // mitmproxy would silently split `get(a|b)` into two filters; nobody
            // means that, so say how to write it instead.
            if let Some(c @ ('(' | '~' | '"' | '\'')) = next_char(input)? {
                return fail(
                    end,
                    format!("{c} right after a regex: quote the regex, or add a space before {c}"),
                );
            }
            text
        }
        _ => return Ok(None),
    };
    Ok(Some(Argument { offset, text }))
}

fn quoted(input: &mut Input<'_>, quote: char) -> PResult<String> {
    let open = input.current_token_start();
    any.parse_next(input)?;
    let mut text = String::new();
    loop {
        match opt(any).parse_next(input)? {
            None => return fail(open, format!("missing closing {quote}")),
            Some(c) if c == quote => return Ok(text),
            Some('\\') => match opt(any).parse_next(input)? {
                None => return fail(open, format!("missing closing {quote}")),
                // Regex escapes such as `\d` must survive; only the characters that
                // quoting itself needs are unescaped.
                Some(c @ ('"' | '\'' | '\\')) => text.push(c),
                Some(c) => {
                    text.push('\\');
                    text.push(c);
                }
            },
            Some(c) => text.push(c),
        }
    }
}

/// The response came from server replay (the rule that answered says so).
fn replayed_response(flow: &Flow) -> bool {
    flow.rules.iter().any(|rule| rule.rule == "server_replay")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ConnectionInfo, FlowError, FlowErrorKind, FlowId, Header, Request, Response, Timestamp,
    };
    use crate::timeline::{Direction, Initiator, Leg, Timeline, TlsEvent, TlsEventKind};
    use proptest::prelude::*;
    use std::io::Write;

    // -- helpers ------------------------------------------------------------

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(pairs.iter().map(|&(n, v)| Header::new(n, v)).collect())
    }

    /// A GET of https://example.com/index.html?q=1 from 127.0.0.1:50000, no response.
    fn flow() -> Flow {
        Flow {
            id: FlowId::new(),
            client: ConnectionInfo {
                id: 1,
                peer: Some("127.0.0.1:50000".parse().unwrap()),
                local: Some("127.0.0.1:8080".parse().unwrap()),
                target: None,
                tls: None,
            },
            server: Some(ConnectionInfo {
                id: 2,
                peer: Some("93.184.216.34:443".parse().unwrap()),
                local: None,
                target: Some("example.com:443".into()),
                tls: None,
            }),
            request: Request {
                method: "GET".into(),
                scheme: "https".into(),
                host: "example.com".into(),
                port: 443,
                path: "/index.html?q=1".into(),
                http_version: "HTTP/1.1".into(),
                stream_id: None,
                headers: headers(&[("Host", "example.com"), ("User-Agent", "curl/8.5.0")]),
                body: Body::default(),
                trailers: None,
            },
            response: None,
            error: None,
            timeline: Timeline::new(),
            marked: false,
            intercepted_tls: true,
            websocket: None,
            intercepted: None,
            annotations: Default::default(),
            listener: None,
            tcp: None,
            rules: Vec::new(),
        }
    }

    fn response(status: u16, header_pairs: &[(&str, &str)], body: &[u8]) -> Response {
        Response {
            status,
            reason: "Whatever".into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers: headers(header_pairs),
            body: Body::complete(body.to_vec()),
            trailers: None,
            generated: false,
        }
    }

    fn with_response(status: u16, header_pairs: &[(&str, &str)], body: &[u8]) -> Flow {
        let mut f = flow();
        f.response = Some(response(status, header_pairs, body));
        f
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[track_caller]
    fn matches(filter: &str, flow: &Flow) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter:?} should parse: {e}"))
            .matches(flow)
    }

    #[track_caller]
    fn error(filter: &str) -> (usize, String) {
        match Filter::parse(filter) {
            Ok(parsed) => panic!("{filter:?} should not parse, got {parsed}"),
            Err(e) => (e.column, e.message),
        }
    }

    #[track_caller]
    fn canonical(filter: &str) -> String {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter:?} should parse: {e}"))
            .to_string()
    }

    // -- the filters ----------------------------------------------------------

    #[test]
    fn all_and_http_match_everything() {
        assert!(matches("~all", &flow()));
        assert!(matches("~http", &with_response(500, &[], b"")));
    }

    #[test]
    fn asset_follows_mitmproxy_content_types() {
        for ct in [
            "text/javascript",
            "application/javascript; charset=utf-8",
            "application/x-javascript",
            "text/css",
            "image/png",
            "Image/SVG+XML",
            "font/woff2",
            "application/font-woff",
        ] {
            assert!(
                matches("~a", &with_response(200, &[("Content-Type", ct)], b"")),
                "{ct}"
            );
        }
        for ct in ["text/html", "application/json"] {
            assert!(
                !matches("~a", &with_response(200, &[("Content-Type", ct)], b"")),
                "{ct}"
            );
        }
        // Only the response counts.
        let mut f = flow();
        f.request.headers.push("Content-Type", "image/png");
        assert!(!matches("~a", &f));
    }

    #[test]
    fn body_filters_look_at_the_right_side() {
        let mut f = with_response(200, &[], b"response says hello");
        f.request.body = Body::complete(&b"request content"[..]);
        assert!(matches("~b content", &f));
        assert!(matches("~b HELLO", &f), "case-insensitive");
        assert!(!matches("~b nothing", &f));
        assert!(matches("~bq content", &f));
        assert!(!matches("~bq hello", &f));
        assert!(matches("~bs hello", &f));
        assert!(!matches("~bs content", &f));
        assert!(
            !matches("~bs anything", &flow()),
            "no response, no response body"
        );
    }

    #[test]
    fn body_regexes_span_lines() {
        let f = with_response(200, &[], b"first line\nsecond line");
        assert!(matches("~bs 'first.*second'", &f));
    }

    #[test]
    fn bodies_are_matched_decoded() {
        let f = with_response(
            200,
            &[("Content-Encoding", "gzip")],
            &gzip("compressed sécret".as_bytes()),
        );
        assert!(matches("~bs sécret", &f));
        // A body that does not decode is searched as it is.
        let f = with_response(200, &[("Content-Encoding", "gzip")], b"plain after all");
        assert!(matches("~bs 'plain after'", &f));
        // Non-UTF-8 bytes do not stop a match elsewhere in the body.
        let f = with_response(200, &[], b"\xff\xfe needle \x00");
        assert!(matches("~bs needle", &f));
    }

    #[test]
    fn code_matches_the_response_status() {
        let f = with_response(404, &[], b"");
        assert!(matches("~c 404", &f));
        assert!(!matches("~c 200", &f));
        assert!(!matches("~c 200", &flow()));
    }

    #[test]
    fn domain_matches_the_host() {
        assert!(matches("~d example", &flow()));
        assert!(matches("~d EXAMPLE.COM", &flow()));
        assert!(!matches("~d example.org", &flow()));
    }

    #[test]
    fn dst_matches_the_target_or_the_peer() {
        assert!(matches("~dst example.com:443", &flow()));
        assert!(matches("~dst 93.184.216.34", &flow()));
        assert!(matches("~dst :443$", &flow()));
        assert!(!matches("~dst :80$", &flow()));
        let mut f = flow();
        f.server = None;
        assert!(!matches("~dst .", &f));
    }

    #[test]
    fn error_and_marked() {
        let mut f = flow();
        assert!(!matches("~e", &f));
        assert!(!matches("~marked", &f));
        f.error = Some(FlowError {
            kind: FlowErrorKind::Connect,
            message: "connection refused".into(),
            at: Timestamp(1),
        });
        f.marked = true;
        assert!(matches("~e", &f));
        assert!(matches("~marked", &f));
    }

    #[test]
    fn rule_matches_the_name_or_pattern_of_a_rule_that_changed_the_flow() {
        let mut f = flow();
        assert!(!matches("~rule .", &f));
        f.rules.push(crate::AppliedRule {
            rule: "map_local".into(),
            spec: "|example.com/app|/srv/app".into(),
            effect: "answered from /srv/app/index.html".into(),
        });
        assert!(matches("~rule map_local", &f));
        assert!(matches("~rule '^map_'", &f));
        assert!(matches("~rule /srv/app", &f));
        assert!(!matches("~rule modify_headers", &f));
        assert!(matches("!~rule block_list", &f));
    }

    #[test]
    fn only_body_terms_read_bodies() {
        let reads = |text: &str| Filter::parse(text).unwrap().reads_bodies();
        assert!(reads("~b secret"));
        assert!(reads("~d example.com & !(~bq x | ~c 200)"));
        assert!(!reads("~d example.com & ~h x-body"));
        assert!(!reads("body"), "a bare word is ~u");
    }

    #[test]
    fn comment_matches_the_users_comment() {
        let mut f = flow();
        assert!(!matches("~comment .", &f));
        assert!(matches("!~comment .", &f));
        f.annotations.comment = "Login fails\nafter the renegotiation".into();
        assert!(matches("~comment login", &f));
        // Multi-line, as in mitmproxy: ^ and $ work per line, . stops at newlines.
        assert!(matches("~comment '^after'", &f));
        assert!(matches("~comment 'fails$'", &f));
        assert!(!matches("~comment 'fails.after'", &f));
        assert!(matches("~comment renegotiation$", &f));
        assert!(!matches("~comment logout", &f));
    }

    #[test]
    fn replay_and_replayq_match_replayed_requests() {
        let mut f = flow();
        assert!(!matches("~replay", &f));
        assert!(!matches("~replayq", &f));
        f.annotations.replay_of = Some(FlowId::new());
        assert!(matches("~replay", &f));
        assert!(matches("~replayq", &f));
        // A copy is not a replay: nothing was sent again.
        let mut copy = flow();
        copy.annotations.duplicate_of = Some(FlowId::new());
        assert!(!matches("~replay", &copy));
        assert_eq!(canonical("~replayq & !~replay"), "~replayq & !~replay");
    }

    #[test]
    fn replays_matches_answers_from_server_replay() {
        let mut f = with_response(200, &[], b"");
        assert!(!matches("~replays", &f));
        f.rules.push(crate::AppliedRule {
            rule: "server_replay".into(),
            spec: "session.periscope".into(),
            effect: "answered from the recorded flow".into(),
        });
        assert!(matches("~replays", &f));
        assert!(matches("~replay", &f));
        assert!(!matches("~replayq", &f));
    }

    #[test]
    fn header_filters_see_name_value_lines() {
        let f = with_response(200, &[("Server", "nginx"), ("X-Cache", "HIT")], b"");
        assert!(matches("~h 'user-agent: curl'", &f));
        assert!(matches("~h nginx", &f));
        assert!(matches("~hq 'User-Agent: curl'", &f));
        assert!(!matches("~hq nginx", &f));
        assert!(matches("~hs 'server: nginx'", &f));
        assert!(!matches("~hs curl", &f));
        // Multi-line: ^ and $ work per header line.
        assert!(matches("~hs '^x-cache: hit$'", &f));
        assert!(!matches("~hs '^hit'", &f));
        assert!(!matches("~hs .", &flow()));
    }

    #[test]
    fn method_and_url() {
        let f = flow();
        assert!(matches("~m get", &f));
        assert!(!matches("~m post", &f));
        assert!(matches("~u 'https://example.com/index'", &f));
        assert!(matches("~u 'index\\.html\\?q=1$'", &f));
        assert!(!matches("~u /other", &f));
        // A bare regex is a URL regex.
        assert!(matches("index.html", &f));
        assert!(!matches("other.html", &f));
    }

    #[test]
    fn no_response_and_response() {
        assert!(matches("~q", &flow()));
        assert!(!matches("~s", &flow()));
        let f = with_response(200, &[], b"");
        assert!(!matches("~q", &f));
        assert!(matches("~s", &f));
    }

    #[test]
    fn src_matches_the_client_address() {
        assert!(matches("~src 127.0.0.1", &flow()));
        assert!(matches("~src :50000$", &flow()));
        assert!(!matches("~src 10.0.0.1", &flow()));
        let mut f = flow();
        f.client.peer = Some("[::1]:4000".parse().unwrap());
        assert!(matches("~src '^\\[::1\\]:4000$'", &f));
        f.client.peer = None;
        assert!(!matches("~src .", &f));
    }

    #[test]
    fn content_type_filters() {
        let mut f = with_response(200, &[("Content-Type", "text/html; charset=utf-8")], b"");
        f.request.headers.push("content-type", "application/json");
        assert!(matches("~t json", &f));
        assert!(matches("~t html", &f));
        assert!(matches("~tq json", &f));
        assert!(!matches("~tq html", &f));
        assert!(matches("~ts HTML", &f));
        assert!(!matches("~ts json", &f));
        assert!(!matches("~ts .", &flow()));
    }

    #[test]
    fn tls_matches_timeline_events() {
        let mut f = flow();
        assert!(!matches("~tls", &f));
        f.timeline.push_tls(
            Timestamp(5),
            TlsEvent {
                leg: Leg::Server,
                kind: TlsEventKind::KeyUpdate {
                    direction: Direction::Received,
                    update_requested: true,
                },
            },
        );
        assert!(matches("~tls", &f));
        assert!(matches("~tls keyupdate", &f));
        assert!(matches("~tls 'server leg'", &f));
        assert!(!matches("~tls renegotiation", &f));
        f.timeline.push_tls(
            Timestamp(6),
            TlsEvent {
                leg: Leg::Client,
                kind: TlsEventKind::RenegotiationStarted {
                    initiator: Initiator::Peer,
                },
            },
        );
        assert!(matches("~tls renegotiation", &f));
        assert!(matches("~tls 'renegotiation started by client'", &f));
        assert!(matches("!~tls renegotiation", &flow()));
    }

    #[test]
    fn websocket_from_the_handshake() {
        let mut f = flow();
        assert!(!matches("~websocket", &f));
        f.request.headers.push("Connection", "Upgrade");
        f.request.headers.push("Upgrade", "WebSocket");
        assert!(matches("~websocket", &f));

        let mut f = with_response(101, &[("Upgrade", "websocket")], b"");
        assert!(matches("~websocket", &f));
        f.response.as_mut().unwrap().status = 200;
        assert!(!matches("~websocket", &f));
        let f = with_response(101, &[("Upgrade", "h2c")], b"");
        assert!(!matches("~websocket", &f));
    }

    #[test]
    fn mode_matches_the_listener_as_written_and_old_flows_are_regular() {
        let mut f = flow();
        assert!(matches("~mode regular", &f));
        assert!(!matches("~mode socks5", &f));
        f.listener = Some(crate::ListenerInfo {
            mode: "upstream:socks5://proxy.test:1080".into(),
            address: None,
        });
        assert!(matches("~mode upstream", &f));
        assert!(matches("~mode socks5", &f));
        assert!(!matches("~mode ^socks5", &f));
        assert!(!matches("~mode regular", &f));
        f.listener = Some(crate::ListenerInfo {
            mode: "socks5".into(),
            address: None,
        });
        assert!(matches("~mode ^socks5$", &f));
    }

    #[test]
    fn tcp_flows_are_not_http() {
        let mut f = flow();
        assert!(matches("~http", &f));
        assert!(!matches("~tcp", &f));
        f.tcp = Some(crate::TcpSession {
            reason: crate::TcpReason::IgnoredHost,
            sni: Some("example.com".into()),
            from_client: Body::default(),
            from_server: Body::default(),
        });
        assert!(!matches("~http", &f));
        assert!(matches("~tcp", &f));
    }

    // -- operators --------------------------------------------------------------

    #[test]
    fn not_and_or() {
        let f = with_response(200, &[], b"");
        assert!(matches("!~q", &f));
        assert!(matches("! ~c 201", &f));
        assert!(!matches("!~c 200", &f));
        assert!(matches("~c 200 & ~s", &f));
        assert!(!matches("~c 200 & ~q", &f));
        assert!(matches("~c 201 | ~s", &f));
        assert!(!matches("~c 201 | ~q", &f));
        assert!(matches("!!~s", &f));
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        assert_eq!(canonical("~q | ~s & ~e"), "~q | ~s & ~e");
        let parsed = Filter::parse("~q | ~s & ~e").unwrap();
        let expected = Node::Or(vec![
            Node::Flag(Flag::NoResponse),
            Node::And(vec![Node::Flag(Flag::Response), Node::Flag(Flag::Error)]),
        ]);
        assert_eq!(parsed.node, expected);
        assert_eq!(
            Filter::parse("!~q & ~s").unwrap().node,
            Node::And(vec![
                Node::Not(Box::new(Node::Flag(Flag::NoResponse))),
                Node::Flag(Flag::Response)
            ])
        );
        assert_eq!(canonical("!(~q | ~s)"), "!(~q | ~s)");
        // With a response, no error: "~q | (~s & ~e)" is false.
        assert!(!matches("~q | ~s & ~e", &with_response(200, &[], b"")));
        assert!(matches("(~q | ~s) & !~e", &with_response(200, &[], b"")));
    }

    #[test]
    fn side_by_side_means_and() {
        assert_eq!(canonical("~q ~m get"), "~q & ~m get");
        assert_eq!(
            canonical("~q ~m get ~d example"),
            "~q & ~m get & ~d example"
        );
        assert_eq!(canonical("!~c 201 !~c 202"), "!~c 201 & !~c 202");
        // An explicit AND beside another filter is the same single AND.
        assert_eq!(
            Filter::parse("~q & ~e ~s").unwrap(),
            Filter::parse("~q ~e ~s").unwrap()
        );
        assert!(!matches("~q ~s", &flow()));
        assert!(matches("~q ~m get", &flow()));
    }

    #[test]
    fn side_by_side_binds_looser_than_or_as_in_mitmproxy() {
        // mitmproxy's grammar is OneOrMore(infix expression): `a | b c` is `(a | b) & c`.
        assert_eq!(canonical("~q | ~s ~e"), "(~q | ~s) & ~e");
        assert_eq!(canonical("~e ~q | ~s"), "~e & (~q | ~s)");
        assert_eq!(canonical("(~q ~s)"), "~q & ~s");
    }

    #[test]
    fn grouping_is_kept() {
        assert_eq!(canonical("(~q & ~s) & ~e"), "(~q & ~s) & ~e");
        assert_eq!(canonical("~q | (~s | ~e)"), "~q | (~s | ~e)");
        assert_eq!(canonical("((~q))"), "~q");
        assert_eq!(canonical("(~q)&(~s)"), "~q & ~s");
        assert_eq!(canonical("~q&~s|~e"), "~q & ~s | ~e");
    }

    // -- arguments ----------------------------------------------------------------

    #[test]
    fn quoting() {
        let f = Filter::parse(r#"~u 'foo ~u bar' ~u voing"#).unwrap();
        assert_eq!(f.to_string(), r#"~u "foo ~u bar" & ~u voing"#);
        // mitmproxy's own quoting test.
        assert_eq!(canonical(r#"~u 'foobar\"\''"#), r#"~u "foobar\"'""#);
        assert_eq!(canonical(r#"~u "foo 'bar""#), r#"~u "foo 'bar""#);
        // Backslashes that are not quoting escapes stay for the regex.
        assert_eq!(canonical(r#"~u "\d+ x""#), r#"~u "\\d+ x""#);
        assert_eq!(canonical(r#"~u "a\\b c""#), r#"~u "a\\b c""#);
        assert_eq!(canonical(r"~u a\.b"), r"~u a\.b");
        // Arguments that cannot be bare get quoted back.
        assert_eq!(canonical(r#"~u "(a|b)""#), r#"~u "(a|b)""#);
        assert_eq!(canonical(r#"~u '!x'"#), r#"~u "!x""#);
        assert_eq!(canonical(r#"~u ''"#), r#"~u """#);
        // `|` and `&` inside a bare regex are part of it, as in mitmproxy.
        assert_eq!(canonical("~d google|facebook"), "~d google|facebook");
        assert_eq!(canonical("~u a=1&b=2"), "~u a=1&b=2");
        assert_eq!(canonical("~s шгн"), "~s & ~u шгн");
    }

    #[test]
    fn quoted_regex_matches_with_spaces_and_parens() {
        let mut f = flow();
        f.request.path = "/getInfo?x=a b".into();
        assert!(matches(r#"~u "get(Info|Routers)""#, &f));
        assert!(matches(r#"~u "a b$""#, &f));
        assert!(matches(r#"~u '\?x='"#, &f));
    }

    #[test]
    fn tls_argument_is_optional() {
        assert_eq!(canonical("~tls"), "~tls");
        assert_eq!(canonical("~tls & ~q"), "~tls & ~q");
        assert_eq!(canonical("~tls ~q"), "~tls & ~q");
        assert_eq!(canonical("~tls (~q)"), "~tls & ~q");
        assert_eq!(canonical("~tls keyupdate ~q"), "~tls keyupdate & ~q");
        assert_eq!(canonical("!~tls|~e"), "!~tls | ~e");
    }

    // -- errors -------------------------------------------------------------------

    #[test]
    fn error_columns() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty filter expression"),
            ("   ", 1, "empty filter expression"),
            ("~zz", 1, "unknown filter ~zz"),
            ("~q & !~zz", 7, "unknown filter ~zz"),
            ("~Q", 1, "unknown filter ~Q"),
            ("~q ~", 4, "expected a filter name after ~"),
            ("~b", 1, "~b needs a regex"),
            ("~q & ~bs ", 6, "~bs needs a regex"),
            ("~h )", 1, "~h needs a regex"),
            ("~b & ~q", 1, "~b needs a regex"),
            ("~c", 1, "~c needs a status code"),
            ("~c abc", 4, "~c needs a status code, not \"abc\""),
            ("~c 99999", 4, "status code 99999 is too large"),
            ("~u [", 4, "invalid regex: unclosed character class"),
            ("~q ~h   'a(b'", 9, "invalid regex: unclosed group"),
            ("(~q", 1, "( is never closed"),
            ("~s (~q | (~e)", 4, "( is never closed"),
            ("~q)", 3, "unmatched )"),
            ("(~q))", 5, "unmatched )"),
            (")", 1, "unmatched )"),
            ("()", 1, "empty parentheses"),
            ("~q &", 4, "expected a filter after &"),
            ("~q | ", 4, "expected a filter after |"),
            ("~q & | ~s", 4, "expected a filter after &"),
            ("(~q &)", 5, "expected a filter after &"),
            ("!", 1, "expected a filter after !"),
            ("~q !", 4, "expected a filter after !"),
            ("& ~q", 1, "expected a filter before &"),
            ("(| ~q)", 2, "expected a filter before |"),
            ("~u 'abc", 4, "missing closing '"),
            ("~u \"abc\\\"", 4, "missing closing \""),
            (
                "~u get(a|b)",
                7,
                "( right after a regex: quote the regex, or add a space before (",
            ),
            (
                "~d foo~q",
                7,
                "~ right after a regex: quote the regex, or add a space before ~",
            ),
            // Columns count characters, not bytes.
            ("ä ö ~zz", 5, "unknown filter ~zz"),
        ];
        for &(input, column, message) in cases {
            assert_eq!(error(input), (column, message.to_owned()), "{input:?}");
        }
    }

    #[test]
    fn error_display() {
        let e = Filter::parse("~q & ~zz").unwrap_err();
        assert_eq!(e.to_string(), "column 6: unknown filter ~zz");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep_ok = format!("{}~q{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert_eq!(canonical(&deep_ok), "~q");
        let too_deep = format!(
            "{}~q{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert_eq!(error(&too_deep).0, MAX_NESTING + 1);
        let nots = format!("{}~q", "!".repeat(10_000));
        assert_eq!(error(&nots).0, MAX_NESTING + 1);
    }

    // -- properties -----------------------------------------------------------------

    fn regex_source() -> impl Strategy<Value = String> {
        // Characters that exercise quoting as well as ordinary regexes.
        "[a-zA-Z0-9 .*+?|&!()\\[\\]~'\"\\\\é\t-]{0,8}"
    }

    fn leaf() -> impl Strategy<Value = Node> {
        let flag = proptest::sample::select(Flag::ALL.to_vec()).prop_map(Node::Flag);
        let code = proptest::arbitrary::any::<u16>().prop_map(Node::Code);
        let field = (
            proptest::sample::select(Field::ALL.to_vec()),
            regex_source(),
        )
            .prop_filter_map("valid regex", |(field, source)| {
                Pattern::new(source, field.regex_options())
                    .ok()
                    .map(|p| Node::Match(field, p))
            });
        let tls = proptest::option::of(regex_source()).prop_filter_map("valid regex", |source| {
            match source {
                None => Some(Node::Tls(None)),
                Some(source) => Pattern::new(source, RegexOptions::default())
                    .ok()
                    .map(|p| Node::Tls(Some(p))),
            }
        });
        prop_oneof![flag, code, field, tls]
    }

    fn node() -> impl Strategy<Value = Node> {
        leaf().prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|n| Node::Not(Box::new(n))),
                proptest::collection::vec(inner.clone(), 2..5).prop_map(Node::And),
                proptest::collection::vec(inner, 2..5).prop_map(Node::Or),
            ]
        })
    }

    fn filterish_input() -> impl Strategy<Value = String> {
        let token = proptest::sample::select(vec![
            "~b", "~bq", "~c", "~tls", "~q", "~s", "~u", "~", "~zz", "!", "&", "|", "(", ")", "\"",
            "'", "\\", " ", "foo", "[", "200", "é", "a(", "*", "\t",
        ]);
        proptest::collection::vec(token, 0..16).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn printing_then_parsing_gives_the_same_filter(node in node()) {
            let filter = Filter { node };
            let printed = filter.to_string();
            let parsed = Filter::parse(&printed);
            prop_assert_eq!(parsed.as_ref().ok(), Some(&filter), "printed as {:?}: {:?}", printed, parsed);
        }

        #[test]
        fn arbitrary_input_never_panics(input in proptest::arbitrary::any::<String>()) {
            let _ = Filter::parse(&input);
        }

        #[test]
        fn filter_like_input_never_panics_and_round_trips(input in filterish_input()) {
            match Filter::parse(&input) {
                Ok(filter) => {
                    let _ = filter.matches(&flow());
                    let reparsed = Filter::parse(&filter.to_string());
                    prop_assert_eq!(reparsed.ok(), Some(filter));
                }
                Err(error) => {
                    prop_assert!(error.column >= 1);
                    prop_assert!(error.column <= input.chars().count() + 1);
                }
            }
        }
    }
}
