//! Undoing `Content-Encoding`, so filters and views see the body the application
//! sent rather than its compressed wire form.
//!
//! ```
//! use periscope_flow::content::decode_body;
//!
//! // No encoding, or `identity`, costs nothing: the bytes are borrowed.
//! let plain = decode_body(Some("identity"), b"hello").unwrap();
//! assert_eq!(&*plain, b"hello");
//! // Unknown codings are named in the error rather than guessed at.
//! let err = decode_body(Some("gzip, snappy"), b"").unwrap_err();
//! assert!(err.to_string().contains("snappy"), "{err}");
//! ```
//!
//! Recorded bodies come from untrusted peers, so every decoder is bounded: a small
//! body that inflates past [`MAX_DECODED_SIZE`] is an error, not an allocation.

use std::borrow::Cow;
use std::io::Read;

use flate2::{Decompress, FlushDecompress, Status};

/// The most bytes one decoding step may produce. Far above any body a person reads
/// in a proxy, far below what would hurt the machine.
pub const MAX_DECODED_SIZE: usize = 64 * 1024 * 1024;

/// Why a body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// `Content-Encoding` named codings we do not know; all of them are listed.
    #[error("unknown content encoding: {}", .0.join(", "))]
    UnknownEncoding(Vec<String>),
    /// The bytes are not valid for the coding (or end before the stream does).
    #[error("{encoding} body is corrupt: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
    /// Decoding would produce more than the limit.
    #[error("{encoding} body decodes to more than {limit} bytes")]
    TooLarge {
        encoding: &'static str,
        limit: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn from_token(token: &str) -> Option<Coding> {
        const NAMES: [(&str, Coding); 6] = [
            ("identity", Coding::Identity),
            ("gzip", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("deflate", Coding::Deflate),
            ("br", Coding::Brotli),
            ("zstd", Coding::Zstd),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(token))
            .map(|&(_, coding)| coding)
    }

    fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// Decodes `bytes` sent with the given `Content-Encoding` header value.
///
/// Codings are listed in the order they were applied, so they are undone from the
/// last to the first. `None`, an empty value and `identity` return the input
/// borrowed. Each step may produce at most [`MAX_DECODED_SIZE`] bytes.
pub fn decode_body<'a>(
    content_encoding: Option<&str>,
    bytes: &'a [u8],
) -> Result<Cow<'a, [u8]>, DecodeError> {
    decode_body_with_limit(content_encoding, bytes, MAX_DECODED_SIZE)
}

/// [`decode_body`] with a caller-chosen bound on each step's output.
pub fn decode_body_with_limit<'a>(
    content_encoding: Option<&str>,
    bytes: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let tokens = content_encoding
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|token| !token.is_empty());
    // Check every name before decoding anything, so the error lists all unknown
    // codings at once and a typo never costs a decompression.
    let mut codings = Vec::new();
    let mut unknown = Vec::new();
    for token in tokens {
        match Coding::from_token(token) {
            Some(coding) => codings.push(coding),
            None => unknown.push(token.to_owned()),
        }
    }
    if !unknown.is_empty() {
        return Err(DecodeError::UnknownEncoding(unknown));
    }

    let mut body = Cow::Borrowed(bytes);
    for &coding in codings.iter().rev() {
        let decoded = match coding {
            Coding::Identity => continue,
            Coding::Gzip => decode_gzip(&body, limit)?,
            Coding::Deflate => decode_deflate(&body, limit)?,
            Coding::Brotli => decode_brotli(&body, limit)?,
            Coding::Zstd => decode_zstd(&body, limit)?,
        };
        body = Cow::Owned(decoded);
    }
    Ok(body)
}

/// Applies the codings of a `Content-Encoding` header value to `bytes`, first to
/// last: the inverse of [`decode_body`], for a body that was decoded to be changed
/// (a rule, a script, an edit) and must go on encoded as its headers say.
pub fn encode_body(content_encoding: Option<&str>, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    use std::io::Write;
    let mut codings = Vec::new();
    let mut unknown = Vec::new();
    for token in content_encoding
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|token| !token.is_empty())
    {
        match Coding::from_token(token) {
            Some(coding) => codings.push(coding),
            None => unknown.push(token.to_owned()),
        }
    }
    if !unknown.is_empty() {
        return Err(DecodeError::UnknownEncoding(unknown));
    }
    let mut body = bytes.to_vec();
    for coding in codings {
        let failed = |e: std::io::Error| corrupt(coding, e);
        body = match coding {
            Coding::Identity => continue,
            Coding::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(&body).map_err(failed)?;
                encoder.finish().map_err(failed)?
            }
            Coding::Deflate => {
                let mut encoder =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(&body).map_err(failed)?;
                encoder.finish().map_err(failed)?
            }
            Coding::Brotli => {
                let mut out = Vec::new();
                {
                    let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    encoder.write_all(&body).map_err(failed)?;
                }
                out
            }
            Coding::Zstd => zstd::encode_all(&body[..], 3).map_err(failed)?,
        };
    }
    Ok(body)
}

fn corrupt(coding: Coding, reason: impl ToString) -> DecodeError {
    DecodeError::Corrupt {
        encoding: coding.name(),
        reason: reason.to_string(),
    }
}

/// Appends `chunk` unless that would pass `limit`.
fn push_bounded(
    out: &mut Vec<u8>,
    chunk: &[u8],
    limit: usize,
    coding: Coding,
) -> Result<(), DecodeError> {
    if out.len().saturating_add(chunk.len()) > limit {
        return Err(DecodeError::TooLarge {
            encoding: coding.name(),
            limit,
        });
    }
    out.extend_from_slice(chunk);
    Ok(())
}

/// Drains a streaming decoder through a fixed buffer, so the output can never grow
/// past `limit` however much the stream claims to hold.
fn read_bounded(
    mut reader: impl Read,
    limit: usize,
    coding: Coding,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => push_bounded(&mut out, &buf[..n], limit, coding)?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(coding, e)),
        }
    }
}

fn decode_gzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    // RFC 1952 makes a gzip stream a series of members, and gzip(1) and browsers
    // decode them all; a single-member decoder would silently drop the rest.
    read_bounded(
        flate2::read::MultiGzDecoder::new(bytes),
        limit,
        Coding::Gzip,
    )
}

fn decode_deflate(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    // RFC 9110's "deflate" is zlib-wrapped, but some servers send raw deflate and
    // browsers accept it, so a body that is not valid zlib gets a second chance.
    match inflate(bytes, true, limit) {
        Ok(out) => Ok(out),
        Err(too_large @ DecodeError::TooLarge { .. }) => Err(too_large),
        Err(zlib_error) => inflate(bytes, false, limit).map_err(|raw_error| match raw_error {
            DecodeError::TooLarge { .. } => raw_error,
            _ => zlib_error,
        }),
    }
}

/// Inflates with `Decompress` directly rather than flate2's readers, because those
/// report a stream cut short as a clean end; here a missing end is an error.
fn inflate(bytes: &[u8], zlib_header: bool, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut decompress = Decompress::new(zlib_header);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let in_before = decompress.total_in();
        let out_before = decompress.total_out();
        // total_in never exceeds the input length, so the slice is in bounds.
        let consumed = usize::try_from(in_before)
            .unwrap_or(bytes.len())
            .min(bytes.len());
        let status = decompress
            .decompress(&bytes[consumed..], &mut buf, FlushDecompress::None)
            .map_err(|e| corrupt(Coding::Deflate, e))?;
        let produced = usize::try_from(decompress.total_out() - out_before).unwrap_or(buf.len());
        push_bounded(
            &mut out,
            &buf[..produced.min(buf.len())],
            limit,
            Coding::Deflate,
        )?;
        match status {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::BufError => {
                if produced == 0 && decompress.total_in() == in_before {
                    return Err(corrupt(
                        Coding::Deflate,
                        "stream ends before its final block",
                    ));
                }
            }
        }
    }
}

fn decode_brotli(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    read_bounded(
        brotli_decompressor::Decompressor::new(bytes, 64 * 1024),
        limit,
        Coding::Brotli,
    )
}

/// The largest zstd window we accept. RFC 9659 caps the window at 8 MiB for the
/// "zstd" content coding, as browsers do; without a cap a frame header alone could
/// make the decoder allocate 128 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

fn decode_zstd(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut decoder =
        zstd::stream::read::Decoder::new(bytes).map_err(|e| corrupt(Coding::Zstd, e))?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(|e| corrupt(Coding::Zstd, e))?;
    read_bounded(decoder, limit, Coding::Zstd)
}

#[cfg(test)]
mod tests {
    #[test]
    fn encoding_is_undone_by_decoding_for_every_coding_and_chain() {
        let text = b"{\"user\": \"alice\", \"padding\": \"aaaaaaaaaaaaaaaaaaaaaaaa\"}".repeat(20);
        for encoding in ["gzip", "deflate", "br", "zstd", "identity", "gzip, br", ""] {
            let encoded = super::encode_body(Some(encoding), &text).unwrap();
            if !matches!(encoding, "identity" | "") {
                assert_ne!(encoded, text, "{encoding}");
            }
            let decoded = decode_body(Some(encoding), &encoded).unwrap();
            assert_eq!(&*decoded, &text[..], "{encoding}");
        }
        assert!(matches!(
            super::encode_body(Some("snappy"), b"x"),
            Err(DecodeError::UnknownEncoding(_))
        ));
    }

    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog. \
        The quick brown fox jumps over the lazy dog.";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    #[test]
    fn no_encoding_and_identity_borrow_the_input() {
        for header in [None, Some(""), Some("identity"), Some(" Identity , ")] {
            let out = decode_body(header, TEXT).unwrap();
            assert!(matches!(out, Cow::Borrowed(_)), "{header:?}");
            assert_eq!(&*out, TEXT);
        }
    }

    #[test]
    fn gzip_and_x_gzip() {
        let encoded = gzip(TEXT);
        assert_eq!(&*decode_body(Some("gzip"), &encoded).unwrap(), TEXT);
        assert_eq!(&*decode_body(Some("x-gzip"), &encoded).unwrap(), TEXT);
        assert_eq!(&*decode_body(Some("GZIP"), &encoded).unwrap(), TEXT);
    }

    #[test]
    fn concatenated_gzip_members_are_one_body() {
        let mut encoded = gzip(b"first ");
        encoded.extend(gzip(b"second"));
        assert_eq!(
            &*decode_body(Some("gzip"), &encoded).unwrap(),
            b"first second"
        );
    }

    #[test]
    fn deflate_zlib_wrapped_and_raw() {
        assert_eq!(&*decode_body(Some("deflate"), &zlib(TEXT)).unwrap(), TEXT);
        assert_eq!(
            &*decode_body(Some("deflate"), &raw_deflate(TEXT)).unwrap(),
            TEXT
        );
    }

    #[test]
    fn brotli_and_zstd() {
        assert_eq!(&*decode_body(Some("br"), &brotli(TEXT)).unwrap(), TEXT);
        assert_eq!(&*decode_body(Some("zstd"), &zstd(TEXT)).unwrap(), TEXT);
    }

    #[test]
    fn empty_bodies_of_each_coding() {
        assert_eq!(&*decode_body(Some("gzip"), &gzip(b"")).unwrap(), b"");
        assert_eq!(&*decode_body(Some("deflate"), &zlib(b"")).unwrap(), b"");
        assert_eq!(&*decode_body(Some("br"), &brotli(b"")).unwrap(), b"");
        assert_eq!(&*decode_body(Some("zstd"), &zstd(b"")).unwrap(), b"");
    }

    #[test]
    fn stacked_codings_are_undone_last_first() {
        // "gzip, br": gzip was applied first, then br.
        let encoded = brotli(&gzip(TEXT));
        assert_eq!(&*decode_body(Some("gzip, br"), &encoded).unwrap(), TEXT);
        assert!(decode_body(Some("br, gzip"), &encoded).is_err());

        let encoded = zstd(&zlib(&gzip(TEXT)));
        let out = decode_body(Some("gzip,deflate , identity,zstd"), &encoded).unwrap();
        assert_eq!(&*out, TEXT);
    }

    #[test]
    fn unknown_codings_are_all_named() {
        let err = decode_body(Some("gzip, snappy, compress"), b"x").unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownEncoding(vec!["snappy".into(), "compress".into()])
        );
        assert_eq!(
            err.to_string(),
            "unknown content encoding: snappy, compress"
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 1024 * 1024];
        let limit = 100_000;
        let too_large = |encoding| DecodeError::TooLarge { encoding, limit };
        let cases = [
            ("gzip", gzip(&zeros), "gzip"),
            ("deflate", zlib(&zeros), "deflate"),
            ("deflate", raw_deflate(&zeros), "deflate"),
            ("br", brotli(&zeros), "br"),
            ("zstd", zstd(&zeros), "zstd"),
        ];
        for (header, encoded, name) in cases {
            assert!(encoded.len() < limit, "{header} should compress well");
            assert_eq!(
                decode_body_with_limit(Some(header), &encoded, limit),
                Err(too_large(name)),
                "{header}"
            );
            // At exactly the decoded size it is fine.
            let out = decode_body_with_limit(Some(header), &encoded, zeros.len()).unwrap();
            assert_eq!(out.len(), zeros.len());
        }
    }

    #[test]
    fn the_default_limit_stops_a_real_bomb() {
        // 80 MiB of zeros gzips to about 80 KiB.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![0u8; 1024 * 1024];
        for _ in 0..80 {
            e.write_all(&chunk).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 200 * 1024);
        assert_eq!(
            decode_body(Some("gzip"), &bomb),
            Err(DecodeError::TooLarge {
                encoding: "gzip",
                limit: MAX_DECODED_SIZE
            })
        );
    }

    #[test]
    fn zstd_windows_beyond_rfc_9659_are_refused() {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        e.write_all(TEXT).unwrap();
        let encoded = e.finish().unwrap();
        let result = decode_body(Some("zstd"), &encoded);
        assert!(
            matches!(
                result,
                Err(DecodeError::Corrupt {
                    encoding: "zstd",
                    ..
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn garbage_is_an_error_for_every_coding() {
        let garbage = b"this is not compressed at all, not even a little \xff\xfe\x00";
        for header in ["gzip", "deflate", "br", "zstd"] {
            let result = decode_body(Some(header), garbage);
            assert!(
                matches!(result, Err(DecodeError::Corrupt { .. })),
                "{header}: {result:?}"
            );
        }
    }

    #[test]
    fn truncated_streams_are_errors() {
        let long: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let cases = [
            ("gzip", gzip(&long)),
            ("deflate", zlib(&long)),
            ("deflate", raw_deflate(&long)),
            ("br", brotli(&long)),
            ("zstd", zstd(&long)),
        ];
        for (header, encoded) in cases {
            let cut = &encoded[..encoded.len() / 2];
            let result = decode_body(Some(header), cut);
            assert!(
                matches!(result, Err(DecodeError::Corrupt { .. })),
                "{header}: {result:?}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and a few bit flips of valid streams.
        let streams = [
            ("gzip", gzip(TEXT)),
            ("deflate", zlib(TEXT)),
            ("deflate", raw_deflate(TEXT)),
            ("br", brotli(TEXT)),
            ("zstd", zstd(TEXT)),
        ];
        for (header, encoded) in &streams {
            for end in 0..encoded.len() {
                let _ = decode_body(Some(header), &encoded[..end]);
            }
            for i in 0..encoded.len() {
                let mut flipped = encoded.clone();
                flipped[i] ^= 0x55;
                let _ = decode_body(Some(header), &flipped);
            }
        }
    }
}
