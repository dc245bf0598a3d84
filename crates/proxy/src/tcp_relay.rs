//! Connections relayed as bytes — an ignored host, a `--tcp-hosts` host, anything
//! that is neither TLS nor HTTP — recorded as one TCP flow each: both directions
//! counted, their first bytes kept up to the body limit (not for an ignored host,
//! whose bytes are TLS records Periscope cannot read), published when the
//! connection ends.
//!
//! Like a WebSocket, such a connection may stay silent as long as its ends like: TCP
//! keepalive on both legs notices a peer that vanished, and a write the peer does not
//! read ends after the idle timeout (`WriteDeadline`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use periscope_flow::{
    Body, ConnectionInfo, FlowErrorKind, Milestone, TcpReason, TcpSession, Timestamp,
};
use periscope_tls::TlsConnectionState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::ProxyCore;
use crate::io::WriteDeadline;
use crate::recorder::{ClientContext, FlowRecorder};

/// What a TCP flow says about its connection before any byte is relayed.
pub struct TcpFlowStart {
    pub host: String,
    pub port: u16,
    pub reason: TcpReason,
    pub sni: Option<String>,
    /// The server connection, as flows record it.
    pub server: ConnectionInfo,
    pub server_milestones: Vec<(Milestone, Timestamp)>,
    pub server_tls: Option<Arc<TlsConnectionState>>,
}

/// Relays bytes between `client_io` and `server_io` until both are done, and records
/// the connection as a TCP flow.
pub async fn relay<C, S>(
    core: &ProxyCore,
    client: &ClientContext,
    client_io: C,
    server_io: S,
    start: TcpFlowStart,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A connection passed through untouched is ciphertext: nothing worth keeping.
    let keep = if matches!(
        start.reason,
        TcpReason::IgnoredHost | TcpReason::IgnoredByScript
    ) {
        0
    } else {
        core.config.body_limit
    };
    let recorder = FlowRecorder::begin_tcp(
        core.bus.clone(),
        client,
        (start.host, start.port),
        TcpSession {
            reason: start.reason,
            sni: start.sni,
            from_client: Body::default(),
            from_server: Body::default(),
        },
        Timestamp::now(),
    );
    recorder.set_server(start.server, &start.server_milestones, start.server_tls);
    recorder.publish_request();
    let from_client = Arc::new(Mutex::new(Kept::new(keep)));
    let from_server = Arc::new(Mutex::new(Kept::new(keep)));
    let mut client_side = Counted::new(client_io, Arc::clone(&from_client));
    let idle = core.timeouts().body_idle;
    let mut server_side = Counted::new(
        WriteDeadline::new(server_io, idle, "the server", None),
        Arc::clone(&from_server),
    );
    let relayed = tokio::io::copy_bidirectional(&mut client_side, &mut server_side).await;
    let body = |kept: &Mutex<Kept>| kept.lock().unwrap_or_else(|p| p.into_inner()).body();
    let (client_body, server_body) = (body(&from_client), body(&from_server));
    recorder.update(|flow| {
        if let Some(tcp) = flow.tcp.as_mut() {
            tcp.from_client = client_body;
            tcp.from_server = server_body;
        }
        flow.timeline
            .mark(Milestone::ResponseComplete, Timestamp::now());
    });
    match relayed {
        Ok(_) => recorder.finish(),
        Err(error) => {
            let kind = match error.kind() {
                io::ErrorKind::TimedOut => FlowErrorKind::Timeout,
                _ => FlowErrorKind::Other,
            };
            recorder.finish_with_error(kind, format!("the TCP relay ended: {error}"));
        }
    }
}

/// One direction's bytes: all counted, the first `limit` kept.
struct Kept {
    bytes: BytesMut,
    size: u64,
    limit: usize,
}

impl Kept {
    fn new(limit: usize) -> Self {
        Kept {
            bytes: BytesMut::new(),
            size: 0,
            limit,
        }
    }

    fn add(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        let room = self.limit.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn body(&self) -> Body {
        let content = Bytes::copy_from_slice(&self.bytes);
        Body {
            truncated: (content.len() as u64) < self.size && self.limit > 0,
            content,
            size: self.size,
        }
    }
}

/// A stream whose reads are counted (and kept) as they pass.
struct Counted<S> {
    inner: S,
    kept: Arc<Mutex<Kept>>,
}

impl<S> Counted<S> {
    fn new(inner: S, kept: Arc<Mutex<Kept>>) -> Self {
        Counted { inner, kept }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = &buf.filled()[before..];
            if !fresh.is_empty() {
                self.kept
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(fresh);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_is_counted_and_the_first_ones_kept() {
        let mut kept = Kept::new(4);
        kept.add(b"abc");
        kept.add(b"defg");
        let body = kept.body();
        assert_eq!(
            (body.content.as_ref(), body.size, body.truncated),
            (&b"abcd"[..], 7, true)
        );
        let mut counted_only = Kept::new(0);
        counted_only.add(b"\x16\x03\x01");
        let body = counted_only.body();
        assert_eq!(
            (body.content.len(), body.size, body.truncated),
            (0, 3, false)
        );
    }
}
