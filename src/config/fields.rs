//! How each kind of value is read from the layers, and the message that explains a bad one.
//!
//! Numbers are taken as they come (`deserialize_any`) and checked here, because the `config`
//! crate converts when asked for an integer: it rounds `1.5` to 2 and reads `"yes"` as 1.
//! Every other kind is read as text and parsed with a message that says what to write.
//! Each reader names no key: the loader puts the key (or the `VOLT_*` variable) in front.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer as _, Visitor};
use url::Url;

use super::redacted_url;

/// A whole number, as written: a fraction is refused, never rounded.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct WholeNumber;

    impl Visitor<'_> for WholeNumber {
        type Value = u64;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a whole number")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value)
                .map_err(|_| E::custom(format!("{value} is negative; use 0 or more")))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
            Err(E::custom(format!(
                "{value:?} is not a whole number; no setting takes a fraction"
            )))
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<u64, E> {
            value
                .parse()
                .map_err(|_| E::custom(format!("{value:?} is not a whole number")))
        }
    }

    deserializer.deserialize_any(WholeNumber)
}

fn fitting<T: TryFrom<u64>, E: de::Error>(value: u64) -> Result<T, E> {
    T::try_from(value).map_err(|_| E::custom(format!("{value} is too large")))
}

/// Any whole number the field can hold.
pub fn count<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<T, D::Error> {
    fitting(whole_number(deserializer)?)
}

/// A whole number greater than zero: a count or timeout of zero would stop the work it sizes.
pub fn positive<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
    deserializer: D,
) -> Result<T, D::Error> {
    match whole_number(deserializer)? {
        0 => Err(de::Error::custom("must be greater than zero")),
        value => fitting(value),
    }
}

/// As [`positive`], for a key that may be left out.
pub fn optional_positive<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    positive(deserializer).map(Some)
}

/// A whole number in `min..=max`.
pub fn between<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
    deserializer: D,
    min: u64,
    max: u64,
) -> Result<T, D::Error> {
    match whole_number(deserializer)? {
        value if (min..=max).contains(&value) => fitting(value),
        _ => Err(de::Error::custom(format!(
            "must be between {min} and {max}"
        ))),
    }
}

/// Generates a module for `#[serde(with = ...)]` that reads a [`Duration`] from a whole number
/// of `$unit` (checked by `$read`) and writes it back the same way.
macro_rules! duration_in {
    ($module:ident, $read:ident, $from:path, $as:ident, $doc:literal) => {
        #[doc = $doc]
        pub mod $module {
            use std::time::Duration;

            use serde::{Deserializer, Serializer};

            pub fn deserialize<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Duration, D::Error> {
                super::$read(deserializer).map($from)
            }

            pub fn serialize<S: Serializer>(
                duration: &Duration,
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                let units = u64::try_from(duration.$as()).unwrap_or(u64::MAX);
                serializer.serialize_u64(units)
            }
        }
    };
}

duration_in!(
    secs,
    count,
    Duration::from_secs,
    as_secs,
    "Whole seconds, as `*_secs` keys are written."
);
duration_in!(
    positive_secs,
    positive,
    Duration::from_secs,
    as_secs,
    "Whole seconds, more than zero."
);
duration_in!(
    millis,
    count,
    Duration::from_millis,
    as_millis,
    "Whole milliseconds, as `*_ms` keys are written."
);
duration_in!(
    positive_millis,
    positive,
    Duration::from_millis,
    as_millis,
    "Whole milliseconds, more than zero."
);

pub fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        de::Error::custom(format!(
            "{text:?} is not a socket address; use IP:PORT such as \"127.0.0.1:8080\" or \
             \"[::]:8080\""
        ))
    })
}

pub fn optional_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(deserializer).map(Some)
}

/// An absolute `http` or `https` URL with a host: what Volt and the sinks can be reached at.
pub fn http_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let text = String::deserialize(deserializer)?;
    // A sink's URL may carry a password.
    let url = Url::parse(&text).map_err(|e| {
        de::Error::custom(format!(
            "{:?} is not a URL ({e}); use an absolute http:// or https:// URL",
            redacted_url(&text)
        ))
    })?;
    url_with_scheme(&url, &["http", "https"]).map_err(de::Error::custom)?;
    Ok(url)
}

/// Whether `url` has one of `schemes` and a host; the error names them.
pub fn url_with_scheme(url: &Url, schemes: &[&str]) -> Result<(), String> {
    if schemes.contains(&url.scheme()) && url.host().is_some() {
        return Ok(());
    }
    let wanted: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
    Err(format!(
        "{:?} is not a URL with a host and the scheme {}; use an absolute {} URL",
        redacted_url(url.as_str()),
        schemes.join(" or "),
        wanted.join(" or ")
    ))
}

/// CIDR networks, or bare addresses meaning just that address. Items are trimmed and empty
/// ones skipped, so that `VOLT_SERVER__ALLOW_IPS="10.0.0.0/8, 192.0.2.7"` reads as written
/// and an empty variable clears the file's list.
pub fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|item| item.trim())
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    de::Error::custom(format!(
                        "{item:?} is not an IP network; use CIDR such as \"203.0.113.0/24\" or \
                         an address"
                    ))
                })
        })
        .collect()
}

/// One of an enum's words in any case (`VOLT_API__REGISTER=Never` as well as `never`). The
/// enum's derived `Deserialize` knows its words and lists them when none matches.
pub fn any_case<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
) -> Result<T, D::Error> {
    let text = String::deserialize(deserializer)?;
    T::deserialize(text.trim().to_lowercase().into_deserializer())
        .map_err(|e: de::value::Error| de::Error::custom(e))
}

pub fn optional_any_case<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    any_case(deserializer).map(Some)
}

/// A secret on one line, surrounding whitespace ignored; empty means none, so that an empty
/// `VOLT_API__TOKEN` unsets the token.
pub fn optional_secret<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    let text = SecretString::from(String::deserialize(deserializer)?);
    let trimmed = secrecy::ExposeSecret::expose_secret(&text).trim();
    Ok((!trimmed.is_empty()).then(|| SecretString::from(trimmed.to_owned())))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// `reader` applied to the TOML value `toml`, as the loader would apply it.
    fn read<T>(
        toml: &str,
        reader: impl FnOnce(config::Value) -> Result<T, config::ConfigError>,
    ) -> Result<T, String> {
        let text = format!("value = {toml}");
        let value = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(|config| config.get::<config::Value>("value"))
            .expect("test TOML");
        reader(value).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_are_taken_as_written() {
        assert_eq!(read("7", count::<_, u64>), Ok(7));
        assert_eq!(read("\"7\"", count::<_, u64>), Ok(7));
        for (toml, message) in [
            (
                "1.5",
                "1.5 is not a whole number; no setting takes a fraction",
            ),
            (
                "2.0",
                "2.0 is not a whole number; no setting takes a fraction",
            ),
            ("-1", "-1 is negative; use 0 or more"),
            ("\"seven\"", "\"seven\" is not a whole number"),
        ] {
            assert_eq!(read(toml, count::<_, u64>), Err(message.to_owned()));
        }
        let error = read("true", count::<_, u64>).unwrap_err();
        assert!(error.contains("expected a whole number"), "{error}");
    }

    #[test]
    fn bounds_are_explained() {
        assert_eq!(read("3", positive::<_, u32>), Ok(3));
        assert_eq!(
            read("0", positive::<_, u32>),
            Err("must be greater than zero".to_owned())
        );
        assert_eq!(
            read("5000000000", positive::<_, u32>),
            Err("5000000000 is too large".to_owned())
        );
        let one_to_ten = |value| between::<_, u8>(value, 1, 10);
        assert_eq!(read("10", one_to_ten), Ok(10));
        assert_eq!(
            read("11", one_to_ten),
            Err("must be between 1 and 10".to_owned())
        );
    }

    #[test]
    fn durations_are_whole_units() {
        assert_eq!(
            read("90", secs::deserialize),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            read("250", millis::deserialize),
            Ok(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            read("0", positive_secs::deserialize),
            Err("must be greater than zero".to_owned())
        );
    }

    #[test]
    fn socket_addresses_and_urls_say_what_to_write() {
        assert_eq!(read("\"[::]:8080\"", socket_addr).unwrap().port(), 8080);
        assert_eq!(
            read("\"localhost\"", socket_addr),
            Err(
                "\"localhost\" is not a socket address; use IP:PORT such as \"127.0.0.1:8080\" \
                 or \"[::]:8080\""
                    .to_owned()
            )
        );
        assert!(read("\"https://x.example/a\"", http_url).is_ok());
        for (toml, why) in [
            (
                "\"ftp://x/y\"",
                "is not a URL with a host and the scheme http or https",
            ),
            (
                "\"/relative\"",
                "is not a URL (relative URL without a base)",
            ),
        ] {
            let error = read(toml, http_url).unwrap_err();
            assert_eq!(
                error,
                format!("{toml} {why}; use an absolute http:// or https:// URL")
            );
        }
    }

    #[test]
    fn networks_take_cidr_or_addresses_and_skip_empty_items() {
        let nets = read("[\" 10.0.0.0/8 \", \"::1\", \"\"]", networks).unwrap();
        assert_eq!(nets.len(), 2);
        assert_eq!(nets[1].to_string(), "::1/128");
        assert_eq!(
            read("[\"nope\"]", networks),
            Err(
                "\"nope\" is not an IP network; use CIDR such as \"203.0.113.0/24\" or an address"
                    .to_owned()
            )
        );
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Colour {
        Red,
        Green,
    }

    #[test]
    fn choices_are_read_in_any_case_and_listed_when_wrong() {
        assert_eq!(read("\" GREEN\"", any_case), Ok(Colour::Green));
        assert_eq!(
            read("\"blue\"", any_case::<_, Colour>),
            Err("unknown variant `blue`, expected `red` or `green`".to_owned())
        );
    }

    #[test]
    fn an_empty_secret_is_none() {
        assert!(read("\"  \"", optional_secret).unwrap().is_none());
        let token = read("\" tok \"", optional_secret).unwrap().unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&token), "tok");
    }
}
