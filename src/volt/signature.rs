//! Checking the `X-Respond-Flow-Signature` header Volt puts on each webhook.
//!
//! Volt says only that the header is an RSA signature verifiable with the public key it
//! publishes as `id_rsa.pub`; hash, padding, encoding and signed content are undocumented.
//! This module implements the most common reading: RSA PKCS#1 v1.5 over the SHA-256 of the
//! exact raw request body, base64-encoded. The whole scheme lives here so that it can be
//! corrected in one place once a real signed request has been captured.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD_NO_PAD};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BoxedUint, Pkcs1v15Sign, PublicKey};
use sha2::{Digest as _, Sha256};

use crate::event::Verdict;

pub const SIGNATURE_HEADER: &str = "X-Respond-Flow-Signature";

const OPENSSH_RSA: &str = "ssh-rsa";

/// What a key file should contain, appended to every parse error so the operator knows the fix.
const EXPECTED_KEY: &str = "expected Volt's published id_rsa.pub (an `ssh-rsa AAAA...` line) \
                            or an RSA public key in PEM form";

// Volt does not say which base64 flavour it sends; accepting all of them costs nothing,
// because the flavour carries no security meaning: only the decoded bytes are checked.
const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "cannot read the Volt public key file {} (save Volt's published id_rsa.pub there, \
         readable by voltd)",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Volt public key file {} is unusable", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<KeyError>,
    },
    #[error("the key is empty; {EXPECTED_KEY}")]
    Empty,
    #[error("the key is of type `{algorithm}`, not RSA; {EXPECTED_KEY}")]
    NotRsa { algorithm: String },
    #[error("the PEM block is a `{label}`, not a public key; {EXPECTED_KEY}")]
    UnsupportedPem { label: String },
    #[error("the OpenSSH key is malformed ({problem}); {EXPECTED_KEY}")]
    MalformedOpenSsh { problem: &'static str },
    #[error("the PEM public key is not a usable RSA key; {EXPECTED_KEY}")]
    Spki(#[source] rsa::pkcs8::spki::Error),
    #[error("the PEM RSA public key is malformed; {EXPECTED_KEY}")]
    Pkcs1(#[source] rsa::pkcs1::Error),
    #[error("the RSA key was rejected: modulus or exponent out of range (1024 to 8192 bits)")]
    Rejected(#[source] rsa::Error),
}

/// Volt's RSA public key, ready to check webhook signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoltPublicKey(PublicKey);

impl VoltPublicKey {
    /// Accepts an OpenSSH public key line (`ssh-rsa AAAA... comment`, as in `id_rsa.pub`),
    /// a PEM `BEGIN PUBLIC KEY` (SPKI) or a PEM `BEGIN RSA PUBLIC KEY` (PKCS#1).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some(rest) = text.strip_prefix("-----BEGIN ") {
            let label = rest.split("-----").next().unwrap_or_default();
            return match label {
                "PUBLIC KEY" => PublicKey::from_public_key_pem(text)
                    .map(Self)
                    .map_err(KeyError::Spki),
                "RSA PUBLIC KEY" => PublicKey::from_pkcs1_pem(text)
                    .map(Self)
                    .map_err(KeyError::Pkcs1),
                other => Err(KeyError::UnsupportedPem {
                    label: other.to_owned(),
                }),
            };
        }
        parse_openssh_line(text).map(Self)
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| KeyError::InFile {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    pub fn bits(&self) -> usize {
        self.0.size() * 8
    }

    /// The same `SHA256:...` fingerprint `ssh-keygen -l` prints, so an operator can compare
    /// the loaded key with the one Volt publishes, whatever file format it came in.
    pub fn fingerprint(&self) -> String {
        let mut fingerprint = String::from("SHA256:");
        STANDARD_NO_PAD.encode_string(Sha256::digest(self.openssh_blob()), &mut fingerprint);
        fingerprint
    }

    /// The `ssh-rsa AAAA...` line for this key, as `id_rsa.pub` would hold it.
    pub fn to_openssh_line(&self) -> String {
        format!("{OPENSSH_RSA} {}", STANDARD.encode(self.openssh_blob()))
    }

    fn openssh_blob(&self) -> Vec<u8> {
        let mut blob = Vec::new();
        put_ssh_string(&mut blob, OPENSSH_RSA.as_bytes());
        put_ssh_mpint(&mut blob, &self.0.e_bytes());
        put_ssh_mpint(&mut blob, &self.0.n_bytes());
        blob
    }
}

/// Verify a header value (`None` when absent) against the raw body.
///
/// An empty value counts as missing: it carries no signature to judge. Anything else that
/// does not verify, including undecodable text, is `Invalid`; this never panics on input.
pub fn verify(key: &VoltPublicKey, header: Option<&[u8]>, body: &[u8]) -> Verdict {
    let Some(value) = header.map(<[u8]>::trim_ascii) else {
        return Verdict::Missing;
    };
    if value.is_empty() {
        return Verdict::Missing;
    }
    let Some(signature) = decode_signature(value) else {
        return Verdict::Invalid;
    };
    let digest = Sha256::digest(body);
    match key
        .0
        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
    {
        Ok(()) => Verdict::Valid,
        Err(_) => Verdict::Invalid,
    }
}

fn decode_signature(value: &[u8]) -> Option<Vec<u8>> {
    STANDARD_ANY_PADDING
        .decode(value)
        .or_else(|_| URL_SAFE_ANY_PADDING.decode(value))
        .ok()
}

/// Parses the first key line of an OpenSSH public key file (RFC 4253 §6.6 wire format).
///
/// Hand-parsed rather than through the `ssh-key` crate: its release built on the same `rsa`
/// as this crate is still a release candidate, and the stable one pulls in a second, older
/// RSA and big-integer stack. The format is three length-prefixed fields; all arithmetic
/// and validation of the numbers stays in `rsa`.
fn parse_openssh_line(text: &str) -> Result<PublicKey, KeyError> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .ok_or(KeyError::Empty)?;
    let mut fields = line.split_ascii_whitespace();
    let algorithm = fields.next().unwrap_or_default();
    if algorithm != OPENSSH_RSA {
        return Err(KeyError::NotRsa {
            algorithm: algorithm.chars().take(40).collect(),
        });
    }
    let encoded = fields.next().ok_or(KeyError::MalformedOpenSsh {
        problem: "no key data after `ssh-rsa`",
    })?;
    let blob = STANDARD_ANY_PADDING
        .decode(encoded)
        .map_err(|_| KeyError::MalformedOpenSsh {
            problem: "key data is not base64",
        })?;

    let mut reader = SshReader(&blob);
    if reader.string()? != OPENSSH_RSA.as_bytes() {
        return Err(KeyError::MalformedOpenSsh {
            problem: "key data does not match its `ssh-rsa` type",
        });
    }
    let e = reader.positive_mpint()?;
    let n = reader.positive_mpint()?;
    if !reader.0.is_empty() {
        return Err(KeyError::MalformedOpenSsh {
            problem: "trailing bytes after the modulus",
        });
    }
    PublicKey::new(
        BoxedUint::from_be_slice_vartime(n),
        BoxedUint::from_be_slice_vartime(e),
    )
    .map_err(KeyError::Rejected)
}

struct SshReader<'a>(&'a [u8]);

impl<'a> SshReader<'a> {
    fn string(&mut self) -> Result<&'a [u8], KeyError> {
        let (length, rest) = self.0.split_first_chunk::<4>().ok_or_else(truncated)?;
        let length = usize::try_from(u32::from_be_bytes(*length)).map_err(|_| {
            KeyError::MalformedOpenSsh {
                problem: "field length out of range",
            }
        })?;
        if rest.len() < length {
            return Err(truncated());
        }
        let (field, rest) = rest.split_at(length);
        self.0 = rest;
        Ok(field)
    }

    /// An mpint is two's complement; RSA components are positive, so a set top bit is an
    /// error rather than a sign to interpret. Leading zeros are dropped for `BoxedUint`.
    fn positive_mpint(&mut self) -> Result<&'a [u8], KeyError> {
        let bytes = self.string()?;
        if bytes.first().is_some_and(|first| first & 0x80 != 0) {
            return Err(KeyError::MalformedOpenSsh {
                problem: "negative RSA component",
            });
        }
        let significant = bytes
            .iter()
            .position(|&byte| byte != 0)
            .map_or(&[][..], |start| &bytes[start..]);
        if significant.is_empty() {
            return Err(KeyError::MalformedOpenSsh {
                problem: "zero RSA component",
            });
        }
        Ok(significant)
    }
}

fn truncated() -> KeyError {
    KeyError::MalformedOpenSsh {
        problem: "key data is truncated",
    }
}

fn put_ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let length = u32::try_from(bytes.len()).expect("RSA components are far below 4 GiB");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_ssh_mpint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude
        .iter()
        .position(|&byte| byte != 0)
        .unwrap_or(magnitude.len());
    let magnitude = &magnitude[start..];
    if magnitude.first().is_some_and(|first| first & 0x80 != 0) {
        let mut padded = Vec::with_capacity(magnitude.len() + 1);
        padded.push(0);
        padded.extend_from_slice(magnitude);
        put_ssh_string(out, &padded);
    } else {
        put_ssh_string(out, magnitude);
    }
}

#[cfg(test)]
mod tests {
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    use rsa::pkcs8::{EncodePublicKey as _, LineEnding};

    use super::*;
    use crate::testing::signing_key;

    // Made with `ssh-keygen -t rsa -b 2048`, converted with `ssh-keygen -e -m PKCS8` and
    // `-m PEM`, and the body signed with `openssl dgst -sha256 -sign`: an outside reference
    // for the parsers and the scheme, independent of the `rsa` crate doing the checking.
    const REFERENCE_OPENSSH: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDkpFwk53iqO3K09kwd4AaR9qq9aAIHoLnW7cH8yweaXjHTsRQ8muj1HKg8cxvaV1ZR9IkzOxsQxKrIMXK+nABu3O/RXgbLPKTkvkdsM0Z22V7V3jIY1IE53xmjlbxmcF7wlCVhXpJaRwyfY8xFpFf1gvQu0VqpKOk3OJGKK7H+OCvceQS9L5gzty94s5q5vfOC0DPWatIO53WYUDjKWe2MbtivT8RJdKsHWqkMuWE7rFkUruo0W2+VmJCI2y5PSYOUQccNU6lXKQTYIpcxodvgfyjKqZEM5EmxFkmMmGzw5eCQNo1/hIL/EpQVaCmq5pi9h3mx2s2ygo+b9XWPIOWp volt-fixture\n";
    const REFERENCE_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA5KRcJOd4qjtytPZMHeAG
kfaqvWgCB6C51u3B/MsHml4x07EUPJro9RyoPHMb2ldWUfSJMzsbEMSqyDFyvpwA
btzv0V4Gyzyk5L5HbDNGdtle1d4yGNSBOd8Zo5W8ZnBe8JQlYV6SWkcMn2PMRaRX
9YL0LtFaqSjpNziRiiux/jgr3HkEvS+YM7cveLOaub3zgtAz1mrSDud1mFA4ylnt
jG7Yr0/ESXSrB1qpDLlhO6xZFK7qNFtvlZiQiNsuT0mDlEHHDVOpVykE2CKXMaHb
4H8oyqmRDORJsRZJjJhs8OXgkDaNf4SC/xKUFWgpquaYvYd5sdrNsoKPm/V1jyDl
qQIDAQAB
-----END PUBLIC KEY-----
";
    const REFERENCE_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEA5KRcJOd4qjtytPZMHeAGkfaqvWgCB6C51u3B/MsHml4x07EUPJro
9RyoPHMb2ldWUfSJMzsbEMSqyDFyvpwAbtzv0V4Gyzyk5L5HbDNGdtle1d4yGNSB
Od8Zo5W8ZnBe8JQlYV6SWkcMn2PMRaRX9YL0LtFaqSjpNziRiiux/jgr3HkEvS+Y
M7cveLOaub3zgtAz1mrSDud1mFA4ylntjG7Yr0/ESXSrB1qpDLlhO6xZFK7qNFtv
lZiQiNsuT0mDlEHHDVOpVykE2CKXMaHb4H8oyqmRDORJsRZJjJhs8OXgkDaNf4SC
/xKUFWgpquaYvYd5sdrNsoKPm/V1jyDlqQIDAQAB
-----END RSA PUBLIC KEY-----
";
    const REFERENCE_FINGERPRINT: &str = "SHA256:VgLJiOagFVFtHA4Bi+CqWqyIRvPgth67XgHMJIbKbIs";
    const REFERENCE_BODY: &[u8] = br#"{"payload":{"event_type":"message.received","direction":"inbound","from_number":"+15555550100","to_number":"+15555550199","text":"hello","type":"SMS"}}"#;
    const REFERENCE_SIGNATURE: &str = "ywEZW325fzrmjP8yocz9nMZoPI+JCaCvqHyAbEPAz8qcAJtnowUe3Jg+cWbC8i1J4npfINE1GSADAQBvSz2PO7heGPopRHC2JcYkpTNdhVflRONYaeaJyUyCF4/9el0Qb0RgLaLCyQvehwngEjO7s+Z9y6LB3w1lMcps44oFlWvq10wJamEinxoiwDgdbwwMR88XXtMiwd68/NTWAvSgu+1d4ufu0+4ewHqnxyznpEfCXxLknNrOEsmDpiDBu4GuKHNnPwJ3NzmSbAxfUb9EvcybSUzMIxGfTNCKN+eDGZWhq3PisL28xLcxVQm3Zvm6lawCKsKo9OxIQ3ZPGE+i0w==";

    const ED25519_OPENSSH: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIyUdeHalkKJAC57qI3ZeiurlGzPHYxUh2aR0cmS44ki not-rsa";
    const ED25519_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAK/AytGAzBCLt/BNzwcz37QwGSXJLeaiLbySgCWac8NY=
-----END PUBLIC KEY-----
";

    fn test_public_key() -> VoltPublicKey {
        VoltPublicKey(signing_key().to_public_key())
    }

    fn sign(body: &[u8]) -> Vec<u8> {
        signing_key()
            .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(body))
            .expect("signing")
    }

    fn signed_header(body: &[u8]) -> String {
        STANDARD.encode(sign(body))
    }

    #[test]
    fn a_correct_signature_is_valid() {
        let body = br#"{"payload":{"event_type":"message.sent"}}"#;
        let header = signed_header(body);
        assert_eq!(
            verify(&test_public_key(), Some(header.as_bytes()), body),
            Verdict::Valid
        );
    }

    #[test]
    fn a_tampered_body_is_invalid() {
        let body = br#"{"payload":{"text":"pay 10"}}"#;
        let header = signed_header(body);
        let tampered = br#"{"payload":{"text":"pay 99"}}"#;
        assert_eq!(
            verify(&test_public_key(), Some(header.as_bytes()), tampered),
            Verdict::Invalid
        );
        // Re-serialising the same JSON changes the bytes, and the signature covers bytes.
        let reformatted = br#"{"payload": {"text": "pay 10"}}"#;
        assert_eq!(
            verify(&test_public_key(), Some(header.as_bytes()), reformatted),
            Verdict::Invalid
        );
    }

    #[test]
    fn a_signature_from_another_key_is_invalid() {
        let reference = VoltPublicKey::parse(REFERENCE_OPENSSH).unwrap();
        let body = b"{}";
        let header = signed_header(body);
        assert_eq!(
            verify(&reference, Some(header.as_bytes()), body),
            Verdict::Invalid
        );
    }

    #[test]
    fn every_base64_flavour_and_surrounding_whitespace_is_accepted() {
        // Search for a body whose signature has both `+` and `/`, so that the URL-safe
        // variant really differs from the standard one.
        let (body, signature) = (0u32..)
            .map(|n| {
                let body = format!(r#"{{"n":{n}}}"#).into_bytes();
                let signature = sign(&body);
                (body, signature)
            })
            .find(|(_, signature)| {
                let encoded = STANDARD.encode(signature);
                encoded.contains('+') && encoded.contains('/')
            })
            .expect("some signature uses both characters");
        let standard = STANDARD.encode(&signature);
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&signature);
        assert_ne!(standard, url_safe);
        let key = test_public_key();
        for header in [
            standard.clone(),
            standard.trim_end_matches('=').to_owned(),
            url_safe.clone(),
            url_safe.trim_end_matches('=').to_owned(),
            format!("  {standard}\r\n"),
        ] {
            assert_eq!(
                verify(&key, Some(header.as_bytes()), &body),
                Verdict::Valid,
                "header {header:?}"
            );
        }
    }

    #[test]
    fn undecodable_or_wrongly_sized_signatures_are_invalid() {
        let key = test_public_key();
        let body = b"{}";
        let good = sign(body);
        let mut flipped = good.clone();
        flipped[10] ^= 0x01;
        let mut too_long = good.clone();
        too_long.push(0);
        let all_ones = vec![0xff; good.len()];
        let headers: Vec<Vec<u8>> = vec![
            b"not base64 at all!".to_vec(),
            b"====".to_vec(),
            b"sha256=abcdef".to_vec(),
            vec![0xff, 0xfe, 0x00, 0x80],
            STANDARD.encode(&good[..good.len() - 1]).into_bytes(),
            STANDARD.encode(too_long).into_bytes(),
            STANDARD.encode(flipped).into_bytes(),
            STANDARD.encode(all_ones).into_bytes(),
            STANDARD.encode(vec![0u8; good.len()]).into_bytes(),
            hex::encode(&good).into_bytes(),
        ];
        for header in headers {
            assert_eq!(
                verify(&key, Some(&header), body),
                Verdict::Invalid,
                "header {:?}",
                String::from_utf8_lossy(&header)
            );
        }
    }

    #[test]
    fn an_absent_or_blank_header_is_missing() {
        let key = test_public_key();
        assert_eq!(verify(&key, None, b"{}"), Verdict::Missing);
        assert_eq!(verify(&key, Some(b""), b"{}"), Verdict::Missing);
        assert_eq!(verify(&key, Some(b" \t "), b"{}"), Verdict::Missing);
    }

    #[test]
    fn the_three_key_forms_of_a_generated_key_parse_to_the_same_key() {
        let expected = test_public_key();
        let spki = expected.0.to_public_key_pem(LineEnding::LF).unwrap();
        let pkcs1 = expected.0.to_pkcs1_pem(LineEnding::LF).unwrap();
        let openssh = format!("{} someone@host\n", expected.to_openssh_line());
        let body = b"{\"text\":\"hi\"}";
        let header = signed_header(body);
        for text in [spki.as_str(), pkcs1.as_str(), openssh.as_str()] {
            let parsed = VoltPublicKey::parse(text).unwrap();
            assert_eq!(parsed, expected, "key text {text}");
            assert_eq!(
                verify(&parsed, Some(header.as_bytes()), body),
                Verdict::Valid
            );
        }
    }

    #[test]
    fn the_reference_signature_verifies_under_all_three_key_forms() {
        let header = format!("{REFERENCE_SIGNATURE}\n");
        for text in [REFERENCE_OPENSSH, REFERENCE_SPKI, REFERENCE_PKCS1] {
            let key = VoltPublicKey::parse(text).unwrap();
            assert_eq!(key.bits(), 2048);
            assert_eq!(key.fingerprint(), REFERENCE_FINGERPRINT);
            assert_eq!(
                key.to_openssh_line(),
                REFERENCE_OPENSSH
                    .trim_end()
                    .trim_end_matches(" volt-fixture")
            );
            assert_eq!(
                verify(&key, Some(header.as_bytes()), REFERENCE_BODY),
                Verdict::Valid
            );
            let mut altered = REFERENCE_BODY.to_vec();
            altered.push(b'\n');
            assert_eq!(
                verify(&key, Some(header.as_bytes()), &altered),
                Verdict::Invalid
            );
        }
    }

    #[test]
    fn an_openssh_file_may_start_with_comments_and_blank_lines() {
        let text = format!("# Volt webhook key\n\n{REFERENCE_OPENSSH}");
        let key = VoltPublicKey::parse(&text).unwrap();
        assert_eq!(key.fingerprint(), REFERENCE_FINGERPRINT);
    }

    #[test]
    fn non_rsa_keys_are_refused_by_name() {
        let error = VoltPublicKey::parse(ED25519_OPENSSH).unwrap_err();
        assert!(
            matches!(&error, KeyError::NotRsa { algorithm } if algorithm == "ssh-ed25519"),
            "{error:?}"
        );
        assert!(error.to_string().contains("ssh-ed25519"), "{error}");
        assert!(error.to_string().contains("id_rsa.pub"), "{error}");

        let error = VoltPublicKey::parse(ED25519_SPKI).unwrap_err();
        assert!(matches!(error, KeyError::Spki(_)), "{error:?}");
    }

    #[test]
    fn private_keys_and_other_pem_blocks_are_refused() {
        let error = VoltPublicKey::parse(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(
            matches!(&error, KeyError::UnsupportedPem { label } if label == "OPENSSH PRIVATE KEY"),
            "{error:?}"
        );
        assert!(error.to_string().contains("not a public key"), "{error}");
    }

    #[test]
    fn malformed_openssh_keys_give_a_reason() {
        let (_, data) = REFERENCE_OPENSSH.split_once(' ').unwrap();
        let data = data.split_whitespace().next().unwrap();
        let blob = STANDARD.decode(data).unwrap();
        let with_blob = |blob: &[u8]| format!("ssh-rsa {}", STANDARD.encode(blob));

        let mut wrong_inner_type = blob.clone();
        wrong_inner_type[4..11].copy_from_slice(b"ssh-dss");
        let mut trailing = blob.clone();
        trailing.push(0);
        let mut negative_exponent = blob.clone();
        negative_exponent[15] = 0x81;

        let cases = [
            ("", "empty"),
            ("ssh-rsa", "no key data"),
            ("ssh-rsa ***", "not base64"),
            (&with_blob(&blob[..blob.len() - 1]), "truncated"),
            (&with_blob(&blob[..2]), "truncated"),
            (&with_blob(&wrong_inner_type), "does not match"),
            (&with_blob(&trailing), "trailing bytes"),
            (&with_blob(&negative_exponent), "negative"),
        ];
        for (text, reason) in cases {
            let error = VoltPublicKey::parse(text).unwrap_err();
            assert!(
                error.to_string().contains(reason),
                "{text:?} gave {error}, expected {reason:?}"
            );
        }
    }

    #[test]
    fn an_undersized_rsa_key_is_rejected() {
        let mut blob = Vec::new();
        put_ssh_string(&mut blob, b"ssh-rsa");
        put_ssh_mpint(&mut blob, &[0x01, 0x00, 0x01]);
        put_ssh_mpint(&mut blob, &[0xc5; 64]);
        let error =
            VoltPublicKey::parse(&format!("ssh-rsa {}", STANDARD.encode(blob))).unwrap_err();
        assert!(matches!(error, KeyError::Rejected(_)), "{error:?}");
    }

    #[test]
    fn key_file_errors_name_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let absent = directory.path().join("absent.pub");
        let error = VoltPublicKey::from_file(&absent).unwrap_err();
        assert!(matches!(error, KeyError::Read { .. }), "{error:?}");
        assert!(error.to_string().contains("absent.pub"), "{error}");

        let garbage = directory.path().join("garbage.pub");
        std::fs::write(&garbage, "hello world\n").unwrap();
        let error = VoltPublicKey::from_file(&garbage).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("garbage.pub"), "{message}");
        assert!(
            !message.contains("not RSA"),
            "the source says the cause: {message}"
        );
        let cause = std::error::Error::source(&error)
            .expect("the parse error")
            .to_string();
        assert!(cause.contains("not RSA"), "{cause}");
        assert!(cause.contains("id_rsa.pub"), "{cause}");

        let good = directory.path().join("id_rsa.pub");
        std::fs::write(&good, REFERENCE_OPENSSH).unwrap();
        let key = VoltPublicKey::from_file(&good).unwrap();
        assert_eq!(key.fingerprint(), REFERENCE_FINGERPRINT);
    }

    #[test]
    fn verdicts_have_stable_names() {
        let names = [
            Verdict::Valid,
            Verdict::Invalid,
            Verdict::Missing,
            Verdict::Unchecked,
        ]
        .map(Verdict::as_str);
        assert_eq!(names, ["valid", "invalid", "missing", "unchecked"]);
    }
}
