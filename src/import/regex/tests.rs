//! The translation of fail2ban's regexes: tags, Python syntax, multi-line roles, what
//! fail2ban's removal of a date leaves, date patterns.

use super::*;

#[test]
fn tags_become_groups_and_host() {
    assert_eq!(
        translate(
            "^Failed for <F-USER>\\S+</F-USER> from <ADDR> <F-ID>\\d+</F-ID>$",
            false
        ),
        Ok("^Failed for (?P<user>\\S+) from <HOST> (?:\\d+)$".into())
    );
    // A second user field is a plain group (Rust forbids a repeated name).
    assert_eq!(
        translate("^<F-USER>a</F-USER>|<F-USER>b</F-USER> <HOST>$", false),
        Ok("^(?P<user>a)|(?:b) <HOST>$".into())
    );
    assert_eq!(
        translate_any("^<F-CONTENT>.+</F-CONTENT>$"),
        Ok("^(?P<content>.+)$".into())
    );
    assert!(translate("^<F-CONTENT>.+</F-CONTENT>$", false).is_err());
    assert_eq!(
        translate("^<ADDR>(?::<F-PORT/>)? x", false),
        Ok("^<HOST>(?::(?:\\w+))? x".into())
    );
}

#[test]
fn python_syntax_rewritten_where_equivalent() {
    assert_eq!(
        translate("^a{,3} <HOST>\\Z", false),
        Ok("^a{0,3} <HOST>\\z".into())
    );
    assert_eq!(
        translate("^x(?#note) <HOST>(?=\\s|$)", false),
        Ok("^x <HOST>(?:\\s|$)".into())
    );
    assert_eq!(
        translate("(?<=from )<HOST>$", false),
        Ok("(?:from )<HOST>$".into())
    );
    assert_eq!(
        translate("^[]a] <HOST>$", false),
        Ok("^[\\]a] <HOST>$".into())
    );
    assert_eq!(
        translate("^[^]] <HOST>$", false),
        Ok("^[^\\]] <HOST>$".into())
    );
    assert_eq!(
        translate("^[(?!] <HOST>$", false),
        Ok("^[(?!] <HOST>$".into())
    );
    assert_eq!(
        translate("^[^[]* <HOST>$", false),
        Ok("^[^\\[]* <HOST>$".into())
    );
    assert_eq!(
        translate("^[a&&b] <HOST>$", false),
        Ok("^[a\\&\\&b] <HOST>$".into())
    );
    assert_eq!(
        translate("^{[^}]+} <HOST>$", false),
        Ok("^\\{[^}]+} <HOST>$".into())
    );
    assert_eq!(
        translate("^a{2} <HOST>$", false),
        Ok("^a{2} <HOST>$".into())
    );
}

#[test]
fn look_around_and_backreferences_are_kept_for_the_backtracking_engine() {
    for re in [
        r"^(a) \1 <HOST> x",
        r"^(?P<x>a) (?P=x) <HOST> x",
        r"^(?!root) <HOST> x",
        r"^a(?=b) <HOST> x",
    ] {
        assert_eq!(translate(re, false).as_deref(), Ok(re));
    }
    // Python groups named like gaoler's placeholders are renamed.
    assert_eq!(
        translate(r"^(?P<USER>\S+) again (?P=USER) <HOST>$", false),
        Ok(r"^(?P<f2b_USER>\S+) again (?P=f2b_USER) <HOST>$".into())
    );
    // A literal backslash-n in the log is no newline.
    assert!(translate(r"^x '(?:\\n)?' <HOST>$", false).is_ok());
    assert!(translate(r"^x\ny <HOST>$", false).is_err());
}

#[test]
fn multi_line_tags_give_session_roles() {
    assert_eq!(
        tagged("^<F-NOFAIL>Connection from</F-NOFAIL> <HOST>"),
        Tagged::Note
    );
    assert_eq!(
        tagged(r"^<F-MLFFORGET><F-MLFGAINED>Accepted \w+</F-MLFGAINED></F-MLFFORGET> for"),
        Tagged::Success
    );
    assert_eq!(
        tagged("^<F-NOFAIL><F-MLFFORGET>Connection closed</F-MLFFORGET></F-NOFAIL> by <HOST>"),
        Tagged::End
    );
    assert_eq!(tagged("^Failed for <HOST>"), Tagged::Fail);
    // Without sessions a failure needs an address; with them it may lack one.
    assert!(translate("^Too many failures", false).is_err());
    assert_eq!(
        translate("^Too many failures", true).as_deref(),
        Ok("^Too many failures")
    );
}

#[test]
fn what_has_no_equivalent_is_refused_with_the_reason() {
    for (re, why) in [
        ("^a<SKIPLINES>b <HOST>", "SKIPLINES"),
        ("^a <DNS>", "host names"),
    ] {
        let err = translate(re, false).expect_err(re);
        assert!(err.contains(why), "{re}: {err}");
    }
}

#[test]
fn date_remnants_and_blanks_at_the_line_start() {
    // fail2ban's `[]` where a bracketed date stood: gone at the start, one
    // bracketed field elsewhere (an access log keeps its stamp in gaoler's text).
    let apache =
        translate(r"^\[\]\s\[(:?error|\S+:\S+)\] \[client <HOST>\] x", false).expect("translates");
    assert_eq!(
        line_start(&apache),
        r"^\s?\[(:?error|\S+:\S+)\] \[client <HOST>\] x"
    );
    let access = translate(r#"^<HOST> - \S+ \[\] "GET"#, false).expect("translates");
    assert_eq!(line_start(&access), r#"^<HOST> - \S+ \[[^\]]*\] "GET"#);
    // Blanks first (also inside optional groups, and past what may be empty)
    // become optional; so do a `:` and a zone offset the stamp left.
    assert_eq!(
        line_start(r"^(?: \[\d+\]| \w+ exim\[\d+\]:)? \w+ failed <HOST>"),
        r"^(?: ?\[\d+\]| ?\w+ exim\[\d+\]:)? ?\w+ failed <HOST>"
    );
    assert_eq!(line_start(r"^\s+\d\s<HOST>"), r"^\s*\d\s<HOST>");
    assert_eq!(line_start(r"^: Failed <HOST>"), r"^:? ?Failed <HOST>");
    assert_eq!(
        line_start(r"^\s[+-]\d{4} \S+ <HOST>"),
        r"^\s?(?:[+-]\d{4})? ?\S+ <HOST>"
    );
    assert_eq!(
        line_start(r"^\s*(\[[^\]]*\])?(\S+ IMAP Error)?: (?P<content>.+)$"),
        // (an emptied group stays: backreferences count groups)
        r"^\s*()?(\S+ IMAP Error)?:? ?(?P<content>.+)$"
    );
    // What comes after the first required part stays.
    assert_eq!(line_start(r"^Failed \s+<HOST>"), r"^Failed \s+<HOST>");
    assert_eq!(line_start(r"^(?!x) <HOST>"), r"^(?!x) <HOST>");
}

#[test]
fn alternatives_each_holding_the_address_share_one() {
    assert_eq!(
        translate(r"^\[(?:IPv6:<IP6>|<IP4>)\]: x", false).as_deref(),
        Ok(r"^\[(?:(?:IPv6:|)<HOST>(?:|))\]: x")
    );
    // An address nested deeper in an alternative stays where it is.
    assert_eq!(
        translate(r"^(?:a(<HOST>)|<HOST>) x", false).as_deref(),
        Ok(r"^(?:a(<HOST>)|<HOST>) x")
    );
}

#[test]
fn a_port_after_a_final_address_and_global_flags() {
    assert_eq!(
        translate("^x from <ADDR>", false).as_deref(),
        Ok(r"^x from <HOST>(?::\d+)?")
    );
    assert_eq!(
        translate(r"^x from <HOST>\b", false).as_deref(),
        Ok(r"^x from <HOST>(?::\d+)?\b")
    );
    assert_eq!(
        translate("^x <HOST>: (?:(?i)expn|vrfy)", false).as_deref(),
        Ok("(?i)^x <HOST>: (?:expn|vrfy)")
    );
}

#[test]
fn datepatterns() {
    assert_eq!(datepattern("{^LN-BEG}"), Ok(None));
    assert_eq!(
        datepattern("^%%Y-%%m-%%d %%H:%%M:%%S"),
        Ok(Some("%Y-%m-%d %H:%M:%S".into()))
    );
    assert_eq!(
        datepattern("^%ExY-%Exm-%Exd %ExH:%ExM:%ExS"),
        Ok(Some("%Y-%m-%d %H:%M:%S".into()))
    );
    assert!(datepattern("{^LN-BEG}%ExY%Exm%Exd  ?%H:%M:%S").is_err());
    assert_eq!(datepattern("{EPOCH}"), Ok(Some("epoch".into())));
    // One format of its own beside the default detection is that format.
    assert_eq!(
        datepattern("{^LN-BEG}%%b-%%d-%%Exy %%H:%%M:%%S\n{^LN-BEG}"),
        Ok(Some("%b-%d-%y %H:%M:%S".into()))
    );
    assert!(datepattern("^%%Y %%H:%%M\n^%%d %%H:%%M").is_err());
    assert_eq!(datepattern("{NONE}"), Ok(Some("none".into())));
    assert!(datepattern("%%d/%%b/%%Y:%%H:%%M:%%S %%z").is_err());
    // Escaped punctuation is itself; brackets around the stamp are gaoler's own.
    assert_eq!(
        datepattern("^\\[%%d/%%b/%%Y %%H:%%M:%%S\\]"),
        Ok(Some("%d/%b/%Y %H:%M:%S".into()))
    );
    assert!(datepattern("^\\[%%d %%H\\]+").is_err());
}
