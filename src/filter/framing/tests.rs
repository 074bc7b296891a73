//! Timestamp detection and header removal for every supported log framing.

use super::*;
use chrono::{Datelike, TimeZone};

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid time")
}

/// A framer reading offset-less stamps as UTC, so results do not depend on the host.
fn utc_framer() -> Framer {
    Framer {
        tz: LogTz::Fixed(Utc.fix()),
        pattern: None,
    }
}

fn split(line: &str) -> (Option<Timestamp>, String) {
    let f = utc_framer().split(line.as_bytes(), now());
    (f.time, String::from_utf8_lossy(f.message).into_owned())
}

#[test]
fn classic_syslog_loses_time_and_header() {
    let (t, m) = split(
        "Nov 21 08:13:46 srv sshd[1234]: Failed password for root from 192.0.2.7 port 22 ssh2\n",
    );
    assert_eq!(t, Some(utc(2026, 11, 21, 8, 13, 46)));
    assert_eq!(m, "Failed password for root from 192.0.2.7 port 22 ssh2");
    assert_eq!(split("Nov  1 10:00:00 srv cron[1]: x").1, "x");
    assert_eq!(split("Nov 21 08:13:46 srv kernel: oops").1, "oops");
    assert_eq!(split("Nov 21 08:13:46 just some text").1, "just some text");
    assert_eq!(split("<38>Nov 21 08:13:46 srv sshd[1]: hello").1, "hello");
}

#[test]
fn syslog_year_is_the_latest_not_more_than_a_day_ahead() {
    assert_eq!(
        split("Dec 24 10:00:00 srv cron[1]: x").0.map(|t| t.year()),
        Some(2025)
    );
    let new_year = Utc
        .with_ymd_and_hms(2026, 12, 31, 23, 30, 0)
        .single()
        .expect("time");
    let f = utc_framer().split(b"Jan  1 00:10:00 srv app: x", new_year);
    assert_eq!(f.time, Some(utc(2027, 1, 1, 0, 10, 0)));
}

#[test]
fn rfc3339_and_short_iso_in_every_spelling() {
    let (t, m) =
        split("2026-11-21T09:13:46.250000+01:00 srv sshd[9]: Invalid user x from 192.0.2.7 port 4");
    assert_eq!(
        t,
        Some(utc(2026, 11, 21, 8, 13, 46) + chrono::Duration::milliseconds(250))
    );
    assert_eq!(m, "Invalid user x from 192.0.2.7 port 4");
    assert_eq!(
        split("2026-11-21T09:13:46+0100 srv sshd[9]: hi").0,
        Some(utc(2026, 11, 21, 8, 13, 46))
    );
    assert_eq!(split("2026-11-21T08:13:46Z srv app: hello").1, "hello");
    let (t, m) =
        split("2026-11-21 08:13:46.123 UTC [1234] app@db FATAL:  password authentication failed");
    assert_eq!(
        t.map(|t| t.timestamp()),
        Some(utc(2026, 11, 21, 8, 13, 46).timestamp())
    );
    assert_eq!(m, "[1234] app@db FATAL:  password authentication failed");
    let (_, m) =
        split("2026-11-21 08:13:46,123 web1 proftpd[77] web1 (x[1.2.3.4]): USER a: no such user");
    assert_eq!(
        m,
        "web1 proftpd[77] web1 (x[1.2.3.4]): USER a: no such user"
    );
    // A stamp running into a word is not a stamp.
    assert_eq!(split("2026-11-21T08:13:46abc rest").0, None);
}

#[test]
fn rfc5424_with_and_without_structured_data() {
    let (t, m) = split("<34>1 2026-11-21T08:13:46.003Z web1 sshd 1234 - - Failed password for root from 192.0.2.7 port 22 ssh2");
    assert_eq!(
        t.map(|t| t.timestamp()),
        Some(utc(2026, 11, 21, 8, 13, 46).timestamp())
    );
    assert_eq!(m, "Failed password for root from 192.0.2.7 port 22 ssh2");
    let (_, m) = split(
        r#"<165>1 2026-11-21T08:13:46Z h app 1 ID47 [a@32473 k="v\]x"][b@1 c="d"] the message"#,
    );
    assert_eq!(m, "the message");
}

#[test]
fn web_server_and_application_framings() {
    let (t, m) = split("2026/11/21 08:13:46 [error] 1234#1234: *5 user \"x\" was not found in \"/etc/nginx/.htpasswd\", client: 192.0.2.7");
    assert_eq!(t, Some(utc(2026, 11, 21, 8, 13, 46)));
    assert!(m.starts_with("[error] 1234#1234: *5 user"), "{m}");
    let (t, m) = split("[Sat Nov 21 08:13:46.123456 2026] [auth_basic:error] [pid 7] [client 192.0.2.7:5000] AH01618: user x not found: /");
    assert_eq!(
        t.map(|t| t.timestamp()),
        Some(utc(2026, 11, 21, 8, 13, 46).timestamp())
    );
    assert!(m.starts_with("[auth_basic:error] [pid 7]"), "{m}");
    let (t, m) = split("21-Nov-2026 08:13:46.123 client @0x7f 192.0.2.7#5353 (example.com): query (cache) 'example.com/A/IN' denied");
    assert_eq!(
        t.map(|t| t.timestamp()),
        Some(utc(2026, 11, 21, 8, 13, 46).timestamp())
    );
    assert!(m.starts_with("client @0x7f"), "{m}");
    let (t, m) =
        split("[21-Nov-2026 08:13:46 +0100]: <abc> IMAP Error: Login failed for x from 192.0.2.7");
    assert_eq!(t, Some(utc(2026, 11, 21, 7, 13, 46)));
    assert_eq!(m, "<abc> IMAP Error: Login failed for x from 192.0.2.7");
    let (_, m) = split("[2026-11-21 08:13:46.123][vaultwarden::api::identity][ERROR] Username or password is incorrect. IP: 192.0.2.7.");
    assert!(m.starts_with("[vaultwarden::api::identity][ERROR]"), "{m}");
    let (t, m) = split("[Nov 21 08:13:46] NOTICE[1234] chan_sip.c: Registration from '<sip:1@x>' failed for '192.0.2.7:5060' - Wrong password");
    assert_eq!(t, Some(utc(2026, 11, 21, 8, 13, 46)));
    assert!(m.starts_with("NOTICE[1234] chan_sip.c:"), "{m}");
}

#[test]
fn epoch_seconds_with_fraction() {
    let secs = utc(2026, 11, 21, 8, 13, 46).timestamp();
    let (t, m) = split(&format!("{secs}.500 192.0.2.7 TCP_DENIED/403"));
    assert_eq!(
        t,
        Some(utc(2026, 11, 21, 8, 13, 46) + chrono::Duration::milliseconds(500))
    );
    assert_eq!(m, "192.0.2.7 TCP_DENIED/403");
    // Other numbers at the start are not epochs.
    assert_eq!(split("12345 not a time").0, None);
}

#[test]
fn access_log_time_comes_from_its_bracket_and_the_line_stays_whole() {
    let line =
        "192.0.2.7 - bob [21/Nov/2026:09:13:46 +0100] \"GET /admin HTTP/1.1\" 401 0 \"-\" \"curl\"";
    let (t, m) = split(line);
    assert_eq!(t, Some(utc(2026, 11, 21, 8, 13, 46)));
    assert_eq!(m, line);
    let plain = "192.0.2.7 something [not a date] else";
    assert_eq!(split(plain), (None, plain.to_string()));
}

#[test]
fn logtimezone_reads_offsetless_stamps_in_that_zone() {
    let berlin = Framer {
        tz: LogTz::parse("Europe/Berlin").expect("tz"),
        pattern: None,
    };
    let f = berlin.split(b"Nov 21 09:13:46 srv app: x", now());
    assert_eq!(f.time, Some(utc(2026, 11, 21, 8, 13, 46)));
    let fixed = Framer {
        tz: LogTz::parse("-05:00").expect("tz"),
        pattern: None,
    };
    let f = fixed.split(b"2026-11-21 03:13:46 x", now());
    assert_eq!(f.time, Some(utc(2026, 11, 21, 8, 13, 46)));
    // An explicit offset in the line wins over the zone.
    let f = berlin.split(b"2026-11-21T08:13:46Z srv app: x", now());
    assert_eq!(f.time, Some(utc(2026, 11, 21, 8, 13, 46)));
    assert_eq!(LogTz::parse("UTC"), Ok(LogTz::Fixed(Utc.fix())));
    assert_eq!(LogTz::parse("local"), Ok(LogTz::Local));
    assert!(LogTz::parse("Mars/Olympus").is_err());
}

#[test]
fn datepattern_replaces_detection() {
    let f = Framer {
        tz: LogTz::Fixed(Utc.fix()),
        pattern: Some(DatePattern::parse("%d.%m.%Y %H:%M:%S").expect("pattern")),
    };
    let framed = f.split(b"21.11.2026 08:13:46 login failed from 192.0.2.7", now());
    assert_eq!(framed.time, Some(utc(2026, 11, 21, 8, 13, 46)));
    assert_eq!(framed.message, b"login failed from 192.0.2.7");
    let with_zone = Framer {
        tz: LogTz::Local,
        pattern: Some(DatePattern::parse("%Y%m%d %H%M%S %z").expect("pattern")),
    };
    let framed = with_zone.split(b"[20261121 091346 +0100] x", now());
    assert_eq!(framed.time, Some(utc(2026, 11, 21, 8, 13, 46)));
    assert_eq!(framed.message, b"x");
    let none = Framer {
        tz: LogTz::Local,
        pattern: Some(DatePattern::None),
    };
    assert_eq!(none.split(b"Nov 21 08:13:46 h a: x", now()).time, None);
    assert!(DatePattern::parse("%Y-%Q").is_err());
    assert!(DatePattern::parse("%Y-%m-%d").is_err(), "no time of day");
    assert_eq!(DatePattern::parse("epoch"), Ok(DatePattern::Epoch));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let alphabet = b"0123456789-:T .,/[]<>+ZJanNovDecUTCab\xff";
    for _ in 0..20_000 {
        let len = (seed % 48) as usize;
        let mut line = Vec::with_capacity(len);
        for _ in 0..len {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            line.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
        }
        let _ = split_line(&line, now());
        let _ = utc_framer().split(&line, now());
    }
}

#[test]
fn cached_offsets_follow_dst_changes() {
    // Europe/Berlin: CET (+1) until 2026-03-29 02:00, then CEST (+2).
    let berlin = Framer {
        tz: LogTz::parse("Europe/Berlin").expect("tz"),
        pattern: None,
    };
    let at = |line: &str| berlin.split(line.as_bytes(), now()).time;
    assert_eq!(
        at("2026-03-29 01:30:00 x"),
        Some(utc(2026, 3, 29, 0, 30, 0))
    );
    assert_eq!(
        at("2026-03-29 01:45:00 x"),
        Some(utc(2026, 3, 29, 0, 45, 0)),
        "cached hour"
    );
    assert_eq!(
        at("2026-03-29 03:30:00 x"),
        Some(utc(2026, 3, 29, 1, 30, 0)),
        "after the change"
    );
    // 02:30 does not exist that day: no time rather than a wrong one.
    assert_eq!(at("2026-03-29 02:30:00 x"), None);
    // The repeated hour at the end of DST takes its first occurrence.
    assert_eq!(
        at("2026-10-25 02:30:00 x"),
        Some(utc(2026, 10, 25, 0, 30, 0))
    );
    assert_eq!(
        at("2026-10-25 03:30:00 x"),
        Some(utc(2026, 10, 25, 2, 30, 0))
    );
}

#[test]
fn lines_of_one_minute_share_its_instant_only_where_that_is_right() {
    let at = |f: &Framer, line: &str, now: Timestamp| f.split(line.as_bytes(), now).time;
    let local = utc_framer();
    let n = now();
    for s in [0, 7, 59] {
        assert_eq!(
            at(&local, &format!("Nov 21 08:13:{s:02} h x: y"), n),
            Some(utc(2026, 11, 21, 8, 13, s)),
        );
    }
    // Another `now` may put the same stamp in another year.
    let later = utc(2027, 11, 19, 0, 0, 0);
    assert_eq!(
        at(&local, "Nov 21 08:13:07 h x: y", later),
        Some(utc(2026, 11, 21, 8, 13, 7))
    );
    let next_day = utc(2027, 11, 21, 0, 0, 0);
    assert_eq!(
        at(&local, "Nov 21 08:13:08 h x: y", next_day),
        Some(utc(2027, 11, 21, 8, 13, 8))
    );
    // Another zone, then the first again.
    let berlin = Framer {
        tz: LogTz::parse("Europe/Berlin").expect("tz"),
        pattern: None,
    };
    assert_eq!(
        at(&berlin, "Nov 21 08:13:09 h x: y", n),
        Some(utc(2026, 11, 21, 7, 13, 9))
    );
    assert_eq!(
        at(&local, "Nov 21 08:13:09 h x: y", n),
        Some(utc(2026, 11, 21, 8, 13, 9))
    );
    // A minute that does not exist, and one that happens twice (its first time).
    assert_eq!(at(&berlin, "Mar 29 02:30:01 h x: y", n), None);
    assert_eq!(at(&berlin, "Mar 29 02:30:02 h x: y", n), None);
    assert_eq!(
        at(&berlin, "Oct 25 02:30:01 h x: y", n),
        Some(utc(2026, 10, 25, 0, 30, 1))
    );
    assert_eq!(
        at(&berlin, "Oct 25 02:30:02 h x: y", n),
        Some(utc(2026, 10, 25, 0, 30, 2))
    );
    // A second past 59 (a leap second) is no time, and leaves the minute alone.
    assert_eq!(at(&local, "Nov 21 08:13:60 h x: y", n), None);
    assert_eq!(
        at(&local, "Nov 21 08:13:10 h x: y", n),
        Some(utc(2026, 11, 21, 8, 13, 10))
    );
}

#[test]
fn framings_seen_in_real_logs_lose_their_stamps_and_headers() {
    let msg = "Failed password for root from 192.0.2.7 port 22 ssh2";
    // A one-digit day after one space.
    let (t, m) = split(&format!("Feb 7 16:01:07 vps sshd[1]: {msg}"));
    assert_eq!((t, m.as_str()), (Some(utc(2026, 2, 7, 16, 1, 7)), msg));
    // A facility.severity field after the host.
    assert_eq!(
        split(&format!("Feb  7 16:01:07 vps auth.info sshd[1]: {msg}")).1,
        msg
    );
    assert_eq!(
        split(&format!("Feb  7 16:01:07 vps local7.warning sshd: {msg}")).1,
        msg
    );
    // Not a facility: the header is left alone.
    assert_eq!(
        split("Feb  7 16:01:07 vps a.b sshd[1]: x").1,
        "vps a.b sshd[1]: x"
    );
    // An ISO stamp with a space and an offset, before a syslog host.
    for stamp in ["2022-10-19 05:34:02 +0000", "2022-10-19 05:34:02+0000"] {
        let (t, m) = split(&format!("{stamp} vps sshd[1234]: {msg}"));
        assert_eq!(
            (t, m.as_str()),
            (Some(utc(2022, 10, 19, 5, 34, 2)), msg),
            "{stamp}"
        );
    }
    // ... but an application's own log after such a stamp keeps its words.
    assert_eq!(
        split("2022-10-19 05:34:02 worker main: started").1,
        "worker main: started"
    );
    // Solaris and illumos: `[ID n facility.severity]` starts the message.
    assert_eq!(
        split(&format!(
            "Feb  7 16:01:07 sol sshd[1]: [ID 800047 auth.info] {msg}"
        ))
        .1,
        msg
    );
    // BIND's own stamp inside the message.
    assert_eq!(
        split("Oct 19 05:34:02 ns named[1]: 19-Oct-2022 05:34:02.425 client @0x7f 192.0.2.8#53: x")
            .1,
        "client @0x7f 192.0.2.8#53: x"
    );
    // vsftpd: ctime with one space before a one-digit day.
    let (t, m) = split("Mon Jun 8 12:08:53 2020 [pid 1] [root] FAIL LOGIN: Client \"192.0.2.9\"");
    assert_eq!(t, Some(utc(2020, 6, 8, 12, 8, 53)));
    assert_eq!(m, "[pid 1] [root] FAIL LOGIN: Client \"192.0.2.9\"");
    // The tag in brackets, no host (BSD, macOS).
    assert_eq!(split(&format!("Mar  3 00:17:22 [sshd]: {msg}")).1, msg);
    assert_eq!(split(&format!("Jun 25 23:53:34 [sshd] {msg}")).1, msg);
    assert_eq!(
        split("Jun 25 23:53:34 [4264] FATAL: x").1,
        "[4264] FATAL: x"
    );
    // A day that is no day is no stamp.
    assert_eq!(split("Feb 0 16:01:07 vps x").0, None);
    assert_eq!(split("Feb 32 16:01:07 vps x").0, None);
}

#[test]
fn multilog_stamps_and_exported_journal_lines_are_framed() {
    // TAI64N: 2^62 + 10 + 1_700_000_000 seconds, 5 ns.
    let label = format!("@{:016x}{:08x}", (1u64 << 62) + 10 + 1_700_000_000, 5);
    let line = format!("{label} imap-login: x");
    let framed = split_line(line.as_bytes(), utc(2026, 1, 1, 0, 0, 0));
    assert_eq!(
        framed.time.map(|t| t.timestamp()),
        Some(1_700_000_000),
        "{label}"
    );
    assert_eq!(framed.message, b"imap-login: x");
    assert_eq!(split("@4000zz x").0, None, "not hex: no stamp");
    // An entry exported without its time: the header with a pid goes, and names the
    // process; without a pid it stays.
    let framed = split_line(
        b"srv sshd[4102]: Connection closed by 192.0.2.1",
        utc(2026, 1, 1, 0, 0, 0),
    );
    assert_eq!(framed.message, b"Connection closed by 192.0.2.1");
    assert_eq!(framed.process, Some(&b"srv sshd[4102]: "[..]));
    assert_eq!(split("srv sshd: x").1, "srv sshd: x");
    // An access log line is not a header.
    let access = "192.0.2.1 - - [21/Nov/2026:08:13:46 +0000] \"GET / HTTP/1.1\" 200 1";
    assert_eq!(split(access).1, access);
}

#[test]
fn the_process_is_named_only_by_a_header_with_a_pid() {
    let now = utc(2026, 1, 1, 0, 0, 0);
    let p = |l: &str| split_line(l.as_bytes(), now).process.map(|p| p.to_vec());
    assert_eq!(
        p("Nov 21 08:13:46 web1 sshd[42]: x"),
        Some(b"web1 sshd[42]: ".to_vec())
    );
    assert_eq!(p("Nov 21 08:13:46 web1 sshd: x"), None);
    assert_eq!(p("Nov 21 08:13:46 [sshd]: x"), None);
    assert_eq!(
        p("<38>1 2019-07-08T17:40:16.954167-04:00 h.example sshd 57915 - - x"),
        Some(b"h.example sshd 57915 ".to_vec())
    );
    assert_eq!(
        p("<38>1 2019-07-08T17:40:16.954167-04:00 h.example sshd - - - x"),
        None
    );
}

#[test]
fn day_first_numeric_stamps_and_a_thread_id_before_a_stamp() {
    let (t, m) = split("03-07-2005 23:07:20   SMTP Server: x");
    assert_eq!(t, Some(utc(2005, 7, 3, 23, 7, 20)));
    assert_eq!(m, "SMTP Server: x");
    assert_eq!(
        split("22/06/2014 09:56:12 smtp: y").0,
        Some(utc(2014, 6, 22, 9, 56, 12))
    );
    let (t, m) = split("[28325:00010-3735542592] 22-06-2014 09:56:12   smtp: z");
    assert_eq!(t, Some(utc(2014, 6, 22, 9, 56, 12)));
    assert_eq!(m, "smtp: z");
    // Not a date: month 13; and a bracketed id without a stamp after it stays.
    assert_eq!(split("03-13-2005 23:07:20 x").0, None);
    assert_eq!(split("[1a:2b] hello").1, "[1a:2b] hello");
}
