//! Validated configuration values: identifiers, durations, sizes, broker URLs, topic prefixes.
//! Each newtype can only hold a valid value, so code past the config never re-checks.

use std::fmt;
use std::time::Duration;

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Accepts `[A-Za-z0-9_-]{1,64}`.
            pub fn new(s: &str) -> Result<Self, String> {
                if valid_id(s) {
                    Ok(Self(s.to_string()))
                } else {
                    Err(format!("`{s}` must be 1 to 64 of A-Z a-z 0-9 _ -"))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_newtype!(
    /// The edge's identity, used in topics and the MQTT client id.
    EdgeId
);
id_newtype!(
    /// A configured device (reader) identity, used in topics.
    DeviceId
);

/// Parses `100ms`, `30s`, `5m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 5m, 2h)"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("`{s}` is not a duration (e.g. 30s, 5m, 2h)")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Parses `512MiB`, `2GB`, `64KiB`, `1048576` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 512MiB, 2GB)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(format!("`{s}` is not a size (e.g. 512MiB, 2GB)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{s}` is too large"))
}

/// `mqtts://host:port` (TLS) or `mqtt://host:port` (plain, for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!("`{s}` must start with mqtts:// or mqtt://"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| format!("`{p}` in `{s}` is not a port"))?;
                (h, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("`{s}` has no valid host"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Prepended to every topic, upstream and downstream. Empty, or a topic level path without
/// wildcards; a trailing `/` is the user's choice and kept as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPrefix(String);

impl TopicPrefix {
    pub fn new(s: &str) -> Result<TopicPrefix, String> {
        if s.contains(['+', '#', '\0']) {
            return Err(format!("`{s}` must not contain +, # or NUL"));
        }
        if s.len() > 512 {
            return Err("must be at most 512 bytes".into());
        }
        Ok(TopicPrefix(s.to_string()))
    }

    /// The full topic for `suffix`.
    pub fn apply(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.0)
    }

    /// `topic` without the prefix, if it has it.
    pub fn strip<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic.strip_prefix(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn broker_urls_need_an_mqtt_scheme() {
        let u = BrokerUrl::parse("mqtts://cloud.example.com:8883").unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("cloud.example.com", 8883));
        assert_eq!(BrokerUrl::parse("mqtt://[::1]:1883").unwrap().host, "::1");
        assert_eq!(BrokerUrl::parse("mqtts://h").unwrap().port, 8883);
        assert!(BrokerUrl::parse("http://h:1").is_err());
        assert!(BrokerUrl::parse("mqtt://h:99999").is_err());
    }

    #[test]
    fn ids_are_restricted_to_topic_safe_characters() {
        assert!(EdgeId::new("cabinet-0001").is_ok());
        assert!(EdgeId::new("a/b").is_err());
        assert!(EdgeId::new("").is_err());
        assert!(EdgeId::new(&"x".repeat(65)).is_err());
    }

    #[test]
    fn topic_prefix_rejects_wildcards() {
        assert!(TopicPrefix::new("site/a/").is_ok());
        assert!(TopicPrefix::new("a/#").is_err());
        assert_eq!(TopicPrefix::new("p/").unwrap().apply("edge/x"), "p/edge/x");
    }
}
