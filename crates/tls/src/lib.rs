//! Periscope's TLS layer: the CA and its leaf certificates, OpenSSL contexts for both
//! legs, the async TLS stream, and the capture of post-handshake events.

pub mod ca;
