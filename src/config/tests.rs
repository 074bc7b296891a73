//! Config loading tests on temporary directories: defaults, and every error reported
//! at its file:line:col.

use super::*;
use crate::filter::DatePattern;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new(main: &str) -> Dir {
        let d = Dir(tempfile::tempdir().expect("tempdir"));
        d.write("gaoler.toml", main);
        d.write(
            "filters/sshd.toml",
            "failregex = ['''^Failed password for <USER> from <HOST> port \\d+$''']\n",
        );
        d
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.0.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn load(&self) -> Result<Config, ConfigErrors> {
        load(self.0.path())
    }

    fn errors(&self) -> Vec<String> {
        match self.load() {
            Ok(_) => panic!("config should be invalid"),
            Err(e) => e.0.iter().map(|d| d.to_string()).collect(),
        }
    }
}

const MAIN: &str = r#"
[daemon]
state_dir = "state"
socket = "gaoler.sock"

[defaults]
maxretry = 3
ignoreip = ["10.0.0.0/8"]
"#;

#[test]
fn a_valid_config_loads_with_defaults_applied() {
    let d = Dir::new(MAIN);
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\nlogpath = \"auth.log\"\nignoreip = [\"192.0.2.0/24\"]\nbantime = \"1d12h\"\nports = [22, \"2200-2210\"]\n",
    );
    d.write("jails/off.toml", "enabled = false\nfilter = \"sshd\"\n");
    let cfg = d.load().expect("valid");
    assert_eq!(cfg.daemon.state_dir, d.0.path().join("state"));
    assert_eq!(cfg.daemon.filter_path[0], d.0.path().join("filters"));
    assert_eq!(cfg.firewall.table, "gaoler");
    assert_eq!(cfg.firewall.priority, -10);
    assert_eq!(cfg.jails.len(), 2);
    assert_eq!(cfg.enabled_jails().count(), 1);
    let j = cfg.jail("sshd").expect("sshd");
    assert_eq!(j.maxretry, 3, "from [defaults]");
    assert_eq!(j.findtime, Duration::from_secs(600), "built-in default");
    assert_eq!(j.bantime, BanTime::Finite(Duration::from_secs(129_600)));
    assert_eq!(j.logpath, vec![d.0.path().join("auth.log")]);
    assert_eq!(j.ports.len(), 2);
    // The jail's ignoreip adds to the defaults' list.
    assert_eq!(j.ignore.nets().len(), 2);
}

#[test]
fn unknown_keys_are_errors_at_their_position() {
    let d = Dir::new("[daemon]\nstate_dir = \"s\"\nsocket_grup = \"adm\"\n");
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\nlogpath = [\"a.log\"]\nmaxretries = 3\n",
    );
    let errors = d.errors();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("gaoler.toml:3:1:") && errors[0].contains("socket_grup"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("sshd.toml:3:1:") && errors[1].contains("maxretries"),
        "{}",
        errors[1]
    );
}

#[test]
fn a_missing_filter_is_reported_at_the_filter_key() {
    let d = Dir::new(MAIN);
    d.write(
        "jails/web.toml",
        "enabled = true\nfilter = \"nginx-nope\"\nlogpath = \"a.log\"\n",
    );
    let errors = d.errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("web.toml:2:10:"), "{}", errors[0]);
    assert!(
        errors[0].contains("filter `nginx-nope` not found"),
        "{}",
        errors[0]
    );
}

#[test]
fn bad_values_are_reported_where_they_stand() {
    let d = Dir::new(MAIN);
    d.write(
        "jails/a.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\nfindtime = \"10x\"\n",
    );
    d.write(
        "jails/b.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\nprotocol = \"tcpp\"\n",
    );
    d.write(
        "jails/c.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\nmaxretry = 0\n",
    );
    d.write(
        "jails/d.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\nports = [\"70000\"]\n",
    );
    d.write("jails/e.toml", "filter = \"sshd\"\n");
    d.write(
        "jails/f.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\nignoreip = [\"not-an-ip\"]\n",
    );
    let errors = d.errors();
    assert_eq!(errors.len(), 6, "{errors:#?}");
    assert!(
        errors[0].contains("a.toml:3:12:") && errors[0].contains("invalid duration"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("b.toml:3:12:") && errors[1].contains("tcpp"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("c.toml:3:12:") && errors[2].contains("maxretry"),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].contains("d.toml:3:") && errors[3].contains("70000"),
        "{}",
        errors[3]
    );
    assert!(
        errors[4].contains("e.toml:1:1:") && errors[4].contains("reads nothing"),
        "{}",
        errors[4]
    );
    assert!(
        errors[5].contains("f.toml:3:") && errors[5].contains("not-an-ip"),
        "{}",
        errors[5]
    );
}

#[test]
fn filter_problems_point_into_the_filter_file() {
    let d = Dir::new(MAIN);
    d.write(
        "filters/broken.toml",
        "failregex = [\n  '''^ok <HOST>$''',\n  '''^no host here$''',\n  '''^bad ( <HOST>''',\n]\n",
    );
    d.write("jails/a.toml", "filter = \"broken\"\nlogpath = \"a.log\"\n");
    d.write("jails/b.toml", "filter = \"broken\"\nlogpath = \"b.log\"\n");
    let errors = d.errors();
    // Compiled once although two jails use it.
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("broken.toml:3:3:") && errors[0].contains("<HOST>"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("broken.toml:4:3:") && errors[1].contains("invalid regex"),
        "{}",
        errors[1]
    );
}

#[test]
fn a_missing_main_file_says_which_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let errors = load(dir.path()).expect_err("missing");
    assert!(errors
        .to_string()
        .contains("gaoler.toml:1:1: cannot read the main config file"));
    assert!(errors.to_string().contains("--config"));
}

fn jail_of<'a>(cfg: &'a Config, name: &str) -> &'a JailConfig {
    cfg.jails.iter().find(|j| j.name == name).expect("jail")
}

#[test]
fn trusted_proxies_are_read_from_the_jail_or_the_defaults() {
    let d = Dir::new(&format!("{MAIN}trusted_proxies = [\"10.0.0.0/8\"]\n"));
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\ntrusted_proxies = [\"127.0.0.1/32\", \"::1\"]\n",
    );
    d.write(
        "jails/other.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\n",
    );
    let cfg = d.load().expect("valid");
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let jail = |n: &str| cfg.jails.iter().find(|j| j.name == n).expect("jail");
    let nets: Vec<String> = jail("sshd")
        .trusted_proxies
        .nets()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["127.0.0.1/32", "::1/128"]);
    assert!(jail("other")
        .trusted_proxies
        .trusts("10.9.8.7".parse().expect("ip")));

    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\ntrusted_proxies = [\"::1\"]\ntrusted_proxies_only = true\n",
    );
    let cfg = d.load().expect("valid");
    assert!(jail_of(&cfg, "sshd").trusted_proxies.is_only());
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\ntrusted_proxies = []\ntrusted_proxies_only = true\n",
    );
    let errors = d.load().expect_err("invalid").to_string();
    assert!(
        errors.contains("sets trusted_proxies_only but no trusted_proxies"),
        "{errors}"
    );
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\ntrusted_proxies = [\"localhost\"]\n",
    );
    let errors = d.load().expect_err("invalid").to_string();
    assert!(errors.contains("sshd.toml:3:"), "{errors}");
    assert!(
        errors.contains("`localhost` is not an IP address"),
        "{errors}"
    );
}

#[test]
fn filter_vars_fill_the_regexes_and_mistakes_are_placed() {
    let d = Dir::new(MAIN);
    d.write(
        "filters/app.toml",
        "failregex = ['^denied <HOST> on ${paths}$']\n[vars]\npaths = '/login'\n",
    );
    d.write(
        "jails/plain.toml",
        "filter = \"app\"\nlogpath = \"a.log\"\n",
    );
    d.write(
        "jails/custom.toml",
        "filter = \"app\"\nlogpath = \"a.log\"\nfilter_vars = { paths = '/(?:signin|token)' }\n",
    );
    let cfg = d.load().expect("valid");
    let hit = |jail: &str, line: &str| {
        let j = cfg.jails.iter().find(|j| j.name == jail).expect("jail");
        matches!(
            j.filter.examine(line.as_bytes()),
            crate::filter::Verdict::Failure(_)
        )
    };
    assert!(hit("plain", "denied 192.0.2.1 on /login"));
    assert!(!hit("plain", "denied 192.0.2.1 on /token"));
    assert!(hit("custom", "denied 192.0.2.1 on /token"));
    assert!(!hit("custom", "denied 192.0.2.1 on /login"));

    // A variable the filter does not have, where the jail sets it.
    d.write(
        "jails/custom.toml",
        "filter = \"app\"\nlogpath = \"a.log\"\n[filter_vars]\npath = \"/x\"\n",
    );
    let errors = d.load().expect_err("invalid").to_string();
    assert!(
        errors.contains("custom.toml:4:8: filter `app` has no variable `path` (it has paths)"),
        "{errors}"
    );
    // A `${x}` in a regex that the filter's [vars] lack.
    d.write(
        "jails/custom.toml",
        "filter = \"app\"\nlogpath = \"a.log\"\n",
    );
    d.write(
        "filters/app.toml",
        "failregex = ['^denied <HOST> on ${path}$']\n[vars]\npaths = '/login'\n",
    );
    let errors = d.load().expect_err("invalid").to_string();
    assert!(
        errors
            .contains("app.toml:1:14: unknown variable `${path}` (the filter's [vars] are paths)"),
        "{errors}"
    );
    // An unknown decode.
    d.write(
        "filters/app.toml",
        "decode = \"base64\"\nfailregex = ['^denied <HOST>$']\n",
    );
    let errors = d.load().expect_err("invalid").to_string();
    assert!(
        errors.contains("app.toml:1:10: unknown decode `base64`"),
        "{errors}"
    );
}

#[test]
fn logtimezone_and_datepattern_are_validated_where_they_stand() {
    let d = Dir::new(MAIN);
    d.write(
        "filters/app.toml",
        "datepattern = \"%d.%m.%Y %H:%M:%S\"\nfailregex = ['''^fail <HOST>$''']\n",
    );
    d.write(
        "jails/app.toml",
        "filter = \"app\"\nlogpath = \"a.log\"\nlogtimezone = \"Europe/Berlin\"\n",
    );
    let cfg = d.load().expect("valid");
    let jail = cfg.jail("app").expect("app");
    assert_eq!(
        jail.logtimezone,
        LogTz::Named(chrono_tz::Tz::Europe__Berlin)
    );
    assert!(matches!(
        jail.filter.datepattern(),
        Some(DatePattern::Format(_))
    ));

    d.write(
        "filters/bad.toml",
        "datepattern = \"%Y-%Q\"\nfailregex = ['''^x <HOST>$''']\n",
    );
    d.write(
        "jails/bad.toml",
        "filter = \"bad\"\nlogpath = \"a.log\"\nlogtimezone = \"Mars/Olympus\"\n",
    );
    let errors = d.errors();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("bad.toml:3:15:") && e.contains("unknown time zone")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("filters/bad.toml:1:15:") && e.contains("invalid datepattern")),
        "{errors:#?}"
    );
}

#[test]
fn bantime_increment_is_validated_and_applies_per_jail() {
    let d = Dir::new(MAIN);
    d.write(
        "jails/a.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\n[bantime_increment]\nfactor = 3.0\nmaxtime = \"4w\"\nrndtime = \"5m\"\n",
    );
    d.write("jails/b.toml", "filter = \"sshd\"\nlogpath = \"a.log\"\n");
    d.write(
        "jails/c.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\n[bantime_increment]\nenabled = false\n",
    );
    let cfg = d.load().expect("valid");
    let inc = cfg
        .jail("a")
        .and_then(|j| j.increment.clone())
        .expect("enabled");
    assert_eq!(inc.factor, 3.0);
    assert_eq!(inc.maxtime, Some(Duration::from_secs(4 * 604_800)));
    assert_eq!(inc.rndtime, Duration::from_secs(300));
    assert!(cfg.jail("b").is_some_and(|j| j.increment.is_none()));
    assert!(cfg.jail("c").is_some_and(|j| j.increment.is_none()));
    assert_eq!(cfg.daemon.dbpurgeage, Duration::from_secs(30 * 86_400));

    d.write("jails/d.toml", "filter = \"sshd\"\nlogpath = \"a.log\"\n[bantime_increment]\nfactor = -1.0\nmultipliers = [1, 0]\n");
    let errors = d.errors();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("d.toml:4:10:") && errors[0].contains("factor"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("d.toml:5:15:") && errors[1].contains("multipliers"),
        "{}",
        errors[1]
    );
}

#[test]
fn ignoreip_reads_file_lists_and_reports_their_problems() {
    let d = Dir::new(MAIN);
    d.write(
        "ignore.list",
        "# admins\n198.51.100.0/24\n\n2001:db8:7::/48  # office\n",
    );
    d.write(
        "jails/a.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\nignoreip = [\"192.0.2.1\", \"file:ignore.list\"]\nignoreself = false\n",
    );
    let cfg = d.load().expect("valid");
    let jail = cfg.jail("a").expect("a");
    // 10.0.0.0/8 from [defaults], then the jail's own three.
    assert_eq!(jail.ignore.nets().len(), 4, "{:?}", jail.ignore.nets());
    assert!(jail.ignore.covers(&"2001:db8:7:1::5".parse().expect("ip")));
    assert!(!jail.ignoreself);
    assert!(cfg
        .jail("a")
        .is_some_and(|j| j.ignore.covers(&"198.51.100.9".parse().expect("ip"))));

    d.write("bad.list", "192.0.2.1\nnot-an-address\n");
    d.write("jails/b.toml", "filter = \"sshd\"\nlogpath = \"a.log\"\nignoreip = [\"file:bad.list\", \"file:missing.list\"]\n");
    let errors = d.errors();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("b.toml:3:12:") && errors[0].contains("bad.list:2:"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("missing.list") && errors[1].contains("no such file"),
        "{}",
        errors[1]
    );
}

#[test]
fn recidive_is_configured_in_gaoler_toml_and_reserves_its_jail_name() {
    let d = Dir::new(&format!(
        "{MAIN}\n[recidive]\nenabled = true\nmaxretry = 4\nfindtime = \"2d\"\n"
    ));
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\n",
    );
    let cfg = d.load().expect("valid");
    let r = cfg.recidive.clone().expect("enabled");
    assert_eq!(
        (r.maxretry, r.findtime),
        (4, Duration::from_secs(2 * 86_400))
    );
    assert_eq!(
        r.bantime,
        BanTime::Finite(Duration::from_secs(7 * 86_400)),
        "default a week"
    );
    let layout = crate::firewall::Layout::from_config(&cfg);
    let rule = layout
        .jails
        .iter()
        .find(|j| j.jail == RECIDIVE)
        .expect("recidive rule");
    assert!(rule.ports.is_empty() && rule.protocol == Protocol::All);

    d.write(
        "jails/recidive.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\n",
    );
    let errors = d.errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("recidive.toml") && e.contains("taken by [recidive]")),
        "{errors:#?}"
    );
}

#[test]
fn set_names_a_shared_set_and_defaults_to_the_jail() {
    let d = Dir::new(MAIN);
    d.write(
        "jails/a.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\nset = \"web\"\n",
    );
    d.write("jails/b.toml", "filter = \"sshd\"\nlogpath = \"a.log\"\n");
    let cfg = d.load().expect("valid");
    assert_eq!(cfg.jail("a").map(|j| j.set.as_str()), Some("web"));
    assert_eq!(cfg.jail("b").map(|j| j.set.as_str()), Some("b"));
    d.write(
        "jails/c.toml",
        "filter = \"sshd\"\nlogpath = \"a.log\"\nset = \"no good\"\n",
    );
    let errors = d.errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("c.toml:3:7:") && e.contains("invalid set name")),
        "{errors:#?}"
    );
}

#[test]
fn metrics_listen_takes_an_ip_and_port_and_is_off_when_empty() {
    let jail = "filter = \"sshd\"\nlogpath = \"a.log\"\n";
    for (listen, want) in [
        ("", None),
        ("127.0.0.1:9179", Some("127.0.0.1:9179")),
        ("[::1]:9179", Some("[::1]:9179")),
    ] {
        let d = Dir::new(&format!("{MAIN}\n[metrics]\nlisten = \"{listen}\"\n"));
        d.write("jails/sshd.toml", jail);
        let cfg = d.load().expect("valid");
        assert_eq!(
            cfg.metrics,
            want.map(|w| w.parse().expect("addr")),
            "{listen}"
        );
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }
    let d = Dir::new(MAIN);
    d.write("jails/sshd.toml", jail);
    assert_eq!(d.load().expect("valid").metrics, None, "absent: off");

    // After MAIN, [metrics] is line 10 and listen line 11.
    for (listen, says) in [
        ("localhost:9179", "expected an IP address and a port"),
        ("127.0.0.1", "expected an IP address and a port"),
        ("::1:9179", "expected an IP address and a port"),
        ("127.0.0.1:0", "the port must not be 0"),
    ] {
        let d = Dir::new(&format!("{MAIN}\n[metrics]\nlisten = \"{listen}\"\n"));
        d.write("jails/sshd.toml", jail);
        let errors = d.errors();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains("gaoler.toml:11:10: invalid [metrics] listen")
                && errors[0].contains(listen)
                && errors[0].contains(says),
            "{errors:#?}"
        );
    }
}

#[test]
fn a_pipe_is_a_source_of_its_own_and_never_a_regular_file() {
    let d = Dir::new(MAIN);
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\npipe = \"auth.pipe\"\n",
    );
    let cfg = d.load().expect("a jail reading only a pipe is valid");
    let j = cfg.jail("sshd").expect("sshd");
    assert_eq!(j.pipe, vec![d.0.path().join("auth.pipe")]);
    assert!(j.logpath.is_empty() && j.journal.is_none());
    // A regular file where the pipe should be, and one path as both kinds.
    d.write("file.log", "x\n");
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\npipe = [\"file.log\", \"both\"]\nlogpath = \"both\"\n",
    );
    let errors = d.errors();
    assert!(
        errors.iter().any(|e| e.contains("sshd.toml:1:1:")
            && e.contains("file.log exists and is not a named pipe")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("as both a logpath and a pipe")),
        "{errors:?}"
    );
}

#[test]
fn an_ignore_list_that_is_a_device_or_a_pipe_is_refused_at_once() {
    // Regression: `file:/dev/zero` made `check` grow at 200 MB/s; a FIFO hung it.
    let d = Dir::new(MAIN);
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\nlogpath = \"auth.log\"\nignoreip = [\"file:/dev/zero\"]\n",
    );
    let errors = d.errors();
    assert!(
        errors.iter().any(|e| e.contains("sshd.toml:3:")
            && e.contains("/dev/zero")
            && e.contains("not a regular file")),
        "{errors:?}"
    );
}

#[test]
fn fleet_is_checked_where_it_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let key_b64 = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    let main = format!(
        "{MAIN}\n[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nhost = \"web-1\"\nkey = \"fleet.key\"\ntrusted_keys = [\"{key_b64}\"]\nshare = [\"sshd\"]\n"
    );
    let d = Dir::new(&main);
    d.write(
        "jails/sshd.toml",
        "filter = \"sshd\"\nlogpath = \"auth.log\"\n",
    );
    d.write(
        "fleet.key",
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n",
    );
    let key = d.0.path().join("fleet.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cfg = d.load().expect("valid");
    let fleet = cfg.fleet.expect("fleet");
    assert_eq!(fleet.host, "web-1");
    assert_eq!(fleet.key, key);
    assert_eq!(
        (fleet.stream.as_str(), fleet.subject.as_str()),
        ("GAOLER", "gaoler.bans")
    );
    assert_eq!(
        (fleet.max_prefix_v4, fleet.max_prefix_v6, fleet.replicas),
        (24, 48, 1)
    );
    assert!(fleet.apply && fleet.shares("sshd") && !fleet.shares("other"));

    // A key file that holds no key.
    d.write("fleet.key", "secret\n");
    let errors = d.errors().join("\n");
    assert!(errors.contains("[fleet] key: "), "{errors}");
    d.write(
        "fleet.key",
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n",
    );
    // A key others may read, an unknown jail, a key that is not one, a bad URL.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    d.write(
        "gaoler.toml",
        &format!("{MAIN}\n[fleet]\nservers = [\"http://x\"]\nkey = \"fleet.key\"\ntrusted_keys = [\"abc\"]\nshare = [\"nope\"]\nmax_prefix_v4 = 0\n"),
    );
    let errors = d.errors().join("\n");
    for wanted in [
        "must be mode 0600",
        "share: no jail `nope`",
        "`abc` is not a public key",
        "`http://x` is not a NATS URL",
        "max_prefix_v4 must be between 1 and 32",
    ] {
        assert!(errors.contains(wanted), "{wanted} in:\n{errors}");
    }
    assert!(errors.contains("gaoler.toml:"), "{errors}");
    // Missing servers and key are named.
    d.write("gaoler.toml", &format!("{MAIN}\n[fleet]\n"));
    let errors = d.errors().join("\n");
    assert!(
        errors.contains("needs `servers`") && errors.contains("needs `key`"),
        "{errors}"
    );
}
