//! Bodies stream through the proxy frame by frame; on the way, the flow keeps a copy
//! of the first `limit` bytes, counts the rest, and learns when the body started,
//! ended, failed or stalled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use periscope_flow::{FlowErrorKind, Headers};
use tokio::time::{Instant, Sleep};

use crate::error::describe_hyper_error;
use crate::headers::record_headers;
use crate::recorder::{FlowRecorder, Side};

/// Frames smaller than this are copied into one buffer rather than kept as slices: a
/// slice pins the whole read buffer it came in, and a body sent a byte at a time would
/// otherwise keep one entry per byte. What a flow keeps is bounded by bytes, never by
/// the number of frames.
const COALESCE_BELOW: usize = 8 * 1024;

/// A body relayed between the legs while being recorded into a flow.
pub struct RecordingBody<B> {
    inner: B,
    recorder: Arc<FlowRecorder>,
    side: Side,
    limit: usize,
    /// Large frames, as slices of the buffers they arrived in.
    kept: Vec<Bytes>,
    /// Small frames since the last large one, copied together.
    small: BytesMut,
    kept_len: usize,
    seen: u64,
    done: bool,
    idle_timeout: Duration,
    /// Armed once and moved forward only when it fires early: re-arming a timer on
    /// every frame would cost an allocation and two timer-wheel operations per frame.
    idle: Option<Pin<Box<Sleep>>>,
    last_progress: Instant,
}

impl<B: Body> RecordingBody<B> {
    pub fn new(
        inner: B,
        recorder: Arc<FlowRecorder>,
        side: Side,
        limit: usize,
        idle_timeout: Duration,
    ) -> Self {
        let empty = inner.is_end_stream();
        let mut body = RecordingBody {
            inner,
            recorder,
            side,
            limit,
            kept: Vec::new(),
            small: BytesMut::new(),
            kept_len: 0,
            seen: 0,
            done: false,
            idle_timeout,
            idle: None,
            last_progress: Instant::now(),
        };
        // An empty body (a GET, a HEAD or 204 response) may never be polled, and the
        // exchange is over as far as the body goes: the flow, and its claim on the
        // connections' TLS events, must not wait until someone drops it.
        if empty {
            body.complete(None);
        }
        body
    }
}

impl<B> RecordingBody<B> {
    fn keep(&mut self, data: &Bytes) {
        self.seen += data.len() as u64;
        self.recorder.add_body_bytes(self.side, data.len() as u64);
        let room = self.limit.saturating_sub(self.kept_len);
        if room == 0 || data.is_empty() {
            return;
        }
        let take = room.min(data.len());
        self.kept_len += take;
        if take < COALESCE_BELOW {
            self.small.extend_from_slice(&data[..take]);
        } else {
            self.flush_small();
            // A slice of a `Bytes` shares its buffer: no copy until the flow is built.
            self.kept.push(data.slice(..take));
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            let small = std::mem::take(&mut self.small);
            self.kept.push(small.freeze());
        }
    }

    fn recorded(&mut self) -> periscope_flow::Body {
        self.flush_small();
        let content = match self.kept.len() {
            0 => Bytes::new(),
            1 => self.kept.pop().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(self.kept_len);
                for piece in self.kept.drain(..) {
                    all.extend_from_slice(&piece);
                }
                all.freeze()
            }
        };
        periscope_flow::Body {
            truncated: (content.len() as u64) < self.seen,
            content,
            size: self.seen,
        }
    }

    fn complete(&mut self, trailers: Option<Headers>) {
        if self.done {
            return;
        }
        self.done = true;
        let body = self.recorded();
        self.recorder.set_body(self.side, body, trailers);
        if self.side == Side::Response {
            self.recorder.finish();
        }
    }

    /// A failed response body ends the flow. A failed request body does not: the
    /// exchange sees the upstream request fail because of it and answers the client
    /// (400, 408) with this error as the reason.
    fn fail(&mut self, kind: FlowErrorKind, message: String) {
        if self.done {
            return;
        }
        self.done = true;
        let body = self.recorded();
        match self.side {
            Side::Request => {
                self.recorder.update(|flow| flow.request.body = body);
                self.recorder.set_error(kind, message);
            }
            Side::Response => {
                self.recorder.update(|flow| {
                    if let Some(response) = flow.response.as_mut() {
                        response.body = body;
                    }
                });
                self.recorder.finish_with_error(kind, message);
            }
        }
    }

    fn what(&self) -> &'static str {
        match self.side {
            Side::Request => "request body",
            Side::Response => "response body",
        }
    }
}

impl<B> Body for RecordingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(kill) = this.recorder.kill_switch() {
            if kill.poll_killed(cx).is_ready() {
                let message = format!(
                    "{} after {} bytes of the {}",
                    kill.reason(),
                    this.seen,
                    this.what()
                );
                this.fail(FlowErrorKind::Killed, message.clone());
                return Poll::Ready(Some(Err(message.into())));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last_progress = Instant::now();
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                    // With a known length, hyper stops polling once it has sent the
                    // last byte; the end is now, not at a `None` that never comes.
                    if this.inner.is_end_stream() {
                        this.complete(None);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    let trailers = record_headers(trailers);
                    this.complete(Some(trailers));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                let error: Box<dyn std::error::Error + Send + Sync> = error.into();
                let (kind, message) = match this.side {
                    Side::Response => (
                        FlowErrorKind::UpstreamProtocol,
                        format!(
                            "the server's response body failed after {} bytes: {}",
                            this.seen,
                            describe_hyper_error(error.as_ref())
                        ),
                    ),
                    Side::Request => (
                        client_body_error_kind(error.as_ref()),
                        format!(
                            "the client's request body failed after {} bytes: {}",
                            this.seen,
                            describe_hyper_error(error.as_ref())
                        ),
                    ),
                };
                this.fail(kind, message);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.complete(None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let deadline = this.last_progress + timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if idle.as_mut().poll(cx).is_ready() {
                    if Instant::now() < deadline {
                        // Data came since it was armed: wait for the rest of the time.
                        idle.as_mut().reset(deadline);
                        if idle.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    let message = format!(
                        "the {} stalled: no data for {} s after {} bytes",
                        this.what(),
                        timeout.as_secs(),
                        this.seen
                    );
                    this.fail(FlowErrorKind::Timeout, message.clone());
                    return Poll::Ready(Some(Err(message.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for RecordingBody<B> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.side {
            // A server may answer before reading the whole request (a 413, a redirect):
            // keep what passed, the response decides whether the flow failed.
            Side::Request => {
                self.done = true;
                let body = self.recorded();
                self.recorder.update(|flow| flow.request.body = body);
            }
            Side::Response => {
                self.done = true;
                let body = self.recorded();
                self.recorder.update(|flow| {
                    if let Some(response) = flow.response.as_mut() {
                        response.body = body;
                    }
                });
                self.recorder.finish_client_gone(self.seen);
            }
        }
    }
}

/// Why a client's request body failed: bytes that are not valid framing (a bad chunk
/// size) are the client's bad request; anything else means it went away.
fn client_body_error_kind(error: &(dyn std::error::Error + 'static)) -> FlowErrorKind {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            ) {
                return FlowErrorKind::BadRequest;
            }
        }
        cause = error.source();
    }
    FlowErrorKind::ClientDisconnected
}

/// A message body as it arrives from a peer, over HTTP/1.1 (hyper) or HTTP/2 (h2),
/// or a recorded one sent again.
pub enum IncomingBody {
    Http1(hyper::body::Incoming),
    Http2(crate::http2::H2Body),
    Replayed(Full<Bytes>),
    /// A CONNECT stream's data is a tunnel, not a body.
    Empty,
    /// A body whose start was read ahead (to show it to the user) and was too large
    /// to hold whole: the part read, then the rest as it comes.
    ReadAhead(Box<ReadAhead>),
}

pub struct ReadAhead {
    pub prefix: Option<Bytes>,
    pub rest: IncomingBody,
    /// Trailers already read (the rest has ended then).
    pub trailers: Option<http::HeaderMap>,
    /// The error that ended the reading ahead (the rest has ended then): given after
    /// the prefix, so that a body cut short is not taken for a whole one.
    pub error: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl From<Option<crate::http2::H2Body>> for IncomingBody {
    fn from(body: Option<crate::http2::H2Body>) -> Self {
        body.map_or(IncomingBody::Empty, IncomingBody::Http2)
    }
}

impl Body for IncomingBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            IncomingBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            IncomingBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            IncomingBody::Replayed(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            IncomingBody::Empty => Poll::Ready(None),
            IncomingBody::ReadAhead(ahead) => {
                if let Some(prefix) = ahead.prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                if let Some(error) = ahead.error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                match Pin::new(&mut ahead.rest).poll_frame(cx) {
                    Poll::Ready(None) => {
                        Poll::Ready(ahead.trailers.take().map(|t| Ok(Frame::trailers(t))))
                    }
                    other => other,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            IncomingBody::Http1(body) => body.is_end_stream(),
            IncomingBody::Http2(body) => body.is_end_stream(),
            IncomingBody::Replayed(body) => body.is_end_stream(),
            IncomingBody::Empty => true,
            IncomingBody::ReadAhead(ahead) => {
                ahead.prefix.is_none()
                    && ahead.trailers.is_none()
                    && ahead.error.is_none()
                    && ahead.rest.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            IncomingBody::Http1(body) => body.size_hint(),
            IncomingBody::Http2(body) => body.size_hint(),
            IncomingBody::Replayed(body) => body.size_hint(),
            IncomingBody::Empty => SizeHint::with_exact(0),
            IncomingBody::ReadAhead(ahead) => {
                let read = ahead.prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = ahead.rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
        }
    }
}

/// A request body on its way upstream: straight from the client, or replayed from
/// the recorded copy (an HTTP/2 server asked for HTTP/1.1).
///
/// Boxed because hyper's client queues requests in fixed-size slots per connection:
/// a small request keeps an idle connection small.
pub type RequestBody = Box<RecordingBody<IncomingBody>>;

/// What the proxy sends a client: a relayed body, or one Periscope wrote itself.
pub enum ProxyBody<B> {
    Relayed(RecordingBody<B>),
    Generated(Full<Bytes>),
}

impl<B> ProxyBody<B> {
    pub fn generated(content: impl Into<Bytes>) -> Self {
        ProxyBody::Generated(Full::new(content.into()))
    }
}

impl<B> Body for ProxyBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Relayed(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Generated(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Relayed(body) => body.is_end_stream(),
            ProxyBody::Generated(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Relayed(body) => body.size_hint(),
            ProxyBody::Generated(body) => body.size_hint(),
        }
    }
}
