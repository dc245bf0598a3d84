//! Idle HTTP/1.1 connections leave hyper. hyper keeps, for each connection it serves
//! or drives, a read and a write buffer of 8 KiB each (its minimum), its dispatcher,
//! and for a client connection a request channel and a task: about 50 KiB for a
//! client connection and its server connection, whether they carry traffic or sit
//! idle for minutes. A connection idle for [`PARK_AFTER`] is therefore taken out of
//! hyper — the TLS streams stay open, hyper's state is dropped — and served by a new
//! hyper connection when its client speaks again.
//!
//! - [`ParkableClient`]: the client leg's stream as hyper's server sees it. Once the
//!   connection is idle (no exchange in flight, every response flushed, nothing read
//!   since) for [`PARK_AFTER`], it tells hyper the client closed; hyper ends the
//!   connection cleanly and the stream goes to its [`ClientSlot`] instead of being
//!   shut down.
//! - [`IdleGate`]: what the service tells that stream — when an exchange starts, when
//!   its response is done ([`TrackedBody`]), and that the connection was upgraded
//!   (never parked then: the upgrade owns the stream).
//! - [`ParkableServer`]: a server connection's stream under hyper's client. When its
//!   [`ServerPark`] is asked for it and the request sender is dropped, hyper ends the
//!   connection and the stream comes back instead of being shut down.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How long an HTTP/1.1 connection stays in hyper with nothing happening on it. Short
/// enough that idle connections cost little, long enough that a client sending
/// requests one after another never pays for leaving and re-entering hyper.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// How long a server connection's hyper task may take to hand its stream back.
const HAND_BACK_LIMIT: Duration = Duration::from_secs(1);

/// A stream of bytes of any kind (plain TCP, TLS, through an upstream proxy).
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

pub type BoxedStream = Box<dyn ByteStream>;

/// Shared between a client connection's service and its [`ParkableClient`].
#[derive(Debug, Default)]
pub struct IdleGate {
    in_flight: AtomicUsize,
    /// Exchanges whose response is done: a change tells the stream that what it saw
    /// before belongs to an earlier exchange.
    finished: AtomicU64,
    upgraded: AtomicBool,
}

impl IdleGate {
    /// An exchange starts; it ends when the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// The connection now belongs to an upgrade (WebSocket, CONNECT).
    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn may_park(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.upgraded.load(Ordering::Acquire)
    }

    fn finished(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }
}

/// One exchange in flight on a client connection.
#[derive(Debug)]
pub struct InFlight(Arc<IdleGate>);

impl InFlight {
    pub fn gate(&self) -> &IdleGate {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // `finished` first: a stream that sees no exchange in flight must also see
        // that a response was done since its last look.
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that ends its exchange when hyper is done with it (hyper drops a
/// body once it has written it, or at once when the response has none).
pub struct TrackedBody<B> {
    inner: B,
    in_flight: Option<InFlight>,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        TrackedBody {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.in_flight = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client stream taken out of hyper, and since when its connection was idle.
pub struct ParkedClient<S> {
    pub stream: S,
    pub idle_since: Instant,
}

/// Where a [`ParkableClient`] leaves its stream when it parks.
pub struct ClientSlot<S>(Arc<Mutex<Option<ParkedClient<S>>>>);

impl<S> ClientSlot<S> {
    pub fn take(&self) -> Option<ParkedClient<S>> {
        self.0.lock().map(|mut slot| slot.take()).unwrap_or(None)
    }
}

/// The client leg's stream as hyper's server sees it (see the module's text).
pub struct ParkableClient<S> {
    stream: Option<S>,
    gate: Arc<IdleGate>,
    slot: Arc<Mutex<Option<ParkedClient<S>>>>,
    /// The value of `gate.finished` the flags below are about.
    seen_finished: u64,
    read_since: bool,
    flushed_since: bool,
    timer: Option<Pin<Box<Sleep>>>,
    idle_since: Option<Instant>,
    parking: bool,
}

impl<S> ParkableClient<S> {
    pub fn new(stream: S, gate: Arc<IdleGate>) -> (Self, ClientSlot<S>) {
        let slot = Arc::new(Mutex::new(None));
        let seen_finished = gate.finished();
        let client = ParkableClient {
            stream: Some(stream),
            read_since: false,
            gate,
            slot: Arc::clone(&slot),
            seen_finished,
            flushed_since: true,
            timer: None,
            idle_since: None,
            parking: false,
        };
        (client, ClientSlot(slot))
    }

    fn catch_up(&mut self) {
        let finished = self.gate.finished();
        if finished != self.seen_finished {
            self.seen_finished = finished;
            self.read_since = false;
            self.flushed_since = false;
        }
    }

    /// Idle: nothing in flight, the last response written out, no byte of a next
    /// request read. hyper is then waiting for a request head and nothing else (a
    /// request head begun and stalled for [`PARK_AFTER`] would be cut, which hyper's
    /// header timeout would do later anyway).
    fn is_idle(&self) -> bool {
        !self.read_since && self.flushed_since && self.gate.may_park()
    }

    /// Polled when the stream has nothing to read: `Ready` once idle long enough.
    fn poll_park(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_idle() {
            self.idle_since = None;
            return Poll::Pending;
        }
        let now = Instant::now();
        let since = *self.idle_since.get_or_insert(now);
        let deadline = since + PARK_AFTER;
        match &mut self.timer {
            Some(timer) if timer.deadline() != deadline => timer.as_mut().reset(deadline),
            Some(_) => {}
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        let timer = self.timer.as_mut().expect("set above");
        timer.as_mut().poll(cx)
    }

    fn stream(&mut self) -> io::Result<&mut S> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the stream was parked"))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ParkableClient<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.catch_up();
        if this.parking {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(this.stream()?).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.read_since = true;
                    this.idle_since = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.poll_park(cx) {
                Poll::Ready(()) => {
                    // End of stream, as if the client had closed: hyper ends an idle
                    // connection cleanly on that, and the stream goes to the slot.
                    this.parking = true;
                    Poll::Ready(Ok(()))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ParkableClient<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.catch_up();
        this.flushed_since = false;
        Pin::new(this.stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.catch_up();
        this.flushed_since = false;
        Pin::new(this.stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.catch_up();
        let flushed = Pin::new(this.stream()?).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            this.flushed_since = true;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parking {
            return Poll::Ready(Ok(()));
        }
        Pin::new(this.stream()?).poll_shutdown(cx)
    }
}

impl<S> Drop for ParkableClient<S> {
    fn drop(&mut self) {
        if !self.parking {
            return;
        }
        if let (Some(stream), Ok(mut slot)) = (self.stream.take(), self.slot.lock()) {
            *slot = Some(ParkedClient {
                stream,
                idle_since: self.idle_since.unwrap_or_else(Instant::now),
            });
        }
    }
}

/// Takes a server connection's stream back from hyper's client (see the module's
/// text).
#[derive(Default)]
pub struct ServerPark {
    parking: AtomicBool,
    stream: Mutex<Option<BoxedStream>>,
    handed_back: Notify,
}

impl ServerPark {
    /// Asks for the stream: call, then drop the connection's request sender, then
    /// [`ServerPark::handed_back`].
    pub fn request(&self) {
        self.parking.store(true, Ordering::Release);
    }

    /// The stream, once hyper's task has let go of it; `None` if it does not within
    /// a second (it was busy after all, or already gone).
    pub async fn handed_back(&self) -> Option<BoxedStream> {
        let _ = tokio::time::timeout(HAND_BACK_LIMIT, self.handed_back.notified()).await;
        self.stream.lock().ok()?.take()
    }
}

/// A server connection's stream under hyper's client.
pub struct ParkableServer {
    stream: Option<BoxedStream>,
    park: Arc<ServerPark>,
}

impl ParkableServer {
    pub fn new(stream: BoxedStream, park: Arc<ServerPark>) -> Self {
        ParkableServer {
            stream: Some(stream),
            park,
        }
    }

    fn parking(&self) -> bool {
        self.park.parking.load(Ordering::Acquire)
    }

    fn stream(&mut self) -> io::Result<&mut BoxedStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the stream was parked"))
    }
}

impl AsyncRead for ParkableServer {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for ParkableServer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parking() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(this.stream()?).poll_shutdown(cx)
    }
}

impl Drop for ParkableServer {
    fn drop(&mut self) {
        if !self.parking() {
            return;
        }
        if let (Some(stream), Ok(mut slot)) = (self.stream.take(), self.park.stream.lock()) {
            *slot = Some(stream);
        }
        self.park.handed_back.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use crate::io::Prefixed;

    const LONG: Duration = Duration::from_secs(30);

    type Client = ParkableClient<Prefixed<DuplexStream>>;

    /// A client stream whose first bytes, `prefix`, were read before (as a parked
    /// connection's are).
    fn client(
        prefix: &'static [u8],
    ) -> (
        Client,
        ClientSlot<Prefixed<DuplexStream>>,
        DuplexStream,
        Arc<IdleGate>,
    ) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let gate = Arc::new(IdleGate::default());
        let stream = Prefixed::new(Bytes::from_static(prefix), ours);
        let (client, slot) = ParkableClient::new(stream, Arc::clone(&gate));
        (client, slot, theirs, gate)
    }

    /// What the next read gives within `LONG`: `None` if it is still waiting.
    async fn read_within(client: &mut Client) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(LONG, client.read(&mut buf)).await {
            Ok(read) => Some(buf[..read.unwrap()].to_vec()),
            Err(_) => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_client_reads_as_closed_after_the_delay_and_its_stream_is_kept_open() {
        let (mut client, slot, mut theirs, _gate) = client(b"");
        let started = Instant::now();
        assert_eq!(read_within(&mut client).await, Some(vec![]));
        assert_eq!(started.elapsed(), PARK_AFTER);
        // hyper shuts an ended connection down: a parked one is not.
        client.shutdown().await.unwrap();
        drop(client);
        let mut parked = slot.take().expect("the stream was parked");
        assert_eq!(parked.idle_since, started);
        theirs.write_all(b"GET").await.unwrap();
        let mut got = [0u8; 3];
        parked.stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET");
        parked.stream.write_all(b"ok").await.unwrap();
        theirs.read_exact(&mut got[..2]).await.unwrap();
        assert_eq!(&got[..2], b"ok");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_not_parked_while_an_exchange_is_in_flight_or_its_response_unflushed() {
        let (mut client, slot, _theirs, gate) = client(b"");
        let exchange = gate.begin();
        assert_eq!(read_within(&mut client).await, None, "in flight");
        client.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        drop(exchange);
        assert_eq!(read_within(&mut client).await, None, "written, not flushed");
        client.flush().await.unwrap();
        assert_eq!(
            read_within(&mut client).await,
            Some(vec![]),
            "done and flushed"
        );
        drop(client);
        assert!(slot.take().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_of_a_next_request_keep_the_connection_in_until_its_response_is_done() {
        let (mut client, slot, mut theirs, gate) = client(b"GE");
        assert_eq!(read_within(&mut client).await, Some(b"GE".to_vec()));
        assert_eq!(read_within(&mut client).await, None, "a request head begun");
        theirs.write_all(b"T / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(read_within(&mut client)
            .await
            .is_some_and(|b| !b.is_empty()));
        drop(gate.begin());
        client.flush().await.unwrap();
        assert_eq!(read_within(&mut client).await, Some(vec![]));
        drop(client);
        assert!(slot.take().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_is_never_parked_and_a_closed_one_is_not_kept() {
        let (mut client, slot, theirs, gate) = client(b"");
        let exchange = gate.begin();
        exchange.gate().mark_upgraded();
        drop(exchange);
        client.flush().await.unwrap();
        assert_eq!(read_within(&mut client).await, None);
        drop(theirs);
        assert_eq!(
            read_within(&mut client).await,
            Some(vec![]),
            "the peer's end"
        );
        drop(client);
        assert!(slot.take().is_none(), "only a parked stream is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_stream_comes_back_when_asked_for_and_is_shut_down_otherwise() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let park = Arc::new(ServerPark::default());
        let mut server = ParkableServer::new(Box::new(ours), Arc::clone(&park));
        park.request();
        server.shutdown().await.unwrap();
        drop(server);
        let mut stream = park.handed_back().await.expect("handed back");
        stream.write_all(b"still open").await.unwrap();
        let mut got = [0u8; 10];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"still open");

        let (ours, mut theirs) = tokio::io::duplex(1024);
        let park = Arc::new(ServerPark::default());
        let mut server = ParkableServer::new(Box::new(ours), Arc::clone(&park));
        server.shutdown().await.unwrap();
        assert_eq!(
            theirs.read(&mut got).await.unwrap(),
            0,
            "shut down as usual"
        );
        drop(server);
        assert!(park.handed_back().await.is_none());
    }
}
