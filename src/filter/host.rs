//! The placeholders filters are written with (`<HOST>`, `<ADDR>`, `<USER>`) and the
//! parsing of a captured address. An address is only ever what `<HOST>` captured.

use std::net::IpAddr;

/// Capture group holding the offender's address.
pub const HOST_GROUP: &str = "host";
/// Capture group holding a user name, when the filter has `<USER>`.
pub const USER_GROUP: &str = "user";

const IPV4: &str = r"\d{1,3}(?:\.\d{1,3}){3}";
const IPV6: &str = r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?";

/// Replaces `<HOST>`/`<ADDR>` with an address pattern and `<USER>` with a user capture.
pub fn expand_placeholders(source: &str) -> String {
    let host = format!(r"\[?(?P<{HOST_GROUP}>{IPV4}|{IPV6})\]?");
    source
        .replacen("<HOST>", &host, 1)
        .replace("<HOST>", &format!(r"(?:{IPV4}|{IPV6})"))
        .replacen("<ADDR>", &host, 1)
        .replace("<ADDR>", &format!(r"(?:{IPV4}|{IPV6})"))
        .replacen("<USER>", &format!(r"(?P<{USER_GROUP}>.*)"), 1)
        .replace("<USER>", ".*")
}

/// The address a `<HOST>` capture names, IPv4-mapped IPv6 turned into IPv4.
pub fn parse(bytes: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}
