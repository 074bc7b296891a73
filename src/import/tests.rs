//! The importer on a hand-written fail2ban tree: includes, interpolation, .local
//! overrides in fail2ban's order, filter modes, and the regex rewrites, ending in a
//! configuration `config::load` accepts.

use std::path::Path;

use super::*;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn tree(dir: &Path) {
    write(
        dir,
        "fail2ban.conf",
        "[Definition]\nloglevel = NOTICE\ndbpurgeage = 2d\n",
    );
    write(
        dir,
        "paths-common.conf",
        "[DEFAULT]\nweb_log = /var/log/web/access.log\nauth_log = /var/log/auth.log\n",
    );
    write(
        dir,
        "jail.conf",
        "[INCLUDES]\nbefore = paths-common.conf\n\n[DEFAULT]\nmaxretry = 5\nfindtime = 10m\nbantime = 1h\nignoreip = 127.0.0.1/8 ::1 trusted.example.org\nmode = normal\nfilter = %(__name__)s[mode=%(mode)s]\nport = 0:65535\naction = %(banaction)s\nbanaction = nftables-multiport\n\n[sshd]\nport = ssh\nlogpath = %(auth_log)s\n\n[app]\nport = http,https\nlogpath = %(web_log)s\n          /var/log/web/other.log\nbantime = 1 day\nbantime.increment = true\nbantime.factor = 2\nbantime.maxtime = 4w\n\n[recidive]\nlogpath = /var/log/fail2ban.log\nbantime = 1w\nfindtime = 1d\n\n[unused]\nlogpath = /x\n",
    );
    // jail.d/*.conf, then jail.local, then jail.d/*.local: the last word wins.
    write(
        dir,
        "jail.d/10-enable.conf",
        "[sshd]\nenabled = true\nmaxretry = 9\n[app]\nenabled = true\n[recidive]\nenabled = true\n",
    );
    write(
        dir,
        "jail.local",
        "[sshd]\nmaxretry = 3\nbantime = %(known/bantime)s\n[app]\nmode = aggressive\n",
    );
    write(
        dir,
        "jail.d/20-last.local",
        "[sshd]\nfindtime = 20m\naction = %(action_mw)s\naction_mw = mail-whois\n",
    );
    write(
        dir,
        "filter.d/common.conf",
        "[DEFAULT]\n_daemon = \\S*\n__prefix_line = \\s*\\S+ %(_daemon)s\\[\\d+\\]:\\s+\n",
    );
    write(
        dir,
        "filter.d/sshd.conf",
        "[INCLUDES]\nbefore = common.conf\n[DEFAULT]\n_daemon = sshd\n[Definition]\nfailregex = ^%(__prefix_line)sFailed \\S+ for <F-USER>.+</F-USER> from <HOST> port \\d+\n            ^%(__prefix_line)sBad user (?P<u>\\w+) again (?P=u) from <HOST>\nignoreregex = ^%(__prefix_line)s.*from 10\\.0\\.0\\.\\d+\njournalmatch = _SYSTEMD_UNIT=sshd.service + _COMM=sshd\n",
    );
    write(dir, "filter.d/sshd.local", "[Definition]\nignoreregex =\n");
    write(
        dir,
        "filter.d/app.conf",
        "[Init]\nmode = normal\n[Definition]\nmdre-normal = ^<ADDR> - \\S+ \\[\\] \"POST /login\n\nmdre-aggressive = %(mdre-normal)s\n             ^<ADDR> - \\S+ \\[\\] \"GET /wp-login\\.php(?=\\s)\nfailregex = <mdre-<mode>>\n            ^<ADDR> .* 4{,2}01$\ndatepattern = ^%%Y-%%m-%%d %%H:%%M:%%S\n",
    );
}

#[test]
fn mail_and_abuseipdb_actions_become_recipes_with_their_options() {
    let mut notes = Vec::new();
    let text = "%(banaction)s[port=ssh]\n sendmail-whois-lines[sender=\"f2b@h\", dest=\"admin@example.org\"]\n abuseipdb[abuseipdb_apikey=\"SECRET\", abuseipdb_category=\"18,22\"]";
    let recipes = super::jail::recipes_of(text, None, &mut notes);
    assert_eq!(
        recipes,
        [
            super::jail::Recipe::Mail {
                dest: "admin@example.org".into()
            },
            super::jail::Recipe::AbuseIpdb
        ]
    );
    let joined = notes.join("\n");
    assert!(joined.contains("ABUSEIPDB_CATEGORIES=18,22"), "{joined}");
    assert!(
        !joined.contains("SECRET"),
        "the key is never copied: {joined}"
    );
}

#[test]
fn a_hand_written_tree_converts_and_passes_the_check() {
    let src = tempfile::tempdir().expect("tmp");
    let out = tempfile::tempdir().expect("tmp");
    tree(src.path());
    let report = import(src.path(), out.path()).expect("import");
    let text = report.render();
    let read = |rel: &str| std::fs::read_to_string(out.path().join(rel)).expect(rel);

    // .local order: jail.d/*.conf (9), jail.local (3) wins; known/ reads the replaced value.
    let sshd: toml::Table = toml::from_str(&read("jails/sshd.toml")).expect("toml");
    assert_eq!(sshd["maxretry"].as_integer(), Some(3));
    assert_eq!(sshd["bantime"].as_str(), Some("1h"));
    assert_eq!(sshd["findtime"].as_str(), Some("20m"));
    assert_eq!(sshd["ports"].as_array().map(Vec::len), Some(1));
    assert_eq!(sshd["logpath"][0].as_str(), Some("/var/log/auth.log"));
    assert_eq!(sshd["filter"].as_str(), Some("sshd"));
    assert!(text.contains("mail on ban"), "{text}");
    // The mail action became the mail recipe, written beside the config.
    let notify = &sshd["notify"][0];
    assert_eq!(notify["on"][0].as_str(), Some("ban"));
    let argv: Vec<&str> = notify["exec"]
        .as_array()
        .expect("exec")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        argv,
        [
            "notify/mail",
            "root",
            "{ip}",
            "{jail}",
            "{count}",
            "{bantime}",
            "{matches}"
        ]
    );
    let script = out.path().join("notify/mail");
    let mode = std::fs::metadata(&script).expect("recipe").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111,
        0o111
    );

    // The app jail asked for mode=aggressive: a filter of its own.
    let app: toml::Table = toml::from_str(&read("jails/app.toml")).expect("toml");
    assert_eq!(app["filter"].as_str(), Some("app-aggressive"));
    assert_eq!(app["bantime"].as_str(), Some("1d"));
    assert_eq!(app["logpath"].as_array().map(Vec::len), Some(2));
    assert_eq!(app["bantime_increment"]["maxtime"].as_str(), Some("4w"));
    let aggressive = read("filters/app-aggressive.toml");
    assert!(
        aggressive.contains(r#"^<HOST> - \S+ \[[^\]]*\] "GET /wp-login\.php(?:\s)"#),
        "{aggressive}"
    );
    assert!(aggressive.contains("4{0,2}01$"), "{aggressive}");
    assert!(
        aggressive.contains("datepattern = '''%Y-%m-%d %H:%M:%S'''"),
        "{aggressive}"
    );
    let normal = read("filters/app.toml");
    assert!(!normal.contains("wp-login"), "{normal}");

    // The prefix is gaoler's framing; the backreference is kept (gaoler runs it on
    // its backtracking engine).
    let filter = read("filters/sshd.toml");
    assert!(
        filter.contains(r"'''^Failed \S+ for (?P<user>.+) from <HOST> port \d+'''"),
        "{filter}"
    );
    assert!(
        filter.contains(r"'''^Bad user (?P<u>\w+) again (?P=u) from <HOST>(?::\d+)?'''"),
        "{filter}"
    );
    assert!(
        !filter.contains("10\\.0"),
        "sshd.local emptied ignoreregex: {filter}"
    );

    // recidive becomes the native one; defaults and fail2ban.conf land in gaoler.toml.
    let main: toml::Table = toml::from_str(&read("gaoler.toml")).expect("toml");
    assert_eq!(main["recidive"]["bantime"].as_str(), Some("1w"));
    assert_eq!(main["daemon"]["log_level"].as_str(), Some("info"));
    assert_eq!(main["daemon"]["dbpurgeage"].as_str(), Some("2d"));
    assert_eq!(
        main["defaults"]["ignoreip"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(text.contains("trusted.example.org"), "{text}");
    assert!(!out.path().join("jails/recidive.toml").exists());
    assert!(report.disabled.contains(&"unused".to_string()));

    crate::config::load(out.path()).unwrap_or_else(|e| panic!("check fails: {:?}\n{text}", e.0));
}

#[test]
fn it_refuses_to_overwrite_a_gaoler_config_or_read_a_non_fail2ban_dir() {
    let src = tempfile::tempdir().expect("tmp");
    let out = tempfile::tempdir().expect("tmp");
    assert!(matches!(
        import(src.path(), out.path()),
        Err(ImportError::NotFail2ban(_))
    ));
    tree(src.path());
    write(out.path(), "gaoler.toml", "");
    assert!(matches!(
        import(src.path(), out.path()),
        Err(ImportError::OutputExists(_))
    ));
}

#[test]
fn journal_matches_keep_what_gaoler_can_express() {
    assert_eq!(
        journal_matches("_SYSTEMD_UNIT=sshd.service + _COMM=sshd"),
        (vec!["_COMM=sshd".to_string()], true)
    );
    assert_eq!(
        journal_matches("_COMM=a + _COMM=b"),
        (vec!["_COMM=a".to_string(), "_COMM=b".to_string()], false)
    );
}
