//! Reading the client's ClientHello before answering it: its SNI decides which leaf
//! certificate to mint and which server name to verify upstream, its ALPN list is
//! what we offer the server, and its groups say whether to offer post-quantum key
//! exchange.

use bytes::BytesMut;
use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_message_handshake, SNIType, TlsExtension,
    TlsMessage, TlsMessageHandshake,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A ClientHello can legitimately span several records (post-quantum key shares), but
/// nothing real needs more than this.
const MAX_CLIENT_HELLO: usize = 64 * 1024;
const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
    /// The client offered a post-quantum key-exchange group, hybrid or pure ML-KEM.
    pub post_quantum: bool,
}

/// The post-quantum groups clients offer, the same set `key_exchange::is_post_quantum`
/// recognises by name: the hybrids X25519MLKEM768, SecP256r1MLKEM768 and
/// SecP384r1MLKEM1024, pure MLKEM512, MLKEM768 and MLKEM1024 (IANA), and the
/// X25519Kyber768 draft that Chrome sent in 2024.
const POST_QUANTUM_GROUPS: [u16; 7] = [0x11EC, 0x11EB, 0x11ED, 0x0200, 0x0201, 0x0202, 0x6399];

#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum ClientHelloError {
    #[error("the client closed the connection before sending a complete ClientHello")]
    Truncated,
    #[error("the ClientHello is larger than {MAX_CLIENT_HELLO} bytes")]
    TooLarge,
    #[error("not a TLS ClientHello: {0}")]
    Invalid(String),
    #[error("reading the ClientHello failed: {0}")]
    Io(String),
}

/// True when `first` starts a TLS handshake record.
pub fn looks_like_tls(first: &[u8]) -> bool {
    first.first() == Some(&CONTENT_HANDSHAKE)
}

/// Reads from `stream` into `buffer` (which may already hold bytes) until a whole
/// ClientHello is there. The bytes stay in `buffer`, to be replayed to OpenSSL.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Result<ClientHello, ClientHelloError> {
    loop {
        if let Some(hello) = parse_client_hello(buffer)? {
            return Ok(hello);
        }
        if buffer.len() >= MAX_CLIENT_HELLO {
            return Err(ClientHelloError::TooLarge);
        }
        buffer.reserve(4096);
        let read = stream
            .read_buf(buffer)
            .await
            .map_err(|e| ClientHelloError::Io(e.to_string()))?;
        if read == 0 {
            return Err(ClientHelloError::Truncated);
        }
    }
}

/// Parses a ClientHello from the start of `data`; `Ok(None)` means "need more bytes".
pub fn parse_client_hello(data: &[u8]) -> Result<Option<ClientHello>, ClientHelloError> {
    let mut handshake = Vec::new();
    let mut rest = data;
    loop {
        if rest.len() < RECORD_HEADER {
            return Ok(None);
        }
        if rest[0] != CONTENT_HANDSHAKE {
            return Err(ClientHelloError::Invalid(format!(
                "record type {:#04x} where a handshake record was expected",
                rest[0]
            )));
        }
        if rest[1] != 3 {
            return Err(ClientHelloError::Invalid(format!(
                "record version {}.{}",
                rest[1], rest[2]
            )));
        }
        let length = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if length == 0 {
            return Err(ClientHelloError::Invalid("empty handshake record".into()));
        }
        let Some(fragment) = rest.get(RECORD_HEADER..RECORD_HEADER + length) else {
            return Ok(None);
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[RECORD_HEADER + length..];
        if handshake.len() >= 4 {
            if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(ClientHelloError::Invalid(format!(
                    "handshake message type {} instead of ClientHello",
                    handshake[0]
                )));
            }
            let message_length = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if message_length + 4 > MAX_CLIENT_HELLO {
                return Err(ClientHelloError::TooLarge);
            }
            if handshake.len() >= message_length + 4 {
                return interpret(&handshake[..message_length + 4]).map(Some);
            }
        }
    }
}

fn interpret(message: &[u8]) -> Result<ClientHello, ClientHelloError> {
    let hello = match parse_tls_message_handshake(message) {
        Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) => hello,
        Ok(_) => return Err(ClientHelloError::Invalid("not a ClientHello".into())),
        Err(e) => {
            return Err(ClientHelloError::Invalid(format!(
                "malformed ClientHello ({e})"
            )))
        }
    };
    let mut result = ClientHello::default();
    let Some(extensions) = hello.ext else {
        return Ok(result);
    };
    let (_, extensions) = parse_tls_client_hello_extensions(extensions)
        .map_err(|e| ClientHelloError::Invalid(format!("malformed extensions ({e})")))?;
    for extension in extensions {
        match extension {
            TlsExtension::SNI(names) => {
                result.sni = names
                    .iter()
                    .find(|(kind, _)| *kind == SNIType::HostName)
                    .and_then(|(_, name)| std::str::from_utf8(name).ok())
                    .map(|name| name.trim_end_matches('.').to_ascii_lowercase());
            }
            TlsExtension::ALPN(protocols) => {
                result.alpn = protocols.iter().map(|p| p.to_vec()).collect();
            }
            TlsExtension::EllipticCurves(groups) => {
                result.post_quantum = groups
                    .iter()
                    .any(|group| POST_QUANTUM_GROUPS.contains(&group.0));
            }
            _ => {}
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello, produced by OpenSSL for SNI "example.com" and ALPN h2 +
    /// http/1.1, split and mangled below.
    fn openssl_client_hello() -> Vec<u8> {
        openssl_client_hello_with_groups("X25519:P-256")
    }

    fn openssl_client_hello_with_groups(groups: &'static str) -> Vec<u8> {
        use openssl::ssl::{SslConnector, SslMethod};
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
            builder.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
            builder.set_groups_list(groups).unwrap();
            let connector = builder.build();
            let stream = TcpStream::connect(address).unwrap();
            // The handshake fails once the server side closes; only the hello matters.
            let _ = connector.connect("example.com", stream);
        });
        let (mut server, _) = listener.accept().unwrap();
        let mut data = vec![0u8; 16384];
        let mut filled = 0;
        loop {
            let n = server.read(&mut data[filled..]).unwrap();
            filled += n;
            if n == 0 || parse_client_hello(&data[..filled]).unwrap().is_some() {
                break;
            }
        }
        server.flush().unwrap();
        drop(server);
        client.join().unwrap();
        data.truncate(filled);
        data
    }

    #[test]
    fn a_post_quantum_group_among_the_supported_groups_is_noticed() {
        let classic = openssl_client_hello_with_groups("X25519:P-256");
        assert!(!parse_client_hello(&classic).unwrap().unwrap().post_quantum);
        // The same hello with X25519 (0x001d) in supported_groups renamed
        // X25519MLKEM768 (0x11ec): same length, whatever this OpenSSL can offer.
        let groups = [0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17];
        let at = classic
            .windows(groups.len())
            .position(|w| w == groups)
            .expect("supported_groups: X25519, P-256");
        let mut hybrid = classic.clone();
        hybrid[at + 6..at + 8].copy_from_slice(&[0x11, 0xec]);
        assert!(parse_client_hello(&hybrid).unwrap().unwrap().post_quantum);
        // Pure MLKEM768 (0x0201), which OpenSSL 3.5 on offers when asked to.
        let mut pure = classic.clone();
        pure[at + 6..at + 8].copy_from_slice(&[0x02, 0x01]);
        assert!(parse_client_hello(&pure).unwrap().unwrap().post_quantum);
    }

    #[test]
    fn sni_and_alpn_are_read_from_a_real_client_hello() {
        let hello = parse_client_hello(&openssl_client_hello())
            .unwrap()
            .unwrap();
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn every_prefix_of_a_client_hello_asks_for_more_bytes() {
        let bytes = openssl_client_hello();
        for end in 0..bytes.len() {
            assert_eq!(
                parse_client_hello(&bytes[..end]),
                Ok(None),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn a_client_hello_split_across_records_is_reassembled() {
        let bytes = openssl_client_hello();
        let body = &bytes[RECORD_HEADER..];
        let (first, second) = body.split_at(body.len() / 2);
        let mut split = Vec::new();
        for part in [first, second] {
            split.extend_from_slice(&[0x16, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        let hello = parse_client_hello(&split).unwrap().unwrap();
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
    }

    #[test]
    fn garbage_is_rejected_not_waited_for() {
        assert!(matches!(
            parse_client_hello(b"GET / HTTP/1.1\r\n\r\n"),
            Err(ClientHelloError::Invalid(_))
        ));
        assert!(matches!(
            parse_client_hello(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
            Err(ClientHelloError::Invalid(_))
        ));
        assert!(matches!(
            parse_client_hello(&[0x16, 3, 1, 0, 0]),
            Err(ClientHelloError::Invalid(_))
        ));
        let mut corrupt = openssl_client_hello();
        // Claim a longer extension block than the message holds.
        let len = corrupt.len();
        corrupt[len - 3] = 0xff;
        let _ = parse_client_hello(&corrupt); // must not panic
    }
}
