//! Units every layer shares, below all of them: durations as gaoler writes them
//! (`90`, `10m`, `1d12h`), ban times (a duration or `permanent`), and log levels.
//! Pure text and arithmetic; nothing here imports another gaoler module.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How long a ban lasts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BanTime {
    Finite(Duration),
    Permanent,
}

impl BanTime {
    /// When a ban made at `at` ends (`None`: never).
    pub fn expiry_from(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            BanTime::Permanent => None,
            BanTime::Finite(d) => {
                let d = chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX);
                Some(at.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC))
            }
        }
    }
}

impl fmt::Display for BanTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanTime::Permanent => f.write_str("permanent"),
            BanTime::Finite(d) => f.write_str(&format_duration(*d)),
        }
    }
}

/// The longest finite ban: ten years (3650 days). Longer is `permanent`. An element's
/// timeout in the kernel never exceeds it either.
pub const MAX_BANTIME: Duration = Duration::from_secs(3650 * 86_400);

/// `bantime` as a ban may have it: at least a second, at most [`MAX_BANTIME`].
pub fn check_bantime(bantime: BanTime) -> Result<BanTime, String> {
    match bantime {
        BanTime::Finite(d) if d.is_zero() => {
            Err("bantime 0 bans nobody: give it a length (or disable the jail)".to_string())
        }
        BanTime::Finite(d) if d > MAX_BANTIME => Err(format!(
            "bantime {} is longer than the longest finite ban, {} (ten years): use \"permanent\"",
            format_duration(d),
            format_duration(MAX_BANTIME)
        )),
        ok => Ok(ok),
    }
}

/// The levels `log_level` and `ctl log-level` take.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// `level` in lower case when it is one of [`LEVELS`].
pub fn parse_level(level: &str) -> Result<String, String> {
    let lower = level.to_ascii_lowercase();
    if LEVELS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(format!(
            "unknown log level `{level}`: use error, warn, info, debug or trace"
        ))
    }
}

pub const DURATION_HELP: &str =
    "expected seconds or a duration such as 30s, 10m, 1h, 1d, 1w, 1d12h";

/// Parses `90`, `30s`, `10m`, `1h`, `1d`, `1w`, `1d12h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty duration: {DURATION_HELP}"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits: seconds; too many of them is a size problem, not a missing unit.
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration `{s}` is too large"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("invalid duration `{s}`: {DURATION_HELP}")),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid duration `{s}`: {DURATION_HELP}"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration `{s}` is too large"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "invalid duration `{s}`: a number needs a unit after it ({DURATION_HELP})"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// The shortest spelling `parse_duration` reads back: `1d12h`, `10m`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3600),
        ("m", 60),
        ("s", 1),
    ] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Parses a ban time: a duration (1 s to [`MAX_BANTIME`]), or `permanent` / `-1`.
pub fn parse_bantime(s: &str) -> Result<BanTime, String> {
    match s.trim() {
        "permanent" | "-1" => Ok(BanTime::Permanent),
        other => check_bantime(BanTime::Finite(parse_duration(other)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_documented_form() {
        let cases = [
            ("90", 90),
            ("30s", 30),
            ("10m", 600),
            ("1h", 3600),
            ("1d", 86_400),
            ("1w", 604_800),
            ("1d12h", 129_600),
            ("1h30m15s", 5415),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "10x", "h", "1h30", "-5m", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
        // Regression: 20 digits were reported as "a number needs a unit after it".
        let e = parse_duration("99999999999999999999").expect_err("too large");
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn durations_format_back_to_what_they_parse_from() {
        for secs in [0, 1, 59, 60, 3600, 86_400 + 3600 * 12, 604_800 * 4 + 1] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(129_600)), "1d12h");
    }

    #[test]
    fn bantime_accepts_permanent_spellings() {
        assert_eq!(parse_bantime("permanent"), Ok(BanTime::Permanent));
        assert_eq!(parse_bantime("-1"), Ok(BanTime::Permanent));
        assert_eq!(
            parse_bantime("1h"),
            Ok(BanTime::Finite(Duration::from_secs(3600)))
        );
    }

    #[test]
    fn a_bantime_is_at_least_a_second_and_at_most_ten_years() {
        // Regression: 3650 days and more passed `check`, and nft then refused the ban.
        assert_eq!(
            parse_bantime("3650d"),
            Ok(BanTime::Finite(Duration::from_secs(315_360_000)))
        );
        for bad in ["3651d", "0", "0s", "99999999999"] {
            assert!(parse_bantime(bad).is_err(), "{bad}");
        }
        assert!(parse_bantime("3651d")
            .expect_err("too long")
            .contains("permanent"));
    }

    #[test]
    fn levels_are_case_insensitive_and_checked() {
        assert_eq!(parse_level("DEBUG"), Ok("debug".to_string()));
        assert!(parse_level("verbose").is_err());
    }
}
