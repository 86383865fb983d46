//! What the fuzz targets share.

/// Splits an input into a header's value (up to the first newline) and a body (the rest), so
/// that the seeds of targets that take both can be written by hand.
pub fn split_header(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&byte| byte == b'\n') {
        Some(end) => (&input[..end], &input[end + 1..]),
        None => (input, &[]),
    }
}
