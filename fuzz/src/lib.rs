//! The fuzz targets' bodies, one function per target, so that the cargo-fuzz binaries
//! (`fuzz_targets/*.rs`) and the stable regression replay (`tests/regressions.rs`)
//! run exactly the same code on an input.
//!
//! Every function must return normally for every input: a panic (or an ASan report)
//! is a finding. Besides "does not crash", some targets check a property that must
//! hold for every accepted input (a parsed filter prints back to itself, a decoded
//! flow survives a JSON round trip, an accepted CONNECT target is a plain host:port,
//! HAR written for any recorded headers reads back).

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::OnceLock;

use periscope_flow::filter::Filter;
use periscope_flow::har::{Har, HarWriter};
use periscope_flow::store::{FlowStore, FlowSummary};
use periscope_flow::{Flow, Headers, Milestone, Timeline, TimelineEvent, Timestamp};
use periscope_proxy::connect_target;

/// Two real flows recorded by Periscope (an HTTPS exchange with a gzip response body,
/// and a failed one with an error), for the targets that need something to match.
pub fn sample_flows() -> &'static [Flow] {
    static FLOWS: OnceLock<Vec<Flow>> = OnceLock::new();
    FLOWS.get_or_init(|| {
        serde_json::from_str(include_str!("sample_flows.json")).expect("sample_flows.json")
    })
}

/// Filters that between them read every part of a flow.
const PROBE_FILTERS: &[&str] = &[
    "~all",
    "~d local & ~m GET",
    "~u echo | ~c 200",
    "~h cookie",
    "~b hello",
    "~bq x | ~bs world",
    "~t json",
    "~tls",
    "~e | ~q | ~s",
    "~src 127 & ~dst 127",
    "~marked | ~websocket | ~a",
];

fn probe_filters() -> &'static [Filter] {
    static FILTERS: OnceLock<Vec<Filter>> = OnceLock::new();
    FILTERS.get_or_init(|| {
        PROBE_FILTERS
            .iter()
            .map(|f| Filter::parse(f).expect("probe filter"))
            .collect()
    })
}

/// Everything read-only a front end does with a flow.
fn exercise_flow(flow: &Flow) {
    for filter in probe_filters() {
        let _ = filter.matches(flow);
    }
    let _ = flow.request.url();
    let _ = flow.duration_millis();
    let _ = FlowSummary::of(flow);
    let _ = periscope_flow::har::entry(flow);
    for event in flow.timeline.tls_events() {
        let _ = event.1.to_string();
    }
}

/// `periscope_proxy::parse_client_hello`: the first bytes a client sends in a CONNECT
/// tunnel. A hello that parses must parse the same with more bytes after it (the
/// parser must not read past the hello it reports).
pub fn client_hello(data: &[u8]) {
    let first = periscope_proxy::parse_client_hello(data);
    if let Ok(Some(hello)) = &first {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
        let again = periscope_proxy::parse_client_hello(&longer);
        assert_eq!(
            again.as_ref().ok().and_then(Option::as_ref),
            Some(hello),
            "trailing bytes changed the parse: {again:?}"
        );
    }
}

/// `Filter::parse`, then `matches` on sample flows. The documented contract: the
/// canonical form (`Display`) of a parsed filter parses back to an equal filter.
pub fn filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(filter) = Filter::parse(text) else {
        return;
    };
    for flow in sample_flows() {
        let _ = filter.matches(flow);
    }
    let canonical = filter.to_string();
    match Filter::parse(&canonical) {
        Ok(again) => assert_eq!(
            again, filter,
            "{text:?} printed as {canonical:?}, which parses to a different filter"
        ),
        Err(error) => {
            panic!("{text:?} printed as {canonical:?}, which does not parse: {error}")
        }
    }
}

/// The proxy's CONNECT target rule (`periscope_proxy::connect_target`) applied to the
/// `http::Uri` that hyper
/// builds from a CONNECT request line. An accepted target must name a host the way
/// RFC 9112 §3.2.3 allows (an IP address, or a registered name made of unreserved,
/// sub-delims and %-escapes; brackets only around an IPv6 address), with a port, and
/// print back to the same target.
pub fn connect_authority(data: &[u8]) {
    let Ok(uri) = http::Uri::try_from(data) else {
        return;
    };
    let Some((host, port)) = connect_target(&uri) else {
        return;
    };
    let shown = String::from_utf8_lossy(data);
    assert!(!host.is_empty() && port != 0);
    let bracketed = uri.authority().is_some_and(|a| a.host().starts_with('['));
    // RFC 6874 zone ids (`[fe80::1%25eth0]`) are tolerated.
    let address = host.split("%25").next().unwrap_or_default();
    let is_ipv6 = address.parse::<std::net::Ipv6Addr>().is_ok();
    assert!(
        bracketed == is_ipv6,
        "{shown:?} was accepted as host {host:?}: brackets must hold an IPv6 address, \
         and only they may"
    );
    if !is_ipv6 && host.parse::<std::net::Ipv4Addr>().is_err() {
        assert!(
            host.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)),
            "{shown:?} was accepted with the host name {host:?}"
        );
    }
    let printed = if is_ipv6 {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let reparsed = http::Uri::try_from(printed.as_str())
        .ok()
        .and_then(|uri| connect_target(&uri));
    assert_eq!(
        reparsed.as_ref(),
        Some(&(host.clone(), port)),
        "{shown:?} was accepted as {printed:?}, which does not parse back"
    );
}

/// A flow as JSON (`periscope dump --json`, the web UI's API, flow files): decoding
/// must not panic, and a decoded flow must survive a JSON round trip unchanged.
pub fn flow_json(data: &[u8]) {
    let Ok(flow) = serde_json::from_slice::<Flow>(data) else {
        return;
    };
    exercise_flow(&flow);
    let json = serde_json::to_vec(&flow).expect("a decoded flow encodes");
    let again: Flow = serde_json::from_slice(&json).expect("an encoded flow decodes");
    assert_eq!(again, flow, "the JSON round trip changed the flow");
}

/// HAR 1.2 as Periscope writes it (`periscope export --har`), read back.
pub fn har_json(data: &[u8]) {
    let Ok(har) = serde_json::from_slice::<periscope_flow::har::Har>(data) else {
        return;
    };
    let json = serde_json::to_vec(&har).expect("a decoded HAR encodes");
    let _ = serde_json::from_slice::<periscope_flow::har::Har>(&json).expect("decodes again");
}

/// The HAR writer (`periscope export`, the console's save as HAR) on a recorded flow
/// whose headers are arbitrary bytes, as a server or client may send them. The input
/// is a list of headers (a selector byte: request or response, and a name, mostly one
/// the writer reads — cookies, encodings; then the value), and sometimes the time the
/// response started (what `Max-Age` counts from). The writer must write JSON that
/// reads back as an archive of one entry with every header, and every time in it
/// must be RFC 3339.
pub fn har_writer(data: &[u8]) {
    const NAMES: &[&str] = &[
        "Set-Cookie",
        "Cookie",
        "Content-Encoding",
        "Content-Type",
        "Location",
    ];
    let mut input = Input(data);
    let mut flow = sample_flows()[0].clone();
    if input.byte().is_multiple_of(4) {
        let response_started = Timestamp(input.int());
        let mut timeline = Timeline::new();
        for entry in flow.timeline.entries() {
            if let TimelineEvent::Milestone { milestone } = entry.event {
                if milestone != Milestone::ResponseStarted {
                    timeline.mark(milestone, entry.at);
                }
            }
        }
        timeline.mark(Milestone::ResponseStarted, response_started);
        flow.timeline = timeline;
    }
    let mut request = Headers::default();
    let mut response = Headers::default();
    while !input.0.is_empty() {
        let selector = input.byte();
        let name = match NAMES.get(usize::from(selector >> 1) % (NAMES.len() + 1)) {
            Some(name) => (*name).to_owned(),
            None => input.text(),
        };
        let value = input.bytes();
        if selector & 1 == 0 {
            request.push(name, value);
        } else {
            response.push(name, value);
        }
    }
    flow.request.headers = request;
    if let Some(recorded) = flow.response.as_mut() {
        recorded.headers = response;
    }

    let mut writer = HarWriter::new(Vec::new(), "fuzz").expect("a HAR head in memory");
    writer.write_flow(&flow).expect("a HAR entry in memory");
    let json = writer.finish().expect("a HAR tail in memory");
    let har: Har = serde_json::from_slice(&json).expect("the writer writes a HAR archive");
    let [entry] = har.log.entries.as_slice() else {
        panic!("{} entries for one flow", har.log.entries.len());
    };
    assert_eq!(entry.request.headers.len(), flow.request.headers.len());
    let response_headers = flow.response.as_ref().map_or(0, |r| r.headers.len());
    assert_eq!(entry.response.headers.len(), response_headers);
    let expiries = entry
        .response
        .cookies
        .iter()
        .filter_map(|c| c.expires.as_ref());
    for time in std::iter::once(&entry.started_date_time).chain(expiries) {
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "{time:?} is not RFC 3339"
        );
    }
}

/// Content-Encoding decoding (what `~b` filters and the UIs read): the first byte picks
/// the coding list, the rest is the body. Output is bounded, so a decompression bomb is
/// an error, not an allocation failure.
pub fn decode_body(data: &[u8]) {
    const CODINGS: &[&str] = &[
        "gzip",
        "deflate",
        "br",
        "zstd",
        "x-gzip",
        "identity",
        "gzip, br",
        "deflate, gzip",
        "br, zstd",
        "gzip, gzip",
        "compress",
        "",
    ];
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let coding = CODINGS[usize::from(selector) % CODINGS.len()];
    let limit = 1 << 20;
    if let Ok(decoded) = periscope_flow::content::decode_body_with_limit(Some(coding), body, limit)
    {
        assert!(
            decoded.len() <= limit.max(body.len()),
            "output over the limit"
        );
    }
}

/// A session file (`-w FILE`, `dump -r FILE`) made of arbitrary bytes: opening it,
/// counting, listing and reading every flow must fail cleanly or work.
pub fn store_file(data: &[u8]) {
    let dir = scratch_dir();
    let path = dir.path().join("fuzzed.periscope");
    std::fs::File::create(&path)
        .and_then(|mut file| file.write_all(data))
        .expect("write the session file");
    read_everything(&path);
}

fn read_everything(path: &std::path::Path) {
    let Ok(store) = FlowStore::open(path) else {
        return;
    };
    let _ = store.count(None);
    let _ = store.summaries(None, 0, 50);
    let _ = store.log_entries(50);
    let mut ids = Vec::new();
    let _ = store.try_for_each(None, |flow| {
        exercise_flow(&flow);
        ids.push(flow.id);
        ControlFlow::Continue(())
    });
    for filter in probe_filters() {
        let _ = store.count(Some(filter));
        let _ = store.summaries(Some(filter), 0, 10);
    }
    for id in ids.into_iter().take(4) {
        let _ = store.get(id);
    }
}

/// A valid session file whose rows hold fuzzed values (what a damaged or hand-edited
/// file looks like to SQLite): every read must fail with an error, never panic.
pub fn store_rows(data: &[u8]) {
    let mut input = Input(data);
    let dir = scratch_dir();
    let path = dir.path().join("rows.periscope");
    std::fs::write(&path, session_template()).expect("copy the template session");
    let conn = rusqlite::Connection::open(&path).expect("open with rusqlite");
    let value = |input: &mut Input<'_>| input.sql_value();
    let head = if input.byte().is_multiple_of(2) {
        // A real flow's JSON with one fuzzed string spliced in: gets past the parser.
        let template = serde_json::to_string(&sample_flows()[1]).expect("sample to JSON");
        let at = usize::from(input.byte()) * template.len() / 256;
        let at = (0..=at)
            .rev()
            .find(|&i| template.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}{}{}", &template[..at], input.text(), &template[at..])
    } else {
        input.text()
    };
    let flow_columns: Vec<rusqlite::types::Value> = (0..19).map(|_| value(&mut input)).collect();
    let inserted = conn.execute(
        "INSERT INTO flows (seq, id, sort_key, started_at, method, scheme, host, port, path,
             status, response_size, duration_ms, has_tls_events, has_renegotiation,
             has_error, marked, content_type, client_peer, server_target, server_peer)
         VALUES (1000, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
             ?16, ?17, ?18, ?19)",
        rusqlite::params_from_iter(flow_columns),
    );
    if inserted.is_ok() {
        let _ = conn.execute(
            "INSERT INTO flow_heads (seq, head) VALUES (1000, ?1)",
            [value_or_text(&mut input, head)],
        );
        let request = value(&mut input);
        let response = value(&mut input);
        let _ = conn.execute(
            "INSERT INTO flow_bodies (seq, request, response) VALUES (1000, ?1, ?2)",
            [request, response],
        );
    }
    let log: Vec<rusqlite::types::Value> = (0..3).map(|_| value(&mut input)).collect();
    let _ = conn.execute(
        "INSERT INTO event_log (at, level, message) VALUES (?1, ?2, ?3)",
        rusqlite::params_from_iter(log),
    );
    drop(conn);
    read_everything(&path);
}

/// A valid session file holding one real flow (made once per process).
fn session_template() -> &'static [u8] {
    static TEMPLATE: OnceLock<Vec<u8>> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = scratch_dir();
        let path = dir.path().join("template.periscope");
        {
            let store = FlowStore::open(&path).expect("create a session");
            store
                .insert(&sample_flows()[0])
                .expect("insert a sample flow");
        }
        // Closing checkpointed the WAL: the file alone is the session.
        std::fs::read(&path).expect("read the template session")
    })
}

/// A temporary directory, in memory when /dev/shm is there (SQLite syncs files).
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

/// The head as text most of the time, sometimes another SQLite type.
fn value_or_text(input: &mut Input<'_>, head: String) -> rusqlite::types::Value {
    if input.byte().is_multiple_of(8) {
        input.sql_value()
    } else {
        rusqlite::types::Value::Text(head)
    }
}

/// Reads fuzz input as a sequence of small values (missing bytes read as zero).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte()).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken.to_vec()
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    fn int(&mut self) -> i64 {
        let mut raw = [0u8; 8];
        for b in &mut raw {
            *b = self.byte();
        }
        i64::from_le_bytes(raw)
    }

    fn sql_value(&mut self) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        match self.byte() % 6 {
            0 => Value::Null,
            1 => Value::Integer(i64::from(self.byte()) - 1),
            2 => Value::Integer(self.int()),
            3 => Value::Real(f64::from_bits(self.int() as u64)),
            4 => Value::Text(self.text()),
            _ => Value::Blob(self.bytes()),
        }
    }
}

/// The SOCKS5 listener's handshake (greeting, RFC 1929 credentials, request) on
/// arbitrary bytes, with and without credentials required: it ends — with a target,
/// a refusal or a closed stream, within its timeout — and never panics.
pub fn socks5_handshake(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    for with_credentials in [false, true] {
        let _ = runtime.block_on(periscope_proxy::socks5::accept_bytes(
            data,
            with_credentials,
        ));
    }
}
