//! Small stream adapters, and the settings of the proxy's TCP sockets:
//!
//! - [`Prefixed`]: bytes read to sniff a protocol, put back;
//! - [`WriteDeadline`]: a write that makes no progress for the idle timeout fails
//!   (a peer that stops reading but stays alive must not hold its task forever);
//! - [`LingeringClose`]: a connection closed before its client finished sending is
//!   drained for a moment first, so the answer (a 400, a 431) is read rather than
//!   lost to a TCP reset;
//! - [`FirstBytes`]: remembers what a server sent first, to recognise an HTTP/2
//!   server that ignored ALPN.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::intercept::KillSwitch;

/// Settings for every socket to a client or a server: no Nagle delay (requests and
/// responses are written whole), and TCP keepalive, so a peer that vanished without
/// closing (a laptop gone to sleep, a NAT entry dropped) is noticed within about two
/// minutes. A raw tunnel or a WebSocket may rightly stay silent for hours, so it
/// has no idle timeout; without keepalive, a dead peer would hold its task and the
/// other leg's connection forever.
pub fn configure_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// A stream whose first bytes were already read (to sniff a ClientHello); they are
/// replayed before the rest.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }

    /// Puts `bytes`, read ahead, back in front of what is still to be replayed.
    pub fn put_back(&mut self, bytes: Bytes) {
        self.prefix = if self.prefix.is_empty() {
            bytes
        } else {
            [bytes, std::mem::take(&mut self.prefix)].concat().into()
        };
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if !this.prefix.has_remaining() {
                // Let go of the buffer it came in: the connection may live for hours.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How long a connection stalled in writing before it was given up, once it was.
#[derive(Debug, Default)]
pub struct WriteStall(OnceLock<Duration>);

impl WriteStall {
    pub fn stalled_for(&self) -> Option<Duration> {
        self.0.get().copied()
    }

    /// Writes were given up after `limit` without progress.
    pub fn record(&self, limit: Duration) {
        let _ = self.0.set(limit);
    }
}

/// Travels with a response to the client leg, so that an HTTP/2 stream whose window
/// never opens tells its flow that the client stopped reading.
#[derive(Clone, Debug)]
pub struct StallNotice(pub Arc<WriteStall>);

/// Fails a write (or flush) that stays pending for `limit`: the peer is alive (TCP
/// keepalive answers) but does not read, so its receive window stays shut. The error
/// says who stopped reading; `stall`, when given, keeps the fact for the flows on the
/// connection.
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    peer: &'static str,
    stall: Option<Arc<WriteStall>>,
    /// Allocated at the first pending write and then only moved: most connections
    /// never stall, and one that does should not allocate at every stall.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<S> WriteDeadline<S> {
    pub fn new(
        inner: S,
        limit: Duration,
        peer: &'static str,
        stall: Option<Arc<WriteStall>>,
    ) -> Self {
        WriteDeadline {
            inner,
            limit,
            peer,
            stall,
            timer: None,
            armed: false,
        }
    }

    fn progress<T>(
        &mut self,
        outcome: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.armed = false;
            return outcome;
        }
        let limit = self.limit;
        let deadline = Instant::now() + limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(stall) = &self.stall {
            stall.record(limit);
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{} stopped reading: no progress writing to it for {} s",
                self.peer,
                limit.as_secs_f64()
            ),
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(outcome, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(outcome, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(outcome, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(outcome, cx)
    }
}

/// A socket that can be closed with a reset (RST) rather than a FIN.
pub trait Reset {
    /// Makes the close that follows a reset: nothing unsent is delivered.
    fn reset(&self);
}

impl Reset for TcpStream {
    fn reset(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

impl<S: Reset> Reset for WriteDeadline<S> {
    fn reset(&self) {
        self.inner.reset();
    }
}

/// The longest a closed connection is drained.
const LINGER_TOTAL: Duration = Duration::from_secs(5);
/// A drained connection silent this long is closed at once.
const LINGER_SILENCE: Duration = Duration::from_secs(1);
/// How much of a drained connection is read (and discarded) at a time.
const LINGER_READ: usize = 8 * 1024;

/// Closes like nginx's lingering close. When the connection is dropped before the
/// client finished sending (an answer to a request Periscope did not read whole: a
/// 431 for a huge head, a 400), closing at once with unread bytes in the receive
/// buffer makes the kernel send a reset, and the client may lose the answer it has
/// not read yet. So the connection is shut for writing, read and discarded for at
/// most [`LINGER_TOTAL`] (less when the client goes quiet), then closed. A client
/// that closed first (the usual end of a keep-alive connection) costs nothing.
///
/// A connection the user killed is reset instead: what it still had to send is
/// thrown away at once, on both ends.
pub struct LingeringClose<S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static> {
    inner: Option<S>,
    client_closed: bool,
    killed: Arc<KillSwitch>,
}

impl<S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static> LingeringClose<S> {
    pub fn new(inner: S, killed: Arc<KillSwitch>) -> Self {
        LingeringClose {
            inner: Some(inner),
            client_closed: false,
            killed,
        }
    }

    fn inner(&mut self) -> io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection closed"))
    }
}

impl<S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static> Drop for LingeringClose<S> {
    fn drop(&mut self) {
        let Some(mut io) = self.inner.take() else {
            return;
        };
        if self.killed.wants_reset() {
            io.reset();
            return;
        }
        if self.client_closed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let deadline = Instant::now() + LINGER_TOTAL;
            let _ = tokio::time::timeout_at(deadline, io.shutdown()).await;
            // Not zeroed, and small enough for the allocator's thread cache: a zeroed
            // 64 KiB buffer cost each closed connection a madvise and page faults.
            let mut sink = BytesMut::with_capacity(LINGER_READ);
            loop {
                sink.clear();
                let silence = Instant::now() + LINGER_SILENCE;
                match tokio::time::timeout_at(deadline.min(silence), io.read_buf(&mut sink)).await {
                    Ok(Ok(n)) if n > 0 => continue,
                    _ => return,
                }
            }
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static> AsyncRead for LingeringClose<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let outcome = Pin::new(this.inner()?).poll_read(cx, buf);
        if matches!(outcome, Poll::Ready(Ok(())))
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            this.client_closed = true;
        }
        outcome
    }
}

impl<S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static> AsyncWrite for LingeringClose<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().inner()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().inner()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().inner()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().inner()?).poll_shutdown(cx)
    }
}

/// The first bytes a server sent on a connection, kept to explain a response that is
/// not HTTP/1.1.
#[derive(Debug, Default)]
pub struct FirstBytesSeen(Mutex<Vec<u8>>);

impl FirstBytesSeen {
    /// How many bytes are kept: an HTTP/2 frame header.
    const KEPT: usize = 9;

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the server opened with an HTTP/2 SETTINGS frame (RFC 9113 §3.4: the
    /// server's connection preface), which no HTTP/1.1 response starts with.
    pub fn is_http2_preface(&self) -> bool {
        let bytes = self.bytes();
        let Ok(header) = <[u8; 9]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        header[3] == 0x04 && header[4] & !0x01 == 0 && stream == 0 && length.is_multiple_of(6)
    }
}

pub struct FirstBytes<S> {
    inner: S,
    seen: Arc<FirstBytesSeen>,
    done: bool,
}

impl<S> FirstBytes<S> {
    pub fn new(inner: S) -> (Self, Arc<FirstBytesSeen>) {
        let seen = Arc::new(FirstBytesSeen::default());
        (
            FirstBytes {
                inner,
                seen: Arc::clone(&seen),
                done: false,
            },
            seen,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let outcome = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.done {
            let read = &buf.filled()[before..];
            let mut kept = this.seen.0.lock().unwrap_or_else(|p| p.into_inner());
            let room = FirstBytesSeen::KEPT - kept.len();
            kept.extend_from_slice(&read[..read.len().min(room)]);
            this.done =
                kept.len() == FirstBytesSeen::KEPT || (read.is_empty() && outcome.is_ready());
        }
        outcome
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_put_back_are_replayed_before_the_rest_of_the_prefix_and_the_stream() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        theirs.write_all(b" stream").await.unwrap();
        drop(theirs);
        let mut stream = Prefixed::new(Bytes::from_static(b"prefix"), ours);
        let mut first = [0u8; 3];
        stream.read_exact(&mut first).await.unwrap();
        stream.put_back(Bytes::from_static(b"[back]"));
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(&first, b"pre");
        assert_eq!(rest, b"[back]fix stream");

        let mut consumed = Prefixed::new(Bytes::new(), tokio::io::empty());
        consumed.put_back(Bytes::from_static(b"again"));
        let mut again = Vec::new();
        consumed.read_to_end(&mut again).await.unwrap();
        assert_eq!(again, b"again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_fails_after_the_limit_and_says_so() {
        let (ours, _theirs) = tokio::io::duplex(16);
        let stall = Arc::new(WriteStall::default());
        let mut guarded = WriteDeadline::new(
            ours,
            Duration::from_secs(5),
            "the client",
            Some(Arc::clone(&stall)),
        );
        let error = guarded.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            error.to_string().starts_with("the client stopped reading"),
            "{error}"
        );
        assert_eq!(stall.stalled_for(), Some(Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_a_stall() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut guarded = WriteDeadline::new(ours, Duration::from_secs(5), "the client", None);
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut chunk = [0u8; 16];
            while total < 256 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                total += theirs.read(&mut chunk).await.unwrap();
            }
            total
        });
        guarded.write_all(&[1u8; 256]).await.unwrap();
        drop(guarded);
        assert_eq!(reader.await.unwrap(), 256);
    }

    #[test]
    fn an_http2_settings_frame_is_recognised_and_an_http11_status_line_is_not() {
        let seen = FirstBytesSeen::default();
        seen.0
            .lock()
            .unwrap()
            .extend_from_slice(&[0, 0, 18, 4, 0, 0, 0, 0, 0]);
        assert!(seen.is_http2_preface());
        let seen = FirstBytesSeen::default();
        seen.0.lock().unwrap().extend_from_slice(b"HTTP/1.1 ");
        assert!(!seen.is_http2_preface());
        let seen = FirstBytesSeen::default();
        seen.0
            .lock()
            .unwrap()
            .extend_from_slice(&[0, 0, 18, 4, 0, 0, 0, 0]);
        assert!(!seen.is_http2_preface(), "too short to tell");
    }
}
