//! Bodies compressed as a sender would, for the tests of `Content-Encoding` support.

use std::io::Write;

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};

/// `data` compressed as `coding` says: `gzip`, `deflate` (zlib, as HTTP defines it),
/// `raw-deflate` (what some senders send as deflate) or `br`.
pub fn compressed(coding: &str, data: &[u8]) -> Vec<u8> {
    fn written<W: Write>(mut encoder: W, data: &[u8]) -> W {
        encoder.write_all(data).expect("compress in memory");
        encoder
    }
    let level = Compression::default();
    match coding {
        "gzip" => written(GzEncoder::new(Vec::new(), level), data).finish(),
        "deflate" => written(ZlibEncoder::new(Vec::new(), level), data).finish(),
        "raw-deflate" => written(DeflateEncoder::new(Vec::new(), level), data).finish(),
        "br" => {
            return written(brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22), data)
                .into_inner();
        }
        other => panic!("no encoder for {other:?}"),
    }
    .expect("compress in memory")
}
