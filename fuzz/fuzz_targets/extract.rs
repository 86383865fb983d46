//! Field extraction reads any body a peer can send. It must never panic, it must agree with
//! serde_json on what is JSON, and a byte-order mark in front must change nothing it finds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voltd::receiver::extract::extract;

fuzz_target!(|body: &[u8]| {
    let (fields, is_json) = extract(body);
    if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        assert!(is_json, "serde_json reads this body, extraction must too");
    }
    // One mark is skipped, as senders put one there; a second would be part of the body.
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    if !body.starts_with(BOM) {
        assert_eq!(extract(&[BOM, body].concat()), (fields, is_json));
    }
});
