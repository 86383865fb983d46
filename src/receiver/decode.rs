//! `Content-Encoding`: gzip, deflate and br bodies are decoded before anything reads them.
//!
//! The stored body is the decoded entity, so that extraction, deduplication (a compressed
//! repeat of a plain delivery has the same body hash), the signature check and every reader
//! of the store see the event itself; the header's value is stored beside it. The size limit
//! applies to the decoded size, counted while decoding: a small bomb that expands to gigabytes
//! stops at `max_body_bytes` + 1 bytes.
//!
//! actix-web's own decompression (its `compress-*` features) was not used: it decodes inside
//! the payload stream, where the limit can only be put on what comes out in chunks of the
//! stream, and it would also turn on response compression, which the endpoint does not want.

use std::io::{self, Read};

use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

/// The codings voltd reads, as `Content-Encoding` names them.
pub const SUPPORTED: &str = "gzip, deflate or br";

/// Brotli's decoder works through a buffer of this size.
const BROTLI_BUFFER_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Brotli => "br",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The coding named (shortened, made printable by the caller).
    #[error("Content-Encoding {0:?} is not supported; send {SUPPORTED}, or no Content-Encoding")]
    Unsupported(String),
    #[error("the decoded body is over max_body_bytes")]
    TooLarge,
    #[error("the body is not valid {coding}")]
    Corrupt {
        coding: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The codings a `Content-Encoding` value lists, in the order the sender applied them;
/// `identity` (and an empty value) means none. `x-gzip` is gzip's old name (RFC 9110 8.4.1.3).
pub fn codings(header: &[u8]) -> Result<Vec<Coding>, DecodeError> {
    let unsupported = || DecodeError::Unsupported(String::from_utf8_lossy(header).into_owned());
    let text = std::str::from_utf8(header).map_err(|_| unsupported())?;
    let mut codings = Vec::new();
    for name in text.split(',').map(str::trim) {
        match name.to_ascii_lowercase().as_str() {
            "" | "identity" => {}
            "gzip" | "x-gzip" => codings.push(Coding::Gzip),
            "deflate" => codings.push(Coding::Deflate),
            "br" => codings.push(Coding::Brotli),
            _ => return Err(unsupported()),
        }
    }
    Ok(codings)
}

/// How the stored event records its codings: their names as the header gave them, in order,
/// `None` for a body sent as it is.
pub fn recorded(codings: &[Coding]) -> Option<String> {
    (!codings.is_empty()).then(|| {
        codings
            .iter()
            .map(|coding| coding.name())
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Undo `codings` (the last applied first), never producing more than `limit` bytes.
pub fn decode(body: Vec<u8>, codings: &[Coding], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut body = body;
    for &coding in codings.iter().rev() {
        let input = body.as_slice();
        let decoder: Box<dyn Read + '_> = match coding {
            Coding::Gzip => Box::new(MultiGzDecoder::new(input)),
            // HTTP's "deflate" is the zlib format (RFC 9110 8.4.1.2), but some senders send
            // raw deflate data, as browsers have long accepted.
            Coding::Deflate if is_zlib(input) => Box::new(ZlibDecoder::new(input)),
            Coding::Deflate => Box::new(DeflateDecoder::new(input)),
            Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(
                input,
                BROTLI_BUFFER_BYTES,
            )),
        };
        let mut decoded = Vec::new();
        decoder
            .take(limit as u64 + 1)
            .read_to_end(&mut decoded)
            .map_err(|source| DecodeError::Corrupt {
                coding: coding.name(),
                source,
            })?;
        if decoded.len() > limit {
            return Err(DecodeError::TooLarge);
        }
        body = decoded;
    }
    Ok(body)
}

/// A zlib header: compression method 8 and a check value that makes it a multiple of 31.
fn is_zlib(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::encoding::compressed;

    const EVENT: &[u8] = br#"{"eventType":"message.received","id":"m1"}"#;

    #[test]
    fn each_coding_is_decoded() {
        for (header, coding) in [
            ("gzip", "gzip"),
            ("x-gzip", "gzip"),
            ("deflate", "deflate"),
            ("deflate", "raw-deflate"),
            ("br", "br"),
        ] {
            let codings = codings(header.as_bytes()).unwrap();
            let body = compressed(coding, EVENT);
            assert_eq!(decode(body, &codings, 1024).unwrap(), EVENT, "{coding}");
        }
    }

    #[test]
    fn codings_are_undone_last_first() {
        let codings = codings(b"br, GZIP").unwrap();
        assert_eq!(codings, [Coding::Brotli, Coding::Gzip]);
        assert_eq!(recorded(&codings).as_deref(), Some("br, gzip"));
        let body = compressed("gzip", &compressed("br", EVENT));
        assert_eq!(decode(body, &codings, 1024).unwrap(), EVENT);
    }

    #[test]
    fn identity_is_no_coding_and_others_are_refused() {
        assert!(codings(b"identity").unwrap().is_empty());
        assert!(codings(b"").unwrap().is_empty());
        assert_eq!(recorded(&[]), None);
        for header in [&b"compress"[..], b"zstd", b"gzip, lzma", b"\xff"] {
            assert!(matches!(codings(header), Err(DecodeError::Unsupported(_))));
        }
    }

    #[test]
    fn the_limit_is_on_the_decoded_size() {
        let zeros = vec![0u8; 1 << 20];
        let bomb = compressed("gzip", &zeros);
        assert!(bomb.len() < 4096);
        assert!(matches!(
            decode(bomb.clone(), &[Coding::Gzip], (1 << 20) - 1),
            Err(DecodeError::TooLarge)
        ));
        assert_eq!(
            decode(bomb, &[Coding::Gzip], 1 << 20).unwrap().len(),
            1 << 20
        );
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut body = compressed("gzip", EVENT);
        body.truncate(body.len() / 2);
        for (data, coding) in [
            (body, Coding::Gzip),
            (b"not brotli".to_vec(), Coding::Brotli),
            (b"not deflate".to_vec(), Coding::Deflate),
        ] {
            assert!(matches!(
                decode(data, &[coding], 1024),
                Err(DecodeError::Corrupt { .. })
            ));
        }
    }
}
