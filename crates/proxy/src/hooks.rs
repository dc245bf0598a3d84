//! The points of an exchange where features act on it: after the request head
//! arrived (before anything goes upstream) and after the response head arrived
//! (before anything goes back). Intercept, rules and addons each plug in here as an
//! [`ExchangeHook`]; the exchange runs the hooks in order, and a proxy without hooks
//! pays one emptiness check per point.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body::Body as _;

use crate::body::{IncomingBody, ReadAhead};
use crate::recorder::{FlowRecorder, Side};

/// A message body at a hook point: still streaming from its peer, or read whole so a
/// hook can show or change it.
pub struct StageBody {
    body: IncomingBody,
    whole: Option<Bytes>,
}

impl StageBody {
    pub fn new(body: IncomingBody) -> Self {
        StageBody { body, whole: None }
    }

    /// The body read whole, if it was.
    pub fn whole(&self) -> Option<&Bytes> {
        self.whole.as_ref()
    }

    /// Reads the body whole when it has at most `limit` bytes, waiting at most `idle`
    /// for each part. A larger (or trailered, or stalled) body goes on streaming with
    /// what was read put back in front: `None` then.
    pub async fn read_whole(&mut self, limit: usize, idle: Duration) -> Option<&Bytes> {
        self.read_whole_by(limit, idle, None).await
    }

    /// [`StageBody::read_whole`], giving up at `deadline` (the body then goes on
    /// streaming as for a stall).
    pub async fn read_whole_by(
        &mut self,
        limit: usize,
        idle: Duration,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<&Bytes> {
        if self.whole.is_some() {
            return self.whole.as_ref();
        }
        let mut body = std::mem::replace(&mut self.body, IncomingBody::Empty);
        let mut read = BytesMut::new();
        let mut trailers = None;
        let mut error = None;
        let complete = loop {
            if body.is_end_stream() {
                break true;
            }
            let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
            let wait = match deadline {
                Some(deadline) => {
                    idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
                }
                None => idle,
            };
            match tokio::time::timeout(wait, frame).await {
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        read.extend_from_slice(&data);
                        if read.len() > limit {
                            break false;
                        }
                    }
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        break false;
                    }
                },
                Ok(None) => break true,
                // The failure is the streaming body's to report, after what was read;
                // so is a stall (the body's own idle limit then ends it).
                Ok(Some(Err(failure))) => {
                    error = Some(failure);
                    break false;
                }
                Err(_) => break false,
            }
        };
        if complete {
            self.replace(read.freeze());
        } else {
            self.body = IncomingBody::ReadAhead(Box::new(ReadAhead {
                prefix: (!read.is_empty()).then(|| read.freeze()),
                rest: body,
                trailers,
                error,
            }));
        }
        self.whole.as_ref()
    }

    /// [`StageBody::read_whole_by`] for a hook: a body read whole is the flow's
    /// `side` body, whole, from then on.
    pub async fn read_whole_into(
        &mut self,
        flow: &FlowRecorder,
        side: Side,
        limit: usize,
        idle: Duration,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<Bytes> {
        let whole = self.read_whole_by(limit, idle, deadline).await.cloned()?;
        flow.set_whole_body(side, whole.clone());
        Some(whole)
    }

    /// The body becomes `content`, whole.
    pub fn replace(&mut self, content: Bytes) {
        self.body = IncomingBody::Replayed(http_body_util::Full::new(content.clone()));
        self.whole = Some(content);
    }

    pub fn into_body(self) -> IncomingBody {
        self.body
    }
}

pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a hook decided about a request head.
pub enum RequestVerdict {
    /// Go on (the head may have been changed).
    Continue,
    /// Answer the client with this response; nothing is sent upstream.
    Answer(http::Response<Bytes>),
    /// End the exchange with this reason: the client gets an error, the server
    /// nothing.
    Kill(String),
    /// End the exchange without an answer (nginx's 444): an HTTP/1.1 client's
    /// connection is closed, an HTTP/2 client's stream reset.
    Close(String),
}

/// What a hook decided about a response head.
pub enum ResponseVerdict {
    Continue,
    /// End the exchange: the client gets an error instead of the response.
    Kill(String),
}

/// What a client's TLS ClientHello asked for, as a hook sees it before Periscope
/// decides to intercept the connection (mitmproxy's `tls_clienthello`).
#[derive(Clone, Debug)]
pub struct ClientHelloInfo {
    /// The client's address.
    pub client: Option<std::net::SocketAddr>,
    /// Where the tunnel goes: the CONNECT target, the SOCKS5 request, the original
    /// destination or the reverse proxy's server.
    pub server_host: String,
    pub server_port: u16,
    pub sni: Option<String>,
    /// The protocol names, one char per byte (Latin-1), so none is lost.
    pub alpn: Vec<String>,
}

/// What a hook decided about a ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloVerdict {
    /// Intercept the TLS connection, as Periscope would.
    Intercept,
    /// Leave it alone: relay it untouched, as `--ignore-hosts` does.
    PassThrough,
}

/// One feature acting on exchanges. Every point defaults to doing nothing.
pub trait ExchangeHook: Send + Sync {
    /// A short name for the flow's notes ("intercept", "rules").
    fn name(&self) -> &'static str;

    /// Whether this hook may answer requests itself (a file, a recorded answer). A
    /// CONNECT to a server that cannot be reached is then accepted all the same: each
    /// request in the tunnel is answered by the hook or told why the server failed.
    /// (Server replay must work with the servers gone.)
    fn may_answer_without_server(&self) -> bool {
        false
    }

    /// A client's ClientHello in a tunnel that Periscope would intercept (at TLS, so
    /// also a `--tcp-hosts` one): the hook
    /// may have the connection passed through untouched instead.
    fn client_hello<'a>(&'a self, _hello: &'a ClientHelloInfo) -> HookFuture<'a, HelloVerdict> {
        Box::pin(std::future::ready(HelloVerdict::Intercept))
    }

    /// The request head, before the destination is chosen and connected: the head and
    /// the body may be changed (the flow's recorded request says what the result is:
    /// a hook that changes it updates the flow), or the request answered.
    fn request_head<'a>(
        &'a self,
        _flow: &'a Arc<FlowRecorder>,
        _head: &'a mut http::request::Parts,
        _body: &'a mut StageBody,
    ) -> HookFuture<'a, RequestVerdict> {
        Box::pin(std::future::ready(RequestVerdict::Continue))
    }

    /// The response head, before anything of it goes to the client: head and body may
    /// be changed.
    fn response_head<'a>(
        &'a self,
        _flow: &'a Arc<FlowRecorder>,
        _head: &'a mut http::response::Parts,
        _body: &'a mut StageBody,
    ) -> HookFuture<'a, ResponseVerdict> {
        Box::pin(std::future::ready(ResponseVerdict::Continue))
    }
}

/// The hooks of a proxy, in the order they run.
#[derive(Clone, Default)]
pub struct Hooks(Vec<Arc<dyn ExchangeHook>>);

impl Hooks {
    pub fn add(&mut self, hook: Arc<dyn ExchangeHook>) {
        self.0.push(hook);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// See [`ExchangeHook::may_answer_without_server`].
    pub fn may_answer_without_server(&self) -> bool {
        self.0.iter().any(|hook| hook.may_answer_without_server())
    }

    /// Asks every hook about a ClientHello; the first that passes it through decides.
    pub async fn client_hello(&self, hello: &ClientHelloInfo) -> HelloVerdict {
        for hook in &self.0 {
            if hook.client_hello(hello).await == HelloVerdict::PassThrough {
                return HelloVerdict::PassThrough;
            }
        }
        HelloVerdict::Intercept
    }

    /// Runs every hook on the request head; the first that does not continue decides.
    pub async fn request_head(
        &self,
        flow: &Arc<FlowRecorder>,
        head: &mut http::request::Parts,
        body: &mut StageBody,
    ) -> RequestVerdict {
        for hook in &self.0 {
            match hook.request_head(flow, head, body).await {
                RequestVerdict::Continue => {}
                decided => return decided,
            }
        }
        RequestVerdict::Continue
    }

    /// Runs every hook on the response head; the first that does not continue decides.
    pub async fn response_head(
        &self,
        flow: &Arc<FlowRecorder>,
        head: &mut http::response::Parts,
        body: &mut StageBody,
    ) -> ResponseVerdict {
        for hook in &self.0 {
            match hook.response_head(flow, head, body).await {
                ResponseVerdict::Continue => {}
                decided => return decided,
            }
        }
        ResponseVerdict::Continue
    }
}

/// The request head as a hook (or the user) left the flow: method, path, headers.
/// (Where it goes is the destination stage's business, from the flow's scheme, host
/// and port.) `body_replaced`: the body is the flow's whole body now, so the message
/// is framed anew from it.
pub fn rebuild_request(
    head: &mut http::request::Parts,
    request: &periscope_flow::Request,
    body_replaced: bool,
) -> Result<(), String> {
    head.method = Method::from_bytes(request.method.as_bytes()).map_err(|e| e.to_string())?;
    head.uri = request
        .path
        .parse::<Uri>()
        .map_err(|e| format!("path: {e}"))?;
    head.headers = header_map(&request.headers)?;
    if body_replaced {
        reframe(&mut head.headers);
    }
    Ok(())
}

/// The recorded framing headers describe the body as it came; an edited message is
/// framed anew from its body (as mitmproxy updates Content-Length on an edit).
fn reframe(headers: &mut HeaderMap) {
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
}

pub fn rebuild_response(
    head: &mut http::response::Parts,
    response: &periscope_flow::Response,
    body_replaced: bool,
) -> Result<(), String> {
    head.status = StatusCode::from_u16(response.status).map_err(|e| e.to_string())?;
    head.headers = header_map(&response.headers)?;
    if body_replaced {
        reframe(&mut head.headers);
    }
    if head.status.canonical_reason() != Some(response.reason.as_str()) {
        head.extensions.insert(
            hyper::ext::ReasonPhrase::try_from(Bytes::from(response.reason.clone().into_bytes()))
                .map_err(|_| "reason".to_owned())?,
        );
    } else {
        head.extensions.remove::<hyper::ext::ReasonPhrase>();
    }
    Ok(())
}

/// The answer a hook makes from a response in the model (a file, a recorded answer,
/// a script's `Response.make`), as [`RequestVerdict::Answer`] carries it: framed
/// anew from its body, without the hop-by-hop headers a recorded response had for
/// its own connection, its reason kept when it is not the status's usual one.
/// Headers that are not valid HTTP are left out.
pub fn answer_from(response: &periscope_flow::Response) -> http::Response<Bytes> {
    let mut answer = http::Response::new(response.body.content.clone());
    *answer.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let headers = answer.headers_mut();
    for header in response.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(&header.value),
        ) {
            headers.append(name, value);
        }
    }
    crate::headers::strip_hop_by_hop(
        headers,
        crate::headers::NextHop::Http1 {
            keep_upgrade: false,
        },
    );
    reframe(headers);
    if answer.status().canonical_reason() != Some(response.reason.as_str()) {
        if let Ok(reason) =
            hyper::ext::ReasonPhrase::try_from(Bytes::from(response.reason.clone().into_bytes()))
        {
            answer.extensions_mut().insert(reason);
        }
    }
    answer
}

fn header_map(headers: &periscope_flow::Headers) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for header in headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| format!("header name {:?}", header.name))?;
        let value = HeaderValue::from_bytes(&header.value)
            .map_err(|_| format!("the value of {}", header.name))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::FlowBus;
    use crate::recorder::ClientContext;
    use periscope_flow::{ConnectionInfo, Timestamp};

    struct AddHeader(&'static str);
    impl ExchangeHook for AddHeader {
        fn name(&self) -> &'static str {
            "add-header"
        }
        fn request_head<'a>(
            &'a self,
            _flow: &'a Arc<FlowRecorder>,
            head: &'a mut http::request::Parts,
            _body: &'a mut StageBody,
        ) -> HookFuture<'a, RequestVerdict> {
            head.headers.append("x-hook", self.0.parse().unwrap());
            Box::pin(std::future::ready(RequestVerdict::Continue))
        }
    }

    struct Answer;
    impl ExchangeHook for Answer {
        fn name(&self) -> &'static str {
            "answer"
        }
        fn request_head<'a>(
            &'a self,
            _flow: &'a Arc<FlowRecorder>,
            _head: &'a mut http::request::Parts,
            _body: &'a mut StageBody,
        ) -> HookFuture<'a, RequestVerdict> {
            let response = http::Response::builder()
                .status(204)
                .body(Bytes::new())
                .unwrap();
            Box::pin(std::future::ready(RequestVerdict::Answer(response)))
        }
    }

    fn recorder() -> Arc<FlowRecorder> {
        let client = ClientContext {
            info: ConnectionInfo {
                id: 1,
                peer: None,
                local: None,
                target: None,
                tls: None,
            },
            milestones: Vec::new(),
            tls: None,
            intercepted_tls: false,
            write_stall: Arc::default(),
            connection_kill: Arc::default(),
            listener: None,
        };
        let request = http::Request::new(());
        FlowRecorder::begin(
            FlowBus::new(),
            &client,
            &request,
            ("http", "example.test".into(), 80),
            Timestamp::now(),
        )
    }

    #[test]
    fn an_answer_is_framed_from_its_body_without_the_recorded_connections_headers() {
        let mut headers = periscope_flow::Headers::default();
        headers.push("Content-Type", "text/plain");
        headers.push("Content-Length", "999");
        headers.push("Transfer-Encoding", "chunked");
        headers.push("Connection", "keep-alive, x-hop");
        headers.push("X-Hop", "1");
        headers.push("Keep-Alive", "timeout=5");
        headers.push("Bad Name", "dropped");
        let response = periscope_flow::Response {
            status: 203,
            reason: "From The File".into(),
            http_version: "HTTP/1.1".into(),
            stream_id: None,
            headers,
            body: periscope_flow::Body::complete(Bytes::from_static(b"hello")),
            trailers: None,
            generated: false,
        };
        let answer = answer_from(&response);
        assert_eq!(answer.status(), StatusCode::NON_AUTHORITATIVE_INFORMATION);
        let names: Vec<&str> = answer.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type"]);
        assert_eq!(answer.body().as_ref(), b"hello");
        assert_eq!(
            answer
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| r.as_bytes()),
            Some(&b"From The File"[..])
        );
    }

    #[tokio::test]
    async fn hooks_run_in_order_and_the_first_answer_ends_the_chain() {
        let mut hooks = Hooks::default();
        hooks.add(Arc::new(AddHeader("first")));
        hooks.add(Arc::new(Answer));
        hooks.add(Arc::new(AddHeader("never")));
        let (mut head, ()) = http::Request::new(()).into_parts();
        let mut body = StageBody::new(IncomingBody::Empty);
        let flow = recorder();
        let verdict = hooks.request_head(&flow, &mut head, &mut body).await;
        assert!(matches!(verdict, RequestVerdict::Answer(r) if r.status() == 204));
        let added: Vec<_> = head.headers.get_all("x-hook").iter().collect();
        assert_eq!(added, ["first"]);
        flow.finish();
    }

    #[tokio::test]
    async fn no_hooks_means_continue() {
        let hooks = Hooks::default();
        assert!(hooks.is_empty());
        let (mut head, ()) = http::Response::new(()).into_parts();
        let mut body = StageBody::new(IncomingBody::Empty);
        let flow = recorder();
        assert!(matches!(
            hooks.response_head(&flow, &mut head, &mut body).await,
            ResponseVerdict::Continue
        ));
        flow.finish();
    }

    fn streaming(parts: &[&'static [u8]]) -> IncomingBody {
        // A body of several frames, as a peer sends it: the read-ahead variant of the
        // parts after the first, led by the first.
        let mut body = IncomingBody::Empty;
        for part in parts.iter().rev() {
            body = IncomingBody::ReadAhead(Box::new(ReadAhead {
                prefix: Some(Bytes::from_static(part)),
                rest: body,
                trailers: None,
                error: None,
            }));
        }
        body
    }

    async fn collect(body: IncomingBody) -> Vec<u8> {
        use http_body_util::BodyExt;
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_small_body_is_read_whole_and_can_be_replaced() {
        let mut body = StageBody::new(streaming(&[b"ab", b"cd"]));
        let whole = body.read_whole(10, Duration::from_secs(1)).await;
        assert_eq!(whole.map(|b| &b[..]), Some(&b"abcd"[..]));
        body.replace(Bytes::from_static(b"edited"));
        assert_eq!(collect(body.into_body()).await, b"edited");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_streams_on_whole_with_what_was_read_in_front() {
        let mut body = StageBody::new(streaming(&[b"0123", b"4567", b"89"]));
        assert!(body.read_whole(5, Duration::from_secs(1)).await.is_none());
        assert!(body.whole().is_none());
        assert_eq!(collect(body.into_body()).await, b"0123456789");
    }
}
