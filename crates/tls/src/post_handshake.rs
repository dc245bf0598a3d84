//! Post-handshake messages on demand, for whoever holds a connection: renegotiate,
//! update keys, ask for a certificate after a TLS 1.3 handshake, change what the next
//! handshake asks of the peer.
//!
//! The `openssl` crate binds none of these. [`PostHandshake`] adds them to OpenSSL's
//! blocking `SslStream` (the scripted servers of the tests) and to Periscope's
//! [`TlsStream`] as safe methods: they take `&mut self`, so nobody else is using the
//! connection meanwhile, and the trait is sealed, so no other type can claim to wrap
//! an `SSL`.
//!
//! ```no_run
//! use periscope_tls::PostHandshake;
//! # fn server(mut stream: openssl::ssl::SslStream<std::net::TcpStream>) -> Result<(), Box<dyn std::error::Error>> {
//! stream.set_verify_mode(openssl::ssl::SslVerifyMode::PEER);
//! stream.renegotiate()?;
//! stream.do_handshake()?; // writes the HelloRequest
//! # Ok(()) }
//! ```

use openssl::error::ErrorStack;
use openssl::ssl::{SslContextBuilder, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::ffi;
use crate::stream::TlsStream;

/// Post-handshake operations on a TLS connection this side holds exclusively.
pub trait PostHandshake: sealed::Sealed {
    /// Schedules a TLS 1.2 renegotiation: a server sends its HelloRequest on the next
    /// `do_handshake` (or write), a client its ClientHello. Fails on TLS 1.3 and when
    /// renegotiation is switched off.
    fn renegotiate(&mut self) -> Result<(), ErrorStack>;

    /// True while a renegotiation this side asked for has not completed.
    fn renegotiation_pending(&self) -> bool;

    /// Schedules a TLS 1.3 KeyUpdate, sent with the next write; `request_peer_update`
    /// asks the peer to update its keys too. Fails before TLS 1.3 is established.
    fn key_update(&mut self, request_peer_update: bool) -> Result<(), ErrorStack>;

    /// As a TLS 1.3 server, schedules a post-handshake CertificateRequest (the client
    /// must have offered post-handshake authentication).
    fn request_post_handshake_certificate(&mut self) -> Result<(), ErrorStack>;

    /// Changes whether (and how strictly) the next handshake asks the peer for a
    /// certificate, keeping the verification callback the context set.
    fn set_verify_mode(&mut self, mode: SslVerifyMode);
}

impl<S> PostHandshake for openssl::ssl::SslStream<S> {
    fn renegotiate(&mut self) -> Result<(), ErrorStack> {
        ffi::renegotiate(self)
    }

    fn renegotiation_pending(&self) -> bool {
        ffi::renegotiation_pending(self.ssl())
    }

    fn key_update(&mut self, request_peer_update: bool) -> Result<(), ErrorStack> {
        ffi::key_update(self, request_peer_update)
    }

    fn request_post_handshake_certificate(&mut self) -> Result<(), ErrorStack> {
        ffi::request_post_handshake_certificate(self)
    }

    fn set_verify_mode(&mut self, mode: SslVerifyMode) {
        ffi::set_verify_mode(self, mode)
    }
}

impl<S: AsyncRead + AsyncWrite> PostHandshake for TlsStream<S> {
    fn renegotiate(&mut self) -> Result<(), ErrorStack> {
        ffi::renegotiate(self)
    }

    fn renegotiation_pending(&self) -> bool {
        ffi::renegotiation_pending(self.ssl())
    }

    fn key_update(&mut self, request_peer_update: bool) -> Result<(), ErrorStack> {
        ffi::key_update(self, request_peer_update)
    }

    fn request_post_handshake_certificate(&mut self) -> Result<(), ErrorStack> {
        ffi::request_post_handshake_certificate(self)
    }

    fn set_verify_mode(&mut self, mode: SslVerifyMode) {
        ffi::set_verify_mode(self, mode)
    }
}

/// Makes every client connection of `builder` offer TLS 1.3 post-handshake
/// authentication, as curl and browsers do (Apache answers 403 to clients that do
/// not when a location asks for a certificate).
pub fn offer_post_handshake_auth(builder: &mut SslContextBuilder) {
    ffi::enable_post_handshake_auth(builder);
}

mod sealed {
    pub trait Sealed {}

    impl<S> Sealed for openssl::ssl::SslStream<S> {}
    impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite> Sealed for crate::stream::TlsStream<S> {}
}
