//! Unit tests of the filter engine with small inline regexes; the shipped filters are
//! tested against their fixtures in the integration tests.

use super::*;

fn filter(fail: &[&str], ignore: &[&str], pref: Option<&str>) -> Filter {
    let fail: Vec<String> = fail.iter().map(|s| s.to_string()).collect();
    let ignore: Vec<String> = ignore.iter().map(|s| s.to_string()).collect();
    Filter::new("t", &fail, &ignore, pref).expect("filter compiles")
}

fn host(v: &Verdict) -> Option<String> {
    match v {
        Verdict::Failure(f) => Some(f.host.to_string()),
        _ => None,
    }
}

#[test]
fn host_matches_ipv4_ipv6_and_normalises_mapped_addresses() {
    let f = filter(&[r"^fail from <HOST>$"], &[], None);
    assert_eq!(
        host(&f.examine(b"fail from 192.0.2.7")).as_deref(),
        Some("192.0.2.7")
    );
    assert_eq!(
        host(&f.examine(b"fail from 2001:db8::7")).as_deref(),
        Some("2001:db8::7")
    );
    assert_eq!(host(&f.examine(b"fail from ::1")).as_deref(), Some("::1"));
    assert_eq!(
        host(&f.examine(b"fail from ::ffff:192.0.2.7")).as_deref(),
        Some("192.0.2.7")
    );
    assert_eq!(
        host(&f.examine(b"fail from [2001:db8::8]")).as_deref(),
        Some("2001:db8::8")
    );
}

#[test]
fn text_that_is_not_an_address_is_never_a_host() {
    let f = filter(&[r"^fail from <HOST>$"], &[], None);
    for line in [
        &b"fail from 999.1.2.3"[..],
        b"fail from 1.2.3",
        b"fail from evil.example",
        b"fail from :::::",
    ] {
        assert_eq!(
            f.examine(line),
            Verdict::Miss,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn user_is_captured_and_greedy_so_a_forged_address_loses() {
    let f = filter(&[r"^Invalid user <USER> from <HOST> port \d+$"], &[], None);
    let line = b"Invalid user evil from 203.0.113.9 port 1 from 192.0.2.7 port 22";
    assert_eq!(host(&f.examine(line)).as_deref(), Some("192.0.2.7"));
    let v = f.examine_detailed(line);
    match v {
        Verdict::Failure(found) => {
            assert_eq!(found.host.to_string(), "192.0.2.7");
            assert_eq!(found.user.as_deref(), Some("evil from 203.0.113.9 port 1"));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn ignoreregex_turns_a_failure_into_ignored() {
    let f = filter(&[r"^fail <USER> from <HOST>$"], &[r"^fail backup "], None);
    assert!(matches!(
        f.examine(b"fail backup from 192.0.2.7"),
        Verdict::Ignored(_)
    ));
    assert!(matches!(
        f.examine(b"fail root from 192.0.2.7"),
        Verdict::Failure(_)
    ));
}

#[test]
fn prefregex_selects_content_and_skips_other_lines() {
    let f = filter(
        &[r"^auth failed <HOST>$"],
        &[],
        Some(r"^\[app\] (?P<content>.*)$"),
    );
    assert_eq!(
        host(&f.examine(b"[app] auth failed 192.0.2.7")).as_deref(),
        Some("192.0.2.7")
    );
    assert_eq!(f.examine(b"auth failed 192.0.2.7"), Verdict::Miss);
}

#[test]
fn invalid_utf8_around_the_match_does_not_prevent_it() {
    let f = filter(&[r"^fail \S+ from <HOST>$"], &[], None);
    assert_eq!(
        host(&f.examine(b"fail \xff\xfe from 192.0.2.7")).as_deref(),
        Some("192.0.2.7")
    );
}

#[test]
fn invalid_utf8_in_a_user_name_cannot_evade_the_filter() {
    let f = filter(&[r"^Invalid user <USER> from <HOST>$"], &[], None);
    assert_eq!(
        host(&f.examine(b"Invalid user \xff\x80 from 192.0.2.7")).as_deref(),
        Some("192.0.2.7")
    );
    // Non-ASCII literals in a pattern still match their UTF-8 bytes.
    let f = filter(&["^échec <HOST>$"], &[], None);
    assert_eq!(
        host(&f.examine("échec 192.0.2.7".as_bytes())).as_deref(),
        Some("192.0.2.7")
    );
}

#[test]
fn the_first_failregex_that_yields_an_address_wins() {
    let f = filter(&[r"^a <HOST>$", r"^a (?:x|<HOST>)$"], &[], None);
    match f.examine(b"a 192.0.2.1") {
        Verdict::Failure(found) => assert_eq!(found.regex, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_compile_problem_is_reported_with_its_regex() {
    let fail = vec!["^no host here$".to_string(), "^bad ( <HOST>".to_string()];
    let ignore = vec!["[".to_string()];
    let errors = Filter::new("t", &fail, &ignore, Some("^(?P<other>.*)$")).expect_err("invalid");
    let roles: Vec<RegexRole> = errors.iter().map(|e| e.role).collect();
    assert_eq!(
        roles,
        vec![
            RegexRole::Fail(0),
            RegexRole::Fail(1),
            RegexRole::Ignore(0),
            RegexRole::Pref
        ]
    );
    assert!(errors[0].message.contains("<HOST>"));
    assert!(errors[1].message.contains("invalid regex"));
}

fn proxies() -> TrustedProxies {
    TrustedProxies::new(vec![
        "127.0.0.1/32".parse().expect("net"),
        "::1/128".parse().expect("net"),
    ])
}

#[test]
fn a_trusted_proxys_failure_belongs_to_the_client_it_names() {
    let f = filter(&[r#"^<HOST> denied "<XFF>"$"#], &[], None);
    let p = proxies();
    for detailed in [false, true] {
        match f.examine_behind(b"127.0.0.1 denied \"6.6.6.6, 203.0.113.9\"", &p, detailed) {
            Verdict::Failure(found) => {
                assert_eq!(found.host.to_string(), "203.0.113.9");
                assert_eq!(
                    found.via.map(|v| v.to_string()).as_deref(),
                    Some("127.0.0.1")
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // An untrusted peer is the offender, whatever its X-Forwarded-For says.
    assert_eq!(
        host(&f.examine_behind(b"192.0.2.5 denied \"6.6.6.6\"", &p, false)).as_deref(),
        Some("192.0.2.5")
    );
    // The proxy itself is never the offender.
    for line in [
        &b"127.0.0.1 denied \"-\""[..],
        b"127.0.0.1 denied \"\"",
        b"::1 denied \"127.0.0.1\"",
    ] {
        assert!(
            matches!(f.examine_behind(line, &p, false), Verdict::NoClient(_)),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    // Without trusted proxies the filter works as before.
    assert_eq!(
        host(&f.examine(b"127.0.0.1 denied \"6.6.6.6\"")).as_deref(),
        Some("127.0.0.1")
    );
}

#[test]
fn with_trusted_proxies_only_the_peer_field_is_ignored() {
    let f = filter(&[r#"^<HOST> denied "<XFF>"$"#], &[], None);
    let p = proxies().only(true);
    // A line forged with a newline in a logged user name starts with any address;
    // the X-Forwarded-For at its end is still the proxy's.
    match f.examine_behind(b"6.6.6.6 denied \"198.51.100.9\"", &p, false) {
        Verdict::Failure(found) => {
            assert_eq!(found.host.to_string(), "198.51.100.9");
            assert_eq!(found.via, None);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.examine_behind(b"6.6.6.6 denied \"-\"", &p, false),
        Verdict::NoClient(_)
    ));
    assert_eq!(
        host(&f.examine_behind(b"127.0.0.1 denied \"198.51.100.9\"", &p, true)).as_deref(),
        Some("198.51.100.9")
    );
}

#[test]
fn a_proxy_line_from_a_filter_without_xff_names_no_client() {
    let f = filter(&[r"^<HOST> denied$"], &[], None);
    assert!(matches!(
        f.examine_behind(b"127.0.0.1 denied", &proxies(), false),
        Verdict::NoClient(_)
    ));
}

#[test]
fn url_decoding_lets_encoded_probes_match_but_not_move_fields() {
    let f = filter(&[r#"^<HOST> "GET [^"]*\.\./[^"]*"$"#], &[], None).with_decode(Decode::Url);
    assert_eq!(
        host(&f.examine(b"192.0.2.1 \"GET /%2e%2E%2Fetc\"")).as_deref(),
        Some("192.0.2.1")
    );
    assert_eq!(
        host(&f.examine(b"192.0.2.1 \"GET /%252e%252e%252fetc\"")).as_deref(),
        Some("192.0.2.1")
    );
    // %22 does not become a quote that would end the field early.
    let g = filter(&[r#"^<HOST> "GET [^"]*\.\./[^"]*" 404$"#], &[], None).with_decode(Decode::Url);
    assert_eq!(
        host(&g.examine(b"192.0.2.1 \"GET /..%2f%22\" 404")).as_deref(),
        Some("192.0.2.1")
    );
    let plain = filter(&[r#"^<HOST> "GET [^"]*\.\./[^"]*"$"#], &[], None);
    assert_eq!(
        plain.examine(b"192.0.2.1 \"GET /%2e%2e%2fetc\""),
        Verdict::Miss
    );
}

#[test]
fn an_address_between_non_address_bytes_is_delimited() {
    use super::host::host_is_delimited as delimited;
    let x = |s: &str| expand_placeholders(s);
    assert!(delimited(&x(r"^Failed for \S+ from <HOST> port \d+$")));
    assert!(delimited(&x(
        r"^Received disconnect from <HOST>(?: port \d+)? 3: .*$"
    )));
    // `:` may continue an address (IPv6, or a port after IPv4).
    assert!(!delimited(&x(
        r"^Received disconnect from <HOST>(?: port \d+)?:\s*3: .*$"
    )));
    assert!(delimited(&x(r"^<HOST> - - \[")));
    assert!(delimited(&x(r"^from <HOST>(?: port \d+)?$")));
    // The address may run on into an address byte, or start inside a token.
    assert!(!delimited(&x(r"^from <HOST>")));
    assert!(!delimited(&x(r"^client <HOST>:\d+ x$")));
    assert!(!delimited(&x(r"^x\S*<HOST> y$")));
    assert!(!delimited(&x(r"^(?:a|b)<HOST> y$")));
}

#[test]
fn literal_starts_are_found_for_anchored_regexes_only() {
    use super::host::prefix_literals as starts;
    let x = |s: &str| expand_placeholders(s);
    let lits = starts(&x(r"^(?:error: )?Received disconnect from <HOST>$")).expect("starts");
    assert!(lits.contains(&b"Received dis".to_vec()), "{lits:?}");
    assert!(lits.contains(&b"error: Recei".to_vec()), "{lits:?}");
    assert_eq!(starts(&x(r"Received <HOST>")), None, "unanchored");
    assert_eq!(starts(&x(r"^<HOST> x")), None, "an address first");
    assert_eq!(starts(&x(r"^.*<HOST>")), None);
}

#[test]
fn the_longest_literal_every_match_contains_is_found() {
    use super::host::required_literal as required;
    let x = |s: &str| expand_placeholders(s);
    assert_eq!(
        required(&x(
            r"^(?:error: )?Received disconnect from <HOST>(?: port \d+)?:\s*3: .*: Auth fail$"
        )),
        Some(b": Auth fail".to_vec())
    );
    assert_eq!(
        required(&x(
            r"^pam_[a-z]+\(sshd:auth\):\s+authentication failure; rhost=<HOST>$"
        )),
        Some(b"authentication failure; rhost=".to_vec())
    );
    // Optional or alternative parts are not required.
    assert_eq!(required(&x(r"^x <HOST>(?: port \d+)?$")), None);
    assert_eq!(required(&x(r"^x (?:abc|abd) <HOST>$")), None);
    // A filter skips a regex whose required text is missing, and finds the next one.
    let f = filter(
        &[r"^from <HOST>: 3: .*: Auth fail$", r"^from <HOST>: 11: .*$"],
        &[],
        None,
    );
    match f.examine(b"from 192.0.2.9: 11: bye") {
        Verdict::Failure(found) => assert_eq!(found.regex, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_free_tail_is_left_out_of_yes_no_answers_without_changing_them() {
    use super::host::without_free_tail as probe;
    let x = |s: &str| expand_placeholders(s);
    // Nothing to leave out: no probe.
    assert_eq!(probe(&x(r"^from <HOST> port \d+$")), None);
    assert_eq!(probe(&x(r"^from <HOST>(?: \S+)?$")), None);
    assert_eq!(
        probe(&x(r"^from <HOST>.*")),
        None,
        "not anchored at the end"
    );
    let cases = [
        r"^Accepted \S+ for (?P<user>\S+) from <HOST>(?: port \d+)?(?: ssh\d*)?(?:: .*)?$",
        r"^(?:error: )?Received disconnect from <HOST>(?: port \d+)?:\s*11:.*$",
        r"^x <HOST>(?:: (?s:.+))?$",
        r"^(?:a .*|b)$",
        r"^c(?:: (?P<tail>.*))?$",
    ];
    let lines = [
        "Accepted publickey for pi from 192.0.2.1 port 22 ssh2: ED25519 SHA256:x",
        "Accepted publickey for pi from 192.0.2.1 port 22 ssh2",
        "Accepted publickey for pi from 192.0.2.1 port 22 ssh2:",
        "Accepted publickey for pi from 192.0.2.1 port 22 ssh2 trailing",
        "Accepted publickey for pi from 192.0.2.1: x",
        "Received disconnect from 192.0.2.1 port 22:11: bye",
        "Received disconnect from 192.0.2.1 port 22:11:",
        "error: Received disconnect from 192.0.2.1:12: bye",
        "x 192.0.2.1",
        "x 192.0.2.1: ",
        "x 192.0.2.1: y",
        "x 192.0.2.1:",
        "a ",
        "a anything",
        "b",
        "bb",
        "c",
        "c: d",
        "c:",
        "",
    ];
    for case in cases {
        let full = super::engine::linear(&x(case)).expect("full");
        let p = probe(&x(case)).unwrap_or_else(|| panic!("a probe for {case}"));
        let p = super::engine::linear(&p).expect("probe");
        for line in lines {
            assert_eq!(
                p.is_match(line.as_bytes()),
                full.is_match(line.as_bytes()),
                "{case} on {line:?}"
            );
        }
    }
    // A line with a newline goes to the whole regex (`.` stops there): the filter
    // answers as it does.
    let re = super::rules::FailRegex::new(&x(r"^a <HOST> .*$"), super::session::Role::End)
        .expect("regex");
    assert_eq!(re.is_match(b"a 192.0.2.1 b\nc"), Ok(false));
    assert_eq!(re.is_match(b"a 192.0.2.1 b c"), Ok(true));
}

#[test]
fn address_candidates_are_every_address_token_leftmost_first() {
    use super::host::Candidates;
    let line = b"Failed for fe80 from 2001:db8::1 port 22 via 192.0.2.7:80 on ::ffff:10.0.0.1 a.b.c.d 1.2.3";
    let found: Vec<String> = Candidates::find(line)
        .iter()
        .map(|(s, e, ip)| {
            assert_eq!(
                std::str::from_utf8(&line[s..e])
                    .ok()
                    .map(str::parse::<std::net::IpAddr>)
                    .and_then(Result::ok)
                    .map(|p| p.to_canonical()),
                Some(ip),
                "range of {ip}"
            );
            ip.to_string()
        })
        .collect();
    // `192.0.2.7:80` is one token that is no address: left to the regex engine.
    assert_eq!(found, ["2001:db8::1", "10.0.0.1"]);
    assert!(Candidates::find(line).complete());
    let many = "1.1.1.1 ".repeat(9);
    assert!(!Candidates::find(many.as_bytes()).complete());
    assert_eq!(Candidates::find(b"").iter().count(), 0);
    assert_eq!(Candidates::find(b"...:::").iter().count(), 0);
}
