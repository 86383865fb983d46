//! Checking any `X-Respond-Flow-Signature` value against any body never panics, and nothing
//! but a real signature is ever `Valid`.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use voltd::event::Verdict;
use voltd::volt::signature::{VoltPublicKey, verify};
use voltd_fuzz::split_header;

/// A key whose private half is nowhere: no fuzzed header can be a real signature by it.
static KEY: LazyLock<VoltPublicKey> = LazyLock::new(|| {
    VoltPublicKey::parse(include_str!("../keys/id_rsa.pub")).expect("the fuzzing key parses")
});

fuzz_target!(|input: &[u8]| {
    let (header, body) = split_header(input);
    let verdict = verify(&KEY, Some(header), body);
    assert_ne!(verdict, Verdict::Valid);
    if header.trim_ascii().is_empty() {
        assert_eq!(verdict, Verdict::Missing);
    }
});
