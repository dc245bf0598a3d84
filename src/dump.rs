//! `periscope dump`: one line per flow on stdout, in the spirit of mitmdump, with the
//! flow's TLS events and error on indented lines below it — live from the proxy, or
//! from a saved session.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use periscope_flow::filter::Filter;
use periscope_flow::live::{FlowReceiver as Receiver, RecvError, TryRecvError};
use periscope_flow::store::FlowStore;
use periscope_flow::{Flow, FlowEvent, FlowId, Headers, LogLevel, TcpSession, WebSocketMessage};
use periscope_model::units::{format_duration_ms, format_size};
use tokio::sync::{oneshot, Notify};

use crate::cli::DumpArgs;

/// The printer thread of `periscope dump`.
pub struct Printer {
    stop: Arc<Notify>,
    finished: oneshot::Receiver<()>,
}

impl Printer {
    /// Prints flows as the proxy finishes them, and the proxy's log on stderr, on a
    /// thread of its own.
    ///
    /// A thread, not a task: stdout may be a pipe that nobody reads for a while (a
    /// paused `periscope dump | less`), and tokio's stdout hands every write to its
    /// blocking pool, which cost a thread hand-over (two futex calls and a context
    /// switch) per printed batch — about one per flow under load, the proxy's most
    /// frequent futex call (perf, keep-alive bench). Here a write blocks only this
    /// thread.
    pub fn spawn(events: Receiver, filter: Option<Filter>, args: DumpArgs) -> Printer {
        let runtime = tokio::runtime::Handle::current();
        let stop = Arc::new(Notify::new());
        let (done, finished) = oneshot::channel();
        let stop_here = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("dump-printer".into())
            .spawn(move || {
                print_live(&runtime, &stop_here, events, filter, args);
                let _ = done.send(());
            })
            .expect("cannot start the printer thread");
        Printer { stop, finished }
    }

    /// Resolves when the live feed has ended and everything in it was printed.
    pub async fn ended(&mut self) {
        let _ = (&mut self.finished).await;
    }

    /// Prints the events already queued and stops, waiting for that at most
    /// `limit` (stdout may be a pipe nobody reads): at exit, the last flows of a
    /// replay or of a proxy stopped under load are printed, not left in the queue.
    pub async fn finish(self, limit: Duration) {
        self.stop.notify_one();
        let _ = tokio::time::timeout(limit, self.finished).await;
    }
}

/// How long the printer lets events gather after a busy batch: under load one write
/// then carries many flows, and the thread is not woken for each; an idle proxy still
/// prints each flow the moment it ends.
const GATHER: Duration = Duration::from_millis(5);

fn print_live(
    runtime: &tokio::runtime::Handle,
    stop: &Notify,
    mut events: Receiver,
    filter: Option<Filter>,
    args: DumpArgs,
) {
    // WebSocket flows whose line was printed: their messages follow it.
    let mut shown: HashSet<FlowId> = HashSet::new();
    let mut out = String::new();
    let mut stopping = false;
    loop {
        let first = if stopping {
            None
        } else {
            runtime.block_on(async {
                tokio::select! {
                    event = events.recv() => Some(event),
                    () = stop.notified() => None,
                }
            })
        };
        // Told to stop: whatever is queued, then the end.
        stopping |= first.is_none();
        let mut next = first.or_else(|| queued(&mut events));
        let mut handled = 0;
        while let Some(event) = next {
            match event {
                Ok(event) => {
                    handle_event(event, &filter, &args, &mut shown, &mut out);
                    handled += 1;
                }
                Err(RecvError::Lagged(missed)) => {
                    eprintln!("periscope: the printer fell behind; {missed} events not shown");
                }
                Err(RecvError::Closed) => {
                    write_out(&mut out);
                    return;
                }
            }
            next = queued(&mut events);
            if out.len() >= FLUSH_AT {
                write_out(&mut out);
            }
        }
        write_out(&mut out);
        if stopping {
            return;
        }
        if handled > 1 {
            // Built inside the runtime's context: a timer needs it.
            stopping = runtime
                .block_on(async { tokio::time::timeout(GATHER, stop.notified()).await })
                .is_ok();
        }
    }
}

/// The next event already queued, without waiting; `None` when there is none.
fn queued(events: &mut Receiver) -> Option<Result<FlowEvent, RecvError>> {
    match events.try_recv() {
        Ok(event) => Some(Ok(event)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Lagged(missed)) => Some(Err(RecvError::Lagged(missed))),
        Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
    }
}

/// Printed lines held back at most, in bytes, before they are written in one call.
const FLUSH_AT: usize = 64 * 1024;

fn handle_event(
    event: FlowEvent,
    filter: &Option<Filter>,
    args: &DumpArgs,
    shown: &mut HashSet<FlowId>,
    out: &mut String,
) {
    match event {
        FlowEvent::Completed(flow) => {
            if filter.as_ref().is_some_and(|f| !f.matches(&flow)) {
                return;
            }
            if flow.websocket.is_some() {
                shown.insert(flow.id);
            }
            push_line(out, &render(&flow, args));
        }
        FlowEvent::Updated(flow) => {
            if !shown.remove(&flow.id) {
                return;
            }
            if args.json {
                push_line(out, &render(&flow, args));
            } else if args.flow_detail >= 2 {
                if let Some(line) = websocket_closed_line(&flow) {
                    push_line(out, &line);
                }
            }
        }
        FlowEvent::WebSocketMessage { flow, message } => {
            if args.flow_detail >= 2 && !args.json && shown.contains(&flow) {
                push_line(out, &websocket_message_line(&message));
            }
        }
        FlowEvent::Log(entry) => {
            if entry.level >= LogLevel::Info {
                eprintln!("periscope: {}", entry.message);
            }
        }
        FlowEvent::RequestReceived(_) | FlowEvent::Removed(_) | FlowEvent::Cleared { .. } => {}
    }
}

fn push_line(out: &mut String, text: &str) {
    if text.is_empty() {
        return;
    }
    out.push_str(text);
    out.push('\n');
}

/// Writes what `out` holds to stdout, in one call, and empties it.
fn write_out(out: &mut String) {
    if out.is_empty() {
        return;
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(out.as_bytes());
    let _ = lock.flush();
    out.clear();
    // A flow printed as JSON with a large body must not keep its buffer forever.
    out.shrink_to(FLUSH_AT);
}

/// Prints the flows of a saved session that match `filter`; with `save`, also adds
/// them to that session file (`dump -r IN -w OUT FILTER` keeps a filtered copy).
pub fn print_session(
    session: &Path,
    filter: Option<&Filter>,
    args: &DumpArgs,
    save: Option<&Path>,
) -> anyhow::Result<()> {
    // The store's errors name the file.
    let store = FlowStore::open_existing(session)?;
    let mut copy = save
        .map(|out| SessionCopy::open(session, out))
        .transpose()?;
    let mut failure = None;
    let mut out = String::new();
    let scanned = store.try_for_each(filter, |flow| {
        push_line(&mut out, &render(&flow, args));
        if args.flow_detail >= 2 && !args.json {
            for message in flow.websocket.iter().flat_map(|ws| &ws.messages) {
                push_line(&mut out, &websocket_message_line(message));
            }
            if let Some(line) = websocket_closed_line(&flow) {
                push_line(&mut out, &line);
            }
        }
        if out.len() >= FLUSH_AT {
            write_out(&mut out);
        }
        if let Some(copy) = copy.as_mut() {
            if let Err(error) = copy.add(flow) {
                failure = Some(error);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    // What was read before a failure is still printed.
    write_out(&mut out);
    scanned?;
    if let Some(error) = failure {
        return Err(error);
    }
    if let Some(copy) = copy {
        copy.finish()?;
    }
    Ok(())
}

/// The session file `dump -r` copies the flows it prints into, in batches (one
/// transaction each).
struct SessionCopy {
    store: FlowStore,
    pending: Vec<Arc<Flow>>,
    written: usize,
}

impl SessionCopy {
    const BATCH: usize = 256;

    fn open(source: &Path, out: &Path) -> anyhow::Result<Self> {
        let same = match (source.canonicalize(), out.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same {
            anyhow::bail!(
                "-w {} is the session -r reads; write the copy to another file",
                out.display()
            );
        }
        let store = FlowStore::open(out)
            .with_context(|| format!("cannot open the session file {}", out.display()))?;
        Ok(SessionCopy {
            store,
            pending: Vec::with_capacity(Self::BATCH),
            written: 0,
        })
    }

    fn add(&mut self, flow: Flow) -> anyhow::Result<()> {
        self.pending.push(Arc::new(flow));
        if self.pending.len() >= Self::BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.store
            .insert_many(&self.pending)
            .with_context(|| format!("cannot save flows to {}", self.store.path().display()))?;
        self.written += self.pending.len();
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.flush()?;
        eprintln!(
            "periscope: saved {} flows to {}",
            self.written,
            self.store.path().display()
        );
        Ok(())
    }
}

fn render(flow: &Flow, args: &DumpArgs) -> String {
    if args.json {
        return serde_json::to_string(flow).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    }
    match args.flow_detail {
        0 => String::new(),
        1 => flow_lines(flow),
        2 => flow_lines(flow) + &rule_lines(flow),
        _ => {
            let mut text = flow_lines(flow) + &rule_lines(flow);
            push_headers(&mut text, ">", &flow.request.headers);
            if let Some(response) = &flow.response {
                push_headers(&mut text, "<", &response.headers);
            }
            text
        }
    }
}

/// `rule NAME "PATTERN": what it did`, one line per rule that changed the flow.
fn rule_lines(flow: &Flow) -> String {
    let mut text = String::new();
    for applied in &flow.rules {
        let _ = write!(
            text,
            "\n    rule {} {:?}: {}",
            applied.rule, applied.spec, applied.effect
        );
    }
    text
}

fn push_headers(text: &mut String, marker: &str, headers: &Headers) {
    for header in headers.iter() {
        let _ = write!(
            text,
            "\n    {marker} {}: {}",
            header.name,
            header.value_lossy()
        );
    }
}

fn websocket_message_line(message: &WebSocketMessage) -> String {
    let arrow = if message.from_client { "->" } else { "<-" };
    let payload = match message.text() {
        Some(text) => format!("{text:?}"),
        None => format!("{} bytes", message.size),
    };
    let truncated = if message.truncated {
        " (truncated)"
    } else {
        ""
    };
    format!(
        "    ws {arrow} {} {payload}{truncated}",
        message.opcode.name()
    )
}

fn websocket_closed_line(flow: &Flow) -> Option<String> {
    let session = flow.websocket.as_ref()?;
    let by = match session.closed_by_client {
        Some(true) => "client",
        Some(false) => "server",
        None => return Some("    ws closed without a close frame".to_owned()),
    };
    let code = session
        .close_code
        .map(|c| c.to_string())
        .unwrap_or_default();
    let reason = session.close_reason.as_deref().unwrap_or("");
    Some(
        format!("    ws closed by {by}: {code} {reason}")
            .trim_end()
            .to_owned(),
    )
}

pub fn flow_lines(flow: &Flow) -> String {
    let mut out = String::new();
    let client = flow
        .client
        .peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "-".into());
    // Flows of the regular mode read as they always did; the others say their mode.
    let client = match &flow.listener {
        Some(listener) if listener.mode != "regular" => format!("{client} [{}]", listener.mode),
        _ => client,
    };
    if let Some(tcp) = &flow.tcp {
        return tcp_flow_lines(flow, tcp, &client);
    }
    let target = if flow.request.method == "CONNECT" {
        format!("{}:{}", flow.request.host, flow.request.port)
    } else {
        flow.request.url()
    };
    let _ = write!(out, "{client} {} {target}", flow.request.method);
    if let Some(stream) = flow.request.stream_id {
        let _ = write!(out, " (HTTP/2 stream {stream})");
    }
    match &flow.response {
        Some(response) => {
            let _ = write!(
                out,
                " {} {}{} {}",
                response.status,
                response.reason,
                if response.generated {
                    " (periscope)"
                } else {
                    ""
                },
                format_size(response.body.size)
            );
            if let Some(stream) = response.stream_id {
                let _ = write!(out, " (server's HTTP/2 stream {stream})");
            }
        }
        None => out.push_str(" <no response>"),
    }
    if let Some(millis) = flow.duration_millis() {
        let _ = write!(out, " {}", format_duration_ms(millis));
    }
    for (_, event) in flow.timeline.tls_events() {
        let _ = write!(out, "\n    {event}");
    }
    for (_, note) in flow.timeline.notes() {
        let _ = write!(out, "\n    note: {note}");
    }
    if let Some(error) = &flow.error {
        let _ = write!(out, "\n    error: {}", error.message);
    }
    out
}

/// `CLIENT TCP host:port (why) SNI name, N bytes from the client, M from the server, TIME`.
fn tcp_flow_lines(flow: &Flow, tcp: &TcpSession, client: &str) -> String {
    let mut out = format!(
        "{client} TCP {}:{} ({})",
        flow.request.host,
        flow.request.port,
        tcp.reason.describe()
    );
    if let Some(sni) = &tcp.sni {
        let _ = write!(out, " SNI {sni}");
    }
    let _ = write!(
        out,
        " {} from the client, {} from the server",
        format_size(tcp.from_client.size),
        format_size(tcp.from_server.size)
    );
    if let Some(millis) = flow.duration_millis() {
        let _ = write!(out, " {}", format_duration_ms(millis));
    }
    for (_, event) in flow.timeline.tls_events() {
        let _ = write!(out, "\n    {event}");
    }
    if let Some(error) = &flow.error {
        let _ = write!(out, "\n    error: {}", error.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_flow::{Milestone, Timestamp};

    /// `GET https://example.com/` over HTTP/2, answered `200 OK` with an empty body.
    fn http2_flow() -> Flow {
        let json = r#"{"id":"00000000-0000-0000-0000-000000000001",
            "client":{"id":1,"peer":"127.0.0.1:5000","local":null,"target":null,"tls":null},
            "server":null,
            "request":{"method":"GET","scheme":"https","host":"example.com","port":443,
                "path":"/","http_version":"HTTP/2.0","stream_id":3,"headers":[],
                "body":{"content":"","size":0,"truncated":false},"trailers":null},
            "response":{"status":200,"reason":"OK","http_version":"HTTP/2.0","stream_id":7,
                "headers":[],"body":{"content":"","size":0,"truncated":false},
                "trailers":null,"generated":false},
            "error":null,"timeline":[],"marked":false,"intercepted_tls":true}"#;
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn http2_flows_name_their_streams() {
        let flow = http2_flow();
        assert_eq!(
            flow_lines(&flow),
            "127.0.0.1:5000 GET https://example.com/ (HTTP/2 stream 3) 200 OK 0b \
             (server's HTTP/2 stream 7)"
        );
    }

    #[test]
    fn other_modes_and_tcp_flows_say_so() {
        let mut flow = http2_flow();
        flow.listener = Some(periscope_flow::ListenerInfo {
            mode: "socks5".into(),
            address: None,
        });
        assert!(
            flow_lines(&flow).starts_with("127.0.0.1:5000 [socks5] GET https://example.com/"),
            "{}",
            flow_lines(&flow)
        );
        flow.tcp = Some(TcpSession {
            reason: periscope_flow::TcpReason::IgnoredHost,
            sni: Some("example.com".into()),
            from_client: periscope_flow::Body {
                size: 517,
                ..Default::default()
            },
            from_server: periscope_flow::Body {
                size: 2048,
                ..Default::default()
            },
        });
        assert_eq!(
            flow_lines(&flow),
            "127.0.0.1:5000 [socks5] TCP example.com:443 (ignored host, passed through \
             untouched) SNI example.com 517b from the client, 2.0k from the server"
        );
    }

    #[test]
    fn sizes_and_durations_read_like_mitmdump() {
        let mut flow = http2_flow();
        flow.response.as_mut().unwrap().body.size = 1536;
        flow.timeline
            .mark(Milestone::RequestStarted, Timestamp(1_000_000));
        flow.timeline
            .mark(Milestone::ResponseComplete, Timestamp(13_500_000));
        let line = flow_lines(&flow);
        assert!(
            line.contains(" 200 OK 1.5k (server's HTTP/2 stream 7) 12.5s"),
            "{line}"
        );
    }
}
