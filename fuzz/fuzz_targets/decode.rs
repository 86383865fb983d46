//! `Content-Encoding` decoding of any header and body: never a panic, never more than the
//! limit; a body sent as it is comes back unchanged, and a gzipped one decodes to itself.
#![no_main]

use std::io::Write as _;

use flate2::{Compression, write::GzEncoder};
use libfuzzer_sys::fuzz_target;
use voltd::receiver::decode::{Coding, DecodeError, codings, decode};
use voltd_fuzz::split_header;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|input: &[u8]| {
    let (header, body) = split_header(input);
    if let Ok(codings) = codings(header)
        && let Ok(decoded) = decode(body.to_vec(), &codings, LIMIT)
    {
        assert!(decoded.len() <= LIMIT, "decoded {} bytes", decoded.len());
        if codings.is_empty() {
            assert_eq!(decoded, body);
        }
    }

    let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
    gzip.write_all(body).unwrap();
    let compressed = gzip.finish().unwrap();
    match decode(compressed, &[Coding::Gzip], LIMIT) {
        Ok(decoded) => assert_eq!(decoded, body),
        Err(DecodeError::TooLarge) => assert!(body.len() > LIMIT),
        Err(error) => panic!("gzip of {} bytes did not decode: {error}", body.len()),
    }
});
