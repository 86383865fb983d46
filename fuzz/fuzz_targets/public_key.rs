//! Parsing any text as Volt's public key (OpenSSH line, SPKI or PKCS#1 PEM) never panics, and
//! a key it accepts survives the round trip through its own `ssh-rsa` line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voltd::volt::signature::VoltPublicKey;

fuzz_target!(|text: &str| {
    if let Ok(key) = VoltPublicKey::parse(text) {
        let line = key.to_openssh_line();
        let again = VoltPublicKey::parse(&line)
            .unwrap_or_else(|error| panic!("{line:?} does not parse back: {error}"));
        assert_eq!(again, key);
        assert_eq!(again.fingerprint(), key.fingerprint());
    }
});
