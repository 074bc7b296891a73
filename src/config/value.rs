//! Config value types that parse themselves while TOML is read, so a bad value is
//! reported at its own file:line:col: durations, ban times, ports, networks.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::types::BanTime;
use crate::units::{check_bantime, parse_bantime, parse_duration, DURATION_HELP};

/// A duration given as an integer (seconds) or a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(DURATION_HELP)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|s| DurationValue(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("duration must not be negative: {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A ban time: a duration, `"permanent"`, or `-1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanTimeValue(pub BanTime);

impl<'de> Deserialize<'de> for BanTimeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = BanTimeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "\"permanent\", -1, or {DURATION_HELP}")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match v {
                    -1 => Ok(BanTimeValue(BanTime::Permanent)),
                    v if v >= 0 => check_bantime(BanTime::Finite(Duration::from_secs(v as u64)))
                        .map(BanTimeValue)
                        .map_err(E::custom),
                    v => Err(E::custom(format!(
                        "bantime {v} is invalid: use -1 or \"permanent\" for a ban that never expires"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                check_bantime(BanTime::Finite(Duration::from_secs(v)))
                    .map(BanTimeValue)
                    .map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_bantime(v).map(BanTimeValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn parse_port_number(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "invalid port `{s}`: expected a number from 1 to 65535 or a range like 8000-8080"
        )),
        Ok(n) => Ok(n),
    }
}

/// A service name's port, from /etc/services (any protocol), or a few well-known
/// ones when that file is missing.
pub fn service_port(name: &str) -> Option<u16> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static SERVICES: OnceLock<HashMap<String, u16>> = OnceLock::new();
    let table = SERVICES.get_or_init(|| {
        let mut map = HashMap::new();
        for line in std::fs::read_to_string("/etc/services")
            .unwrap_or_default()
            .lines()
        {
            let mut words = line.split('#').next().unwrap_or("").split_whitespace();
            let (Some(service), Some(port)) = (words.next(), words.next()) else {
                continue;
            };
            let Some(port) = port.split('/').next().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            for n in std::iter::once(service).chain(words) {
                map.entry(n.to_string()).or_insert(port);
            }
        }
        for (n, p) in [
            ("ssh", 22),
            ("smtp", 25),
            ("domain", 53),
            ("http", 80),
            ("pop3", 110),
            ("imap", 143),
            ("https", 443),
            ("submission", 587),
            ("imaps", 993),
            ("pop3s", 995),
        ] {
            map.entry(n.to_string()).or_insert(p);
        }
        map
    });
    table.get(name).copied()
}

/// Parses `22`, `8000-8080`, or a service name such as `ssh` or `https`.
pub fn parse_port(s: &str) -> Result<PortRange, String> {
    let s = s.trim();
    if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return service_port(s)
            .filter(|p| *p > 0)
            .map(|p| PortRange { first: p, last: p })
            .ok_or_else(|| format!("unknown service `{s}`: use a port number, a range like 8000-8080, or a name from /etc/services"));
    }
    match s.split_once('-') {
        Some((a, b)) => {
            // The whole value in the message: `-1` is no range with an empty start.
            let whole = |_| {
                format!("invalid port `{s}`: expected a number from 1 to 65535 or a range like 8000-8080")
            };
            let first = parse_port_number(a).map_err(whole)?;
            let last = parse_port_number(b).map_err(whole)?;
            if first > last {
                return Err(format!("invalid port range `{s}`: {first} is above {last}"));
            }
            Ok(PortRange { first, last })
        }
        None => parse_port_number(s).map(|p| PortRange { first: p, last: p }),
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a range like \"8000-8080\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                parse_port(&v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                parse_port(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_port(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An address or network (`192.0.2.0/24`, `2001:db8::/32`, `::1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetValue(pub IpNet);

pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    s.parse::<IpNet>().map_err(|_| {
        format!("`{s}` is not an IP address or network (expected e.g. 192.0.2.7 or 2001:db8::/32)")
    })
}

impl<'de> Deserialize<'de> for NetValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_net(&s).map(NetValue).map_err(de::Error::custom)
    }
}

/// An `ignoreip` entry: an address or network, or `file:/path` naming a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IgnoreValue {
    Net(IpNet),
    File(String),
}

impl<'de> Deserialize<'de> for IgnoreValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim().strip_prefix("file:") {
            Some(path) if !path.trim().is_empty() => Ok(IgnoreValue::File(path.trim().to_string())),
            Some(_) => Err(de::Error::custom(
                "`file:` needs a path, e.g. file:/etc/gaoler/ignore.list",
            )),
            None => parse_net(&s)
                .map(IgnoreValue::Net)
                .map_err(de::Error::custom),
        }
    }
}

/// Reads an ignore list file: one address or network per line, `#` comments.
pub fn read_ignore_file(path: &std::path::Path) -> Result<Vec<IpNet>, String> {
    let text = crate::util::read_config_file(path).map_err(|e| {
        format!(
            "cannot read ignore list {}: {}",
            path.display(),
            crate::util::io_reason(&e)
        )
    })?;
    let mut nets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        nets.push(parse_net(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?);
    }
    Ok(nets)
}

/// A list that may also be written as a single value: `logpath = "/var/log/auth.log"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{I64Deserializer, StrDeserializer, U64Deserializer};
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(OneOrMany(out))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(StrDeserializer::<E>::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(I64Deserializer::<E>::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(U64Deserializer::<E>::new(v)).map(|t| OneOrMany(vec![t]))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges() {
        assert_eq!(
            parse_port("22"),
            Ok(PortRange {
                first: 22,
                last: 22
            })
        );
        assert_eq!(
            parse_port("8000-8080"),
            Ok(PortRange {
                first: 8000,
                last: 8080
            })
        );
        assert_eq!(
            parse_port("ssh"),
            Ok(PortRange {
                first: 22,
                last: 22
            })
        );
        assert_eq!(
            parse_port("https"),
            Ok(PortRange {
                first: 443,
                last: 443
            })
        );
        for bad in ["0", "65536", "80-22", "ssh-", "no-such-service"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        // Regression: `-1` was reported as "invalid port ``".
        for bad in ["-1", "80-", "-"] {
            let e = parse_port(bad).expect_err(bad);
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }
}
