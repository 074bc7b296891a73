//! Trusted proxies: who the client is when the logging peer is a reverse proxy. The
//! offender is then the rightmost X-Forwarded-For entry that is not a trusted proxy
//! itself (each proxy appends the peer it saw, so entries left of that one are the
//! client's own words). A peer that is not trusted is the client, whatever its
//! X-Forwarded-For says.

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks whose requests carry the real client in X-Forwarded-For.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Every real line comes through a trusted proxy (an application bound to
    /// loopback), so a line naming another peer was forged, e.g. with a newline in a
    /// logged user name: the peer field is then ignored and X-Forwarded-For, which
    /// ends the line and so is never the forger's text, names the client.
    only: bool,
}

impl TrustedProxies {
    /// No trusted proxies: every peer is the client.
    pub const NONE: TrustedProxies = TrustedProxies {
        nets: Vec::new(),
        only: false,
    };

    pub fn new(nets: Vec<IpNet>) -> Self {
        let nets = nets
            .into_iter()
            .map(|n| match n {
                IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                    Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(n),
                    None => n,
                },
                n => n,
            })
            .map(|n| n.trunc())
            .collect();
        TrustedProxies { nets, only: false }
    }

    /// See the `only` field (`trusted_proxies_only` in a jail).
    pub fn only(mut self, only: bool) -> Self {
        self.only = only;
        self
    }

    /// Whether the peer field is ignored (see the `only` field).
    pub fn is_only(&self) -> bool {
        self.only
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client named by an X-Forwarded-For value that a trusted proxy passed on:
    /// walking from the right, the first entry that is not a trusted proxy. `None`
    /// when there is none, or when the walk meets an entry that is not an address
    /// (`unknown`, `-`, garbage): what stands left of it cannot be vouched for.
    pub fn client(&self, forwarded: &[u8]) -> Option<IpAddr> {
        for entry in forwarded.rsplit(|&b| b == b',') {
            let ip = entry_address(entry)?;
            if !self.trusts(ip) {
                return Some(ip);
            }
        }
        None
    }
}

/// One X-Forwarded-For entry as an address: `192.0.2.7`, `192.0.2.7:4711`,
/// `2001:db8::7` or `[2001:db8::7]:4711`; IPv4-mapped IPv6 as IPv4.
fn entry_address(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    let bare = if let Some(rest) = text.strip_prefix('[') {
        rest.split_once(']')?.0
    } else if text.matches(':').count() == 1 {
        text.split_once(':')?.0
    } else {
        text
    };
    let ip = bare.parse::<IpAddr>().ok()?.to_canonical();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec![
            "127.0.0.1/32".parse().expect("net"),
            "::1/128".parse().expect("net"),
            "10.0.0.0/8".parse().expect("net"),
        ])
    }

    fn client(xff: &str) -> Option<String> {
        proxies().client(xff.as_bytes()).map(|ip| ip.to_string())
    }

    #[test]
    fn the_rightmost_entry_that_is_not_a_proxy_is_the_client() {
        assert_eq!(client("203.0.113.9").as_deref(), Some("203.0.113.9"));
        // The client wrote 6.6.6.6 itself; nginx appended the peer it saw.
        assert_eq!(
            client("6.6.6.6, 203.0.113.9").as_deref(),
            Some("203.0.113.9")
        );
        // A chain of trusted proxies is walked through.
        assert_eq!(
            client("6.6.6.6, 203.0.113.9, 10.1.2.3,127.0.0.1").as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(client("2001:db8::9, ::1").as_deref(), Some("2001:db8::9"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        assert_eq!(client("203.0.113.9:4711").as_deref(), Some("203.0.113.9"));
        assert_eq!(client("[2001:db8::9]:4711").as_deref(), Some("2001:db8::9"));
        assert_eq!(client("::ffff:203.0.113.9").as_deref(), Some("203.0.113.9"));
        // A mapped trusted proxy is still trusted.
        assert_eq!(
            client("203.0.113.9, ::ffff:127.0.0.1").as_deref(),
            Some("203.0.113.9")
        );
    }

    #[test]
    fn no_usable_entry_names_nobody() {
        for xff in [
            "",
            "-",
            "unknown",
            "127.0.0.1",
            "10.0.0.1, 127.0.0.1",
            "0.0.0.0",
            "6.6.6.6, garbage",
            "6.6.6.6, garbage, 127.0.0.1",
            "999.1.1.1",
        ] {
            assert_eq!(client(xff), None, "{xff}");
        }
    }

    proptest::proptest! {
        /// The client named is never a trusted proxy, and is always the address of
        /// the rightmost entry that is not one.
        #[test]
        fn the_client_is_never_a_proxy(entries in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(vec![
                    "127.0.0.1", "::1", "10.1.2.3", "203.0.113.9", "[2001:db8::9]:80",
                    "198.51.100.7:4711", "unknown", "", " 192.0.2.1 ",
                ]),
            ],
            0..6,
        )) {
            let p = proxies();
            let xff = entries.join(",");
            let got = p.client(xff.as_bytes());
            if let Some(ip) = got {
                proptest::prop_assert!(!p.trusts(ip));
            }
            let expected = entries
                .iter()
                .rev()
                .map(|e| entry_address(e.as_bytes()))
                .find(|ip| ip.is_none_or(|ip| !p.trusts(ip)))
                .flatten();
            proptest::prop_assert_eq!(got, expected, "{}", xff);
        }
    }

    #[test]
    fn mapped_networks_are_stored_as_ipv4() {
        let p = TrustedProxies::new(vec!["::ffff:192.0.2.0/120".parse().expect("net")]);
        assert!(p.trusts("192.0.2.200".parse().expect("ip")));
        assert!(!p.trusts("192.0.3.1".parse().expect("ip")));
    }
}
