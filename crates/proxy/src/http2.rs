//! HTTP/2 on both legs, with the h2 crate directly rather than through hyper: a flow
//! records which stream its request came on and which stream the server answered on,
//! and hyper does not tell. This module is the glue hyper would otherwise be: bodies
//! in both directions under flow control, the per-stream tasks of the client leg, and
//! extended CONNECT streams (RFC 8441) as byte streams.

use std::error::Error as StdError;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::headers::{strip_hop_by_hop, NextHop};
use crate::intercept::KillSwitch;
use crate::io::StallNotice;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Client-leg settings, as hyper's HTTP/2 server had them.
const SERVER_WINDOW: u32 = 1024 * 1024;
const SERVER_SEND_BUFFER: usize = 400 * 1024;
/// Server-leg settings, as hyper's HTTP/2 client had them: a larger window, since one
/// server connection carries what many client streams download.
const CLIENT_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CLIENT_CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const CLIENT_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// Streams reset because a message was malformed before a connection is closed as
/// abusive (the "rapid reset" defence, as hyper sets it).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// In a response's extensions: reset the client's stream instead of answering (a
/// flow the user killed).
#[derive(Clone, Copy, Debug)]
pub struct ResetStream;

/// The stream a request arrived on, on the client's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientStreamId(pub u32);

/// The stream a response arrived on, on the server's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerStreamId(pub u32);

/// A received HTTP/2 message body. Flow-control capacity is given back as each frame
/// is taken, so the peer can send more only as fast as the other leg consumes.
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// What is left of the announced Content-Length (as hyper's own bodies report
    /// it: a body read in part says what remains).
    content_length: Option<u64>,
}

impl H2Body {
    pub fn new(recv: RecvStream, headers: &HeaderMap) -> Self {
        let content_length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        H2Body {
            data_done: recv.is_end_stream(),
            recv,
            content_length,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = this.content_length.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.content_length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

/// Sends `body` on `stream`: each chunk waits for some window first, so a slow peer
/// holds back the source instead of filling memory. A reset from the peer ends it,
/// and so does a peer that grants no window for `stall_limit` (it reads the
/// connection but not this stream).
pub async fn send_body<B>(
    stream: &mut SendStream<Bytes>,
    body: B,
    stall_limit: Duration,
    stall: Option<StallNotice>,
    kill: Option<Arc<KillSwitch>>,
) -> Result<(), BoxError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    tokio::pin!(body);
    // A flow the user kills ends its stream at once, whatever it waits for.
    let killed = |cx: &mut Context<'_>| kill.as_ref().is_some_and(|k| k.poll_killed(cx).is_ready());
    loop {
        let window = poll_fn(|cx| {
            if killed(cx) {
                return Poll::Ready(Err(BoxError::from("killed in Periscope")));
            }
            wait_for_window(stream, cx)
        });
        match tokio::time::timeout(stall_limit, window).await {
            Ok(Err(error)) if kill.as_ref().is_some_and(|k| k.is_killed()) => {
                stream.send_reset(Reason::CANCEL);
                return Err(error);
            }
            Ok(ready) => ready?,
            Err(_) => {
                // Before the body is dropped: its flow reads why it ended.
                if let Some(StallNotice(stall)) = &stall {
                    stall.record(stall_limit);
                }
                stream.send_reset(Reason::CANCEL);
                return Err(format!(
                    "the peer stopped reading: it granted no HTTP/2 flow-control window for {} s",
                    stall_limit.as_secs_f64()
                )
                .into());
            }
        }
        let frame = poll_fn(|cx| {
            if killed(cx) {
                return Poll::Ready(Some(Err(BoxError::from("killed in Periscope"))));
            }
            if let Poll::Ready(reason) = stream.poll_reset(cx) {
                return Poll::Ready(Some(Err(reset_error(reason))));
            }
            body.as_mut()
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(Into::into)))
        })
        .await;
        match frame {
            None => {
                stream.send_data(Bytes::new(), true)?;
                return Ok(());
            }
            Some(Err(error)) => {
                let reason = if kill.as_ref().is_some_and(|k| k.is_killed()) {
                    Reason::CANCEL
                } else {
                    Reason::INTERNAL_ERROR
                };
                stream.send_reset(reason);
                return Err(error);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    stream.send_data(data, end)?;
                    if end {
                        return Ok(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        stream.send_trailers(trailers)?;
                        return Ok(());
                    }
                }
            },
        }
    }
}

/// Ready once the stream may send at least one byte (h2 queues the rest of a chunk
/// and sends it as the window opens).
fn wait_for_window(
    stream: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), BoxError>> {
    stream.reserve_capacity(1);
    while stream.capacity() == 0 {
        match ready!(stream.poll_capacity(cx)) {
            Some(Ok(_)) => {}
            Some(Err(error)) => return Poll::Ready(Err(error.into())),
            None => return Poll::Ready(Err("the HTTP/2 stream closed".into())),
        }
    }
    Poll::Ready(Ok(()))
}

fn reset_error(reason: Result<Reason, h2::Error>) -> BoxError {
    match reason {
        Ok(reason) => h2::Error::from(reason).into(),
        Err(error) => error.into(),
    }
}

/// Sets Content-Length from a body whose size is known, as hyper did: clients show
/// progress with it.
fn set_content_length<B: Body>(headers: &mut HeaderMap, body: &B) {
    if body.is_end_stream() || headers.contains_key(CONTENT_LENGTH) {
        return;
    }
    if let Some(length) = body.size_hint().exact() {
        headers.insert(CONTENT_LENGTH, length.into());
    }
}

/// An HTTP/2 stream opened by extended CONNECT (or CONNECT), used as a byte stream.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    pending: Bytes,
}

impl H2Stream {
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        H2Stream {
            send,
            recv,
            pending: Bytes::new(),
        }
    }
}

fn h2_io_error(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    io::Error::other(error)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
                Some(Err(error)) => {
                    // The peer ending the stream with NO_ERROR or CANCEL is a close.
                    if matches!(error.reason(), Some(Reason::NO_ERROR | Reason::CANCEL)) {
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(h2_io_error(error)));
                }
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(buf.len());
        let capacity = loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                break capacity;
            }
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(h2_io_error(error))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the HTTP/2 stream closed",
                    )))
                }
            }
        };
        let n = capacity.min(buf.len());
        this.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(h2_io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // END_STREAM on an empty DATA frame; the stream may already be closed.
        let _ = self.get_mut().send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

/// Where the client-leg stream of an accepted CONNECT is handed over once the answer
/// is a 2xx. In the request's extensions, which must be `Clone`: hence the slot.
#[derive(Clone)]
pub struct H2UpgradeSlot(Arc<Mutex<Option<oneshot::Receiver<H2Stream>>>>);

impl H2UpgradeSlot {
    pub fn take(&self) -> Option<oneshot::Receiver<H2Stream>> {
        self.0.lock().ok()?.take()
    }
}

/// The client-leg settings: one place, so h2c and TLS listeners agree.
#[derive(Clone, Copy)]
pub struct ServerSettings {
    pub max_concurrent_streams: u32,
    pub handshake_timeout: Duration,
    /// How long a response may wait for the client to open its window.
    pub stall_timeout: Duration,
}

/// Serves an HTTP/2 client connection: each stream runs `handle` in its own task, and
/// its answer goes back on that stream. A stream the client resets while waiting
/// drops its handler, as hyper did.
pub async fn serve<S, H, F, B>(io: S, settings: ServerSettings, handle: H) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Option<H2Body>>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(SERVER_WINDOW)
        .initial_connection_window_size(SERVER_WINDOW)
        .max_send_buffer_size(SERVER_SEND_BUFFER)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_connect_protocol();
    let handshake = builder.handshake::<S, Bytes>(io);
    let mut connection = match tokio::time::timeout(settings.handshake_timeout, handshake).await {
        Ok(connection) => connection?,
        Err(_) => return Err("no HTTP/2 connection preface in time".into()),
    };
    let handle = Arc::new(handle);
    while let Some(accepted) = connection.accept().await {
        let (request, respond) = accepted?;
        let handle = Arc::clone(&handle);
        let stall = settings.stall_timeout;
        tokio::spawn(async move { serve_stream(request, respond, handle.as_ref(), stall).await });
    }
    Ok(())
}

async fn serve_stream<H, F, B>(
    request: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    handle: &H,
    stall_timeout: Duration,
) where
    H: Fn(Request<Option<H2Body>>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let stream_id = respond.stream_id().as_u32();
    let (mut parts, recv) = request.into_parts();
    parts.extensions.insert(ClientStreamId(stream_id));
    // A CONNECT stream's DATA is the tunnel, not a body: it waits for the answer.
    let (body, tunnel) = if parts.method == Method::CONNECT {
        let (sender, receiver) = oneshot::channel();
        parts
            .extensions
            .insert(H2UpgradeSlot(Arc::new(Mutex::new(Some(receiver)))));
        (None, Some((sender, recv)))
    } else {
        (Some(H2Body::new(recv, &parts.headers)), None)
    };
    // Boxed: the exchange's future is ~8 KiB, and inside this task's future it was
    // copied whole when the task was spawned and again when it finished.
    let mut answer = Box::pin(handle(Request::from_parts(parts, body)));
    let response = tokio::select! {
        response = &mut answer => response,
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let (mut parts, body) = response.into_parts();
    if parts.extensions.get::<ResetStream>().is_some() {
        respond.send_reset(Reason::CANCEL);
        return;
    }
    strip_hop_by_hop(&mut parts.headers, NextHop::Http2Response);
    if let Some((sender, recv)) = tunnel {
        if parts.status.is_success() {
            let head = Response::from_parts(parts, ());
            match respond.send_response(head, false) {
                Ok(send) => {
                    let _ = sender.send(H2Stream::new(send, recv));
                }
                Err(error) => tracing::debug!(%error, stream_id, "CONNECT answer not sent"),
            }
            return;
        }
    }
    set_content_length(&mut parts.headers, &body);
    let stall = parts.extensions.remove::<StallNotice>();
    let kill = parts.extensions.remove::<Arc<KillSwitch>>();
    let end = body.is_end_stream();
    let head = Response::from_parts(parts, ());
    let mut send = match respond.send_response(head, end) {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(%error, stream_id, "response head not sent");
            return;
        }
    };
    if !end {
        if let Err(error) = send_body(&mut send, body, stall_timeout, stall, kill).await {
            tracing::debug!(%error, stream_id, "response body not sent whole");
        }
    }
}

/// The server leg of an HTTP/2 connection. Clones share it.
#[derive(Clone)]
pub struct H2Sender {
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    /// How long a request body may wait for the server to open its window.
    stall_timeout: Duration,
}

impl H2Sender {
    /// The HTTP/2 preface and SETTINGS exchange; the connection then runs in a task of
    /// its own until the server or the last handle lets go.
    pub async fn handshake<S>(
        io: S,
        target: &str,
        stall_timeout: Duration,
    ) -> Result<H2Sender, h2::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(CLIENT_STREAM_WINDOW)
            .initial_connection_window_size(CLIENT_CONNECTION_WINDOW)
            .max_send_buffer_size(CLIENT_SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .handshake::<S, Bytes>(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let watch = Arc::clone(&closed);
        let target = target.to_owned();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%target, %error, "upstream HTTP/2 connection ended");
            }
            watch.store(true, Ordering::Release);
        });
        Ok(H2Sender {
            send,
            closed,
            stall_timeout,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until the server's stream limit lets another request start.
    pub async fn ready(&mut self) -> Result<(), h2::Error> {
        poll_fn(|cx| self.send.poll_ready(cx)).await
    }

    /// Whether the server accepts extended CONNECT (RFC 8441).
    pub fn supports_extended_connect(&self) -> bool {
        self.send.is_extended_connect_protocol_enabled()
    }

    /// Sends a request; its body goes in a task of its own, so a server that answers
    /// before reading it all is heard at once.
    pub async fn send<B>(&mut self, request: Request<B>) -> Result<Response<H2Body>, H2SendError<B>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        strip_hop_by_hop(&mut parts.headers, NextHop::Http2Request);
        set_content_length(&mut parts.headers, &body);
        let end = body.is_end_stream();
        let mut head = Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.version_mut() = parts.version;
        *head.headers_mut() = parts.headers.clone();
        let (response, mut stream) = match self.send.send_request(head, end) {
            Ok(sent) => sent,
            Err(error) => {
                return Err(H2SendError {
                    error,
                    unsent: Some(Request::from_parts(parts, body)),
                })
            }
        };
        let stream_id = response.stream_id().as_u32();
        let stall = self.stall_timeout;
        if !end {
            tokio::spawn(async move {
                if let Err(error) = send_body(&mut stream, body, stall, None, None).await {
                    tracing::debug!(%error, stream_id, "request body not sent whole");
                    stream.send_reset(Reason::CANCEL);
                }
            });
        }
        let response = response.await.map_err(|error| H2SendError {
            error,
            unsent: None,
        })?;
        let (mut parts, recv) = response.into_parts();
        parts.extensions.insert(ServerStreamId(stream_id));
        let body = H2Body::new(recv, &parts.headers);
        Ok(Response::from_parts(parts, body))
    }

    /// Opens an extended CONNECT stream (RFC 8441): on a 2xx the stream to relay,
    /// otherwise the server's refusal with its body.
    pub async fn connect(&mut self, request: Request<()>) -> Result<ConnectAnswer, h2::Error> {
        let (response, send) = self.send.send_request(request, false)?;
        let stream_id = response.stream_id().as_u32();
        let response = response.await?;
        let (mut parts, recv) = response.into_parts();
        parts.extensions.insert(ServerStreamId(stream_id));
        if parts.status.is_success() {
            return Ok(ConnectAnswer::Open(
                Response::from_parts(parts, ()),
                H2Stream::new(send, recv),
            ));
        }
        let body = H2Body::new(recv, &parts.headers);
        Ok(ConnectAnswer::Refused(Response::from_parts(parts, body)))
    }
}

/// A server's answer to extended CONNECT.
pub enum ConnectAnswer {
    Open(Response<()>, H2Stream),
    Refused(Response<H2Body>),
}

/// A failed send, with the request back when it never left.
pub struct H2SendError<B> {
    pub error: h2::Error,
    pub unsent: Option<Request<B>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONNECTION;
    use http_body_util::{BodyExt, Full};

    /// The client leg served by `serve`, the server leg by `H2Sender`, over an
    /// in-memory pipe: each request and response names its own stream, and bodies
    /// larger than the initial window arrive whole.
    #[tokio::test]
    async fn streams_are_numbered_on_both_ends_and_large_bodies_pass_under_flow_control() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let settings = ServerSettings {
            max_concurrent_streams: 8,
            handshake_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(5),
        };
        tokio::spawn(serve(
            server_io,
            settings,
            |request: Request<Option<H2Body>>| async move {
                let stream = request.extensions().get::<ClientStreamId>().unwrap().0;
                let body = request
                    .into_body()
                    .unwrap()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes();
                let answer = format!("stream {stream} got {} bytes", body.len());
                let mut response = Response::new(Full::new(Bytes::from(answer)));
                response
                    .headers_mut()
                    .insert(CONNECTION, "close".parse().unwrap());
                response
            },
        ));
        let mut sender = H2Sender::handshake(client_io, "test", Duration::from_secs(5))
            .await
            .unwrap();
        for (expected, size) in [(1u32, 0usize), (3, 10), (5, 3 * 1024 * 1024)] {
            sender.ready().await.unwrap();
            let mut request = Request::new(Full::new(Bytes::from(vec![b'x'; size])));
            *request.uri_mut() = "https://example.test/".parse().unwrap();
            let response = match sender.send(request).await {
                Ok(response) => response,
                Err(failure) => panic!("{}", failure.error),
            };
            assert_eq!(
                response.extensions().get::<ServerStreamId>(),
                Some(&ServerStreamId(expected))
            );
            assert!(response.headers().get(CONNECTION).is_none());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("stream {expected} got {size} bytes"));
        }
    }
}
