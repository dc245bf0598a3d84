//! An async TLS stream over any `AsyncRead + AsyncWrite`, driven by one task.
//!
//! It wraps `tokio_openssl::SslStream`, whose BIO writes straight to the socket:
//! whatever OpenSSL produces while reading — the ClientHello answering a
//! HelloRequest, our Certificate answering a post-handshake CertificateRequest, a
//! KeyUpdate response — reaches the peer during that same read. On top it adds what
//! a proxy needs: a deadline on handshakes that start after the first one (a server
//! that sends HelloRequest and then ignores our ClientHello must not hang a client),
//! waiting without that deadline while a certificate request is held for the user
//! ([`crate::hold`]), and errors that explain themselves ([`TlsError`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use openssl::ssl::{self, ErrorCode, NameType, Ssl, SslRef};
use periscope_model::TlsInfo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::certs::summarize;
use crate::error::TlsError;
use crate::state::{HeldRequestWait, TlsConnectionState};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// Time limits for one connection's handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeTimeouts {
    /// The first handshake.
    pub handshake: Duration,
    /// Any later one: renegotiation, post-handshake authentication.
    pub renegotiation: Duration,
}

impl Default for HandshakeTimeouts {
    fn default() -> Self {
        HandshakeTimeouts {
            handshake: Duration::from_secs(10),
            renegotiation: Duration::from_secs(10),
        }
    }
}

pub struct TlsStream<S> {
    inner: tokio_openssl::SslStream<S>,
    state: Arc<TlsConnectionState>,
    /// Who is at the other end, for error messages ("127.0.0.1:8443", "the client").
    peer: String,
    renegotiation_timeout: Duration,
    renegotiation_deadline: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    pub(crate) async fn handshake(
        mut ssl: Ssl,
        stream: S,
        role: Role,
        state: Arc<TlsConnectionState>,
        peer: String,
        timeouts: HandshakeTimeouts,
    ) -> Result<Self, TlsError> {
        crate::ffi::attach_state(&mut ssl, Arc::clone(&state));
        let mut inner = tokio_openssl::SslStream::new(ssl, stream)?;
        let handshake = async {
            match role {
                Role::Client => Pin::new(&mut inner).connect().await,
                Role::Server => Pin::new(&mut inner).accept().await,
            }
        };
        match tokio::time::timeout(timeouts.handshake, handshake).await {
            Err(_elapsed) => Err(TlsError::HandshakeTimeout {
                peer,
                timeout: timeouts.handshake,
            }),
            Ok(Err(error)) => Err(TlsError::classify(
                &peer,
                inner.ssl(),
                &state.failure_context(),
                Some(&error),
            )),
            Ok(Ok(())) => Ok(TlsStream {
                inner,
                state,
                peer,
                renegotiation_timeout: timeouts.renegotiation,
                renegotiation_deadline: None,
            }),
        }
    }
}

impl<S: AsyncRead + AsyncWrite> crate::ffi::ExclusiveSsl for TlsStream<S> {
    fn ssl_ptr(&mut self) -> *mut openssl_sys::SSL {
        crate::ffi::ExclusiveSsl::ssl_ptr(&mut self.inner)
    }
}

impl<S: AsyncRead + AsyncWrite> TlsStream<S> {
    pub fn ssl(&self) -> &SslRef {
        self.inner.ssl()
    }

    /// The events and history of this connection.
    pub fn state(&self) -> &Arc<TlsConnectionState> {
        &self.state
    }

    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// Version, cipher, SNI, ALPN and the peer's certificate, as negotiated now.
    pub fn info(&self) -> TlsInfo {
        let ssl = self.inner.ssl();
        let leaf = ssl.peer_certificate();
        // A client's view of the chain starts with the leaf; a server's does not.
        let peer_chain = ssl
            .peer_cert_chain()
            .map(|chain| {
                chain
                    .iter()
                    .filter(|c| leaf.as_deref() != Some(*c))
                    .map(summarize)
                    .collect()
            })
            .unwrap_or_default();
        TlsInfo {
            version: ssl.version_str().to_owned(),
            cipher: ssl
                .current_cipher()
                .map(|c| c.name().to_owned())
                .unwrap_or_default(),
            sni: ssl.servername(NameType::HOST_NAME).map(str::to_owned),
            alpn: ssl
                .selected_alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            peer_certificate: leaf.as_deref().map(summarize),
            peer_chain,
            resumed: ssl.session_reused(),
            key_exchange: crate::ffi::negotiated_group(ssl),
        }
    }

    /// While a handshake after the first is under way, polls its deadline; returns the
    /// timeout error once it passes. The deadline starts over once a certificate
    /// request held for the user is answered.
    fn poll_renegotiation_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let in_handshake =
            !self.inner.ssl().is_init_finished() || self.state.handshake_in_progress();
        if !in_handshake || self.state.certificate_request_held() {
            self.renegotiation_deadline = None;
            return Poll::Pending;
        }
        let timeout = self.renegotiation_timeout;
        let deadline = self
            .renegotiation_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let phase = self
                    .state
                    .failure_context()
                    .phase
                    .unwrap_or(crate::state::HandshakePhase::Renegotiation);
                Poll::Ready(
                    TlsError::RenegotiationTimeout {
                        peer: self.peer.clone(),
                        phase,
                        timeout,
                    }
                    .into_io(),
                )
            }
        }
    }

    /// Sorts out a failed read or write of the inner stream: a handshake suspended for
    /// a held certificate request waits (without the renegotiation deadline) until the
    /// request is answered; anything else is a failure, explained.
    fn after_failure(&mut self, cx: &mut Context<'_>, error: io::Error) -> AfterFailure {
        if !is_suspended_for_certificate(&error) {
            return AfterFailure::Fail(self.explain(error));
        }
        match self.state.wait_for_held_request(cx.waker()) {
            HeldRequestWait::Waiting => {
                self.renegotiation_deadline = None;
                AfterFailure::Wait
            }
            HeldRequestWait::Settled => AfterFailure::Retry,
            HeldRequestWait::NotHeld => AfterFailure::Fail(self.explain(error)),
        }
    }

    /// Replaces OpenSSL's error with one that says what happened, using the events
    /// recorded on this connection.
    fn explain(&self, error: io::Error) -> io::Error {
        let ssl_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ssl::Error>());
        if ssl_error.is_none() && !self.state.handshake_in_progress() {
            return error;
        }
        TlsError::classify(
            &self.peer,
            self.inner.ssl(),
            &self.state.failure_context(),
            ssl_error,
        )
        .into_io()
    }

    /// A clean end of stream in the middle of a renegotiation is a failure, not EOF.
    fn check_eof(&self) -> Option<io::Error> {
        if self.inner.ssl().is_init_finished() && !self.state.handshake_in_progress() {
            return None;
        }
        Some(
            TlsError::classify(
                &self.peer,
                self.inner.ssl(),
                &self.state.failure_context(),
                None,
            )
            .into_io(),
        )
    }
}

/// What a read or write does after the inner stream failed.
enum AfterFailure {
    Fail(io::Error),
    /// The task waits for a held certificate request; it is woken when it is answered.
    Wait,
    /// The held request was answered meanwhile: call OpenSSL again.
    Retry,
}

/// Whether OpenSSL stopped because the certificate callback suspended the handshake.
/// `openssl::ssl::SslStream` passes `SSL_ERROR_WANT_X509_LOOKUP` on as an
/// `io::Error` of kind `Other` wrapping the `ssl::Error` (only WANT_READ is retried
/// inside it), and tokio-openssl only turns `WouldBlock` into `Pending`.
fn is_suspended_for_certificate(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ssl::Error>())
        .is_some_and(|e| e.code() == ErrorCode::from_raw(openssl_sys::SSL_ERROR_WANT_X509_LOOKUP))
}

/// The largest TLS record's plaintext (RFC 8446 §5.1).
const FULL_RECORD: usize = 16 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        loop {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => return Poll::Ready(this.after_read(cx, buf, before)),
                Poll::Ready(Err(error)) => match this.after_failure(cx, error) {
                    AfterFailure::Fail(error) => return Poll::Ready(Err(error)),
                    AfterFailure::Wait => return Poll::Pending,
                    AfterFailure::Retry => {}
                },
                Poll::Pending => return this.poll_renegotiation_deadline(cx).map(Err),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// After a read that returned data (or none: the end of the stream).
    fn after_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        before: usize,
    ) -> io::Result<()> {
        if buf.filled().len() == before {
            if let Some(error) = self.check_eof() {
                return Err(error);
            }
        }
        self.renegotiation_deadline = None;
        // One SSL_read returns one record (16 KiB at most). After a full one, a large
        // transfer is under way: take the records already here too, so it moves in
        // larger pieces with fewer hand-overs between the legs. (A short record ends
        // the loop: small exchanges pay no extra read. Anything but data, a suspended
        // handshake included, ends it too and is met again by the next read.)
        let mut last = buf.filled().len() - before;
        while last >= FULL_RECORD && buf.remaining() >= FULL_RECORD {
            let filled = buf.filled().len();
            match Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => last = buf.filled().len() - filled,
                _ => break,
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let error = match Pin::new(&mut this.inner).poll_write(cx, buf) {
                Poll::Ready(Ok(n)) => return Poll::Ready(Ok(n)),
                Poll::Ready(Err(error)) => error,
                Poll::Pending => return this.poll_renegotiation_deadline(cx).map(Err),
            };
            match this.after_failure(cx, error) {
                AfterFailure::Fail(error) => return Poll::Ready(Err(error)),
                AfterFailure::Wait => return Poll::Pending,
                AfterFailure::Retry => continue,
            }
        }
    }

    /// hyper writes head and body as separate slices when a stream takes them, which
    /// saves copying large bodies into its buffer. Large slices go out as they are;
    /// small leading ones are gathered into one TLS record. (A retry after `Pending`
    /// passes the same slices, so the gathered bytes are the same, as OpenSSL
    /// requires.)
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        const GATHER_BELOW: usize = 4096;
        const RECORD: usize = 16 * 1024;
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = slices.next() else {
            return Poll::Ready(Ok(0));
        };
        if first.len() >= GATHER_BELOW || bufs.len() == 1 {
            return self.poll_write(cx, first);
        }
        let mut gathered = Vec::with_capacity(RECORD);
        for slice in std::iter::once(first).chain(slices) {
            let room = RECORD - gathered.len();
            gathered.extend_from_slice(&slice[..slice.len().min(room)]);
            if gathered.len() == RECORD {
                break;
            }
        }
        self.poll_write(cx, &gathered)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
