//! The byte stream an exchange turns into: an HTTP/1.1 connection after
//! `101 Switching Protocols`, or an HTTP/2 stream after a 2xx to (extended) CONNECT.
//! The relays of tunnels and WebSockets take either.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http2::H2UpgradeSlot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub trait UpgradedIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpgradedIo for T {}

pub type Upgraded = Box<dyn UpgradedIo>;

/// Resolves to the stream once the answer that opens it has gone out.
pub struct PendingUpgrade(Pin<Box<dyn Future<Output = Result<Upgraded, BoxError>> + Send>>);

impl PendingUpgrade {
    /// The stream hyper hands over after an HTTP/1.1 upgrade.
    pub fn http1(on: hyper::upgrade::OnUpgrade) -> Self {
        PendingUpgrade(Box::pin(async move {
            let upgraded = on.await?;
            Ok(Box::new(TokioIo::new(upgraded)) as Upgraded)
        }))
    }

    /// A stream that is open already (a server's HTTP/2 CONNECT stream).
    pub fn ready(io: impl UpgradedIo + 'static) -> Self {
        let io: Upgraded = Box::new(io);
        PendingUpgrade(Box::pin(async move { Ok(io) }))
    }

    /// The client's side of `request`: its HTTP/2 stream when it came on one, else
    /// the HTTP/1.1 connection.
    pub fn of_request<B>(request: &mut Request<B>) -> Self {
        if let Some(slot) = request.extensions().get::<H2UpgradeSlot>() {
            let receiver = slot.take();
            return PendingUpgrade(Box::pin(async move {
                let Some(receiver) = receiver else {
                    return Err("the HTTP/2 stream was taken already".into());
                };
                let stream = receiver
                    .await
                    .map_err(|_| "the HTTP/2 stream closed before it was answered")?;
                Ok(Box::new(stream) as Upgraded)
            }));
        }
        PendingUpgrade::http1(hyper::upgrade::on(request))
    }
}

impl Future for PendingUpgrade {
    type Output = Result<Upgraded, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().0.as_mut().poll(cx)
    }
}
