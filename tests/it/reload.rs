//! `ctl reload` and SIGHUP with the real daemon (log backend): a refused reload
//! changes nothing; a valid one adds, removes and changes jails in place, keeping the
//! bans and failure counts of unchanged jails.

use std::time::Duration;

use crate::support::*;

const SSHD: &str = "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 3\n";

/// A config dir whose filter path has its own `filters/` first, with filter `mine`
/// matching `REGEX` lines.
fn with_own_filter(regex: &str) -> ConfigDir {
    let cfg = ConfigDir::new("backend = \"log\"", SSHD);
    let main = std::fs::read_to_string(cfg.path().join("gaoler.toml")).expect("read");
    let shipped = shipped_filters();
    cfg.write(
        "gaoler.toml",
        &main.replace(
            &format!("filter_path = [\"{}\"]", shipped.display()),
            &format!("filter_path = [\"filters\", \"{}\"]", shipped.display()),
        ),
    );
    write_filter(&cfg, regex);
    cfg
}

fn write_filter(cfg: &ConfigDir, regex: &str) {
    cfg.write(
        "filters/mine.toml",
        &format!("failregex = ['''^{regex} from <HOST>$''']\n"),
    );
}

fn reload(cfg: &ConfigDir) -> serde_json::Value {
    ctl_json(cfg.path(), &["reload"])
}

fn jail_names(cfg: &ConfigDir) -> Vec<String> {
    ctl_json(cfg.path(), &["status"])["jails"]
        .as_array()
        .expect("jails")
        .iter()
        .map(|j| j["name"].as_str().expect("name").to_string())
        .collect()
}

fn names(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("name"))
        .collect()
}

#[test]
fn an_invalid_config_is_refused_with_every_error_and_the_old_one_keeps_banning() {
    let cfg = ConfigDir::new("backend = \"log\"", SSHD);
    let _d = Daemon::start(cfg.path(), None);
    cfg.write(
        "jails/web.toml",
        "filter = \"sshd\"\nlogpath = \"web.log\"\nmaxretyr = 3\n",
    );
    cfg.write(
        "jails/api.toml",
        "filter = \"no-such-filter\"\nlogpath = \"api.log\"\n",
    );
    let out = gaoler(cfg.path(), &["ctl", "reload"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("reload refused, the running configuration stays"),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
    assert!(err.contains("web.toml:3:1"), "{err}");
    assert!(err.contains("api.toml:1:10"), "{err}");
    // Restart-only settings are refused too.
    std::fs::remove_file(cfg.path().join("jails/web.toml")).expect("rm");
    std::fs::remove_file(cfg.path().join("jails/api.toml")).expect("rm");
    let main = std::fs::read_to_string(cfg.path().join("gaoler.toml")).expect("read");
    cfg.write(
        "gaoler.toml",
        &main.replace("backend = \"log\"", "backend = \"log\"\ntable = \"other\""),
    );
    let out = gaoler(cfg.path(), &["ctl", "reload"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("[firewall] table cannot change while gaoler runs"));
    // The running configuration still bans.
    assert_eq!(jail_names(&cfg), ["sshd"]);
    for _ in 0..3 {
        cfg.sshd_failure("203.0.113.50");
    }
    wait_for(Duration::from_secs(5), "the ban", || {
        banned_ips(cfg.path()) == ["203.0.113.50"]
    });
}

#[test]
fn a_reload_adds_removes_and_changes_jails_keeping_bans_and_counts_of_the_others() {
    let cfg = with_own_filter("bad login");
    cfg.write(
        "jails/other.toml",
        "filter = \"sshd\"\nlogpath = \"other.log\"\nmaxretry = 2\n",
    );
    cfg.write(
        "jails/mine.toml",
        "filter = \"mine\"\nlogpath = \"mine.log\"\nmaxretry = 1\n",
    );
    cfg.write("other.log", "");
    cfg.write("mine.log", "");
    let _d = Daemon::start(cfg.path(), None);
    // Two of sshd's three failures, a ban in sshd and one in `other`.
    cfg.sshd_failure("203.0.113.1");
    cfg.sshd_failure("203.0.113.1");
    wait_for(Duration::from_secs(5), "two failures", || {
        failures(cfg.path()) == 2
    });
    assert!(gaoler(cfg.path(), &["ctl", "ban", "sshd", "203.0.113.2"])
        .status
        .success());
    assert!(gaoler(cfg.path(), &["ctl", "ban", "other", "203.0.113.3"])
        .status
        .success());

    // `other` removed, `added` new, sshd unchanged, `mine` with a changed filter.
    std::fs::remove_file(cfg.path().join("jails/other.toml")).expect("rm");
    cfg.write(
        "jails/added.toml",
        "filter = \"sshd\"\nlogpath = \"added.log\"\nmaxretry = 1\n",
    );
    cfg.write("added.log", "");
    write_filter(&cfg, "evil");
    let report = reload(&cfg);
    assert_eq!(names(&report["added"]), ["added"], "{report}");
    assert_eq!(names(&report["removed"]), ["other"], "{report}");
    assert_eq!(names(&report["kept"]), ["mine", "sshd"], "{report}");
    assert_eq!(report["lifted"], 1, "{report}");
    assert_eq!(report["rebuilt"], true, "{report}");
    assert_eq!(jail_names(&cfg), ["added", "mine", "sshd"]);

    // The removed jail's ban is lifted; sshd's stays; sshd's count goes on from two.
    let banned = banned_ips(cfg.path());
    assert_eq!(banned, ["203.0.113.2"], "{banned:?}");
    cfg.sshd_failure("203.0.113.1");
    wait_for(Duration::from_secs(5), "the third failure bans", || {
        banned_ips(cfg.path()).contains(&"203.0.113.1".to_string())
    });
    // The new jail reads its file; the changed filter is the one in force.
    cfg.append("added.log", sshd_line("203.0.113.4").as_bytes());
    cfg.append(
        "mine.log",
        b"bad login from 203.0.113.5\nevil from 203.0.113.6\n",
    );
    wait_for(
        Duration::from_secs(5),
        "bans by the new jail and filter",
        || {
            let b = banned_ips(cfg.path());
            b.contains(&"203.0.113.4".to_string()) && b.contains(&"203.0.113.6".to_string())
        },
    );
    assert!(!banned_ips(cfg.path()).contains(&"203.0.113.5".to_string()));
}

#[test]
fn changed_counting_rules_start_the_counts_again() {
    let cfg = ConfigDir::new("backend = \"log\"", SSHD);
    let _d = Daemon::start(cfg.path(), None);
    cfg.sshd_failure("203.0.113.7");
    cfg.sshd_failure("203.0.113.7");
    wait_for(Duration::from_secs(5), "two failures", || {
        failures(cfg.path()) == 2
    });
    cfg.write(
        "jails/sshd.toml",
        &SSHD.replace("maxretry = 3", "maxretry = 2"),
    );
    let report = reload(&cfg);
    assert_eq!(names(&report["reset"]), ["sshd"], "{report}");
    assert_eq!(report["rebuilt"], false, "{report}");
    cfg.sshd_failure("203.0.113.7");
    wait_for(Duration::from_secs(5), "the failure is counted", || {
        failures(cfg.path()) == 3
    });
    assert!(
        banned_ips(cfg.path()).is_empty(),
        "one failure under the new rules"
    );
    cfg.sshd_failure("203.0.113.7");
    wait_for(Duration::from_secs(5), "the ban", || {
        banned_ips(cfg.path()) == ["203.0.113.7"]
    });
}

#[test]
fn sighup_reloads_like_ctl_reload() {
    let cfg = ConfigDir::new("backend = \"log\"", SSHD);
    let mut d = Daemon::start(cfg.path(), None);
    cfg.write(
        "jails/added.toml",
        "filter = \"sshd\"\nlogpath = \"added.log\"\nmaxretry = 1\n",
    );
    d.hup();
    wait_for(Duration::from_secs(5), "the new jail", || {
        jail_names(&cfg) == ["added", "sshd"]
    });
    // An invalid config at SIGHUP is logged and changes nothing.
    cfg.write(
        "jails/bad.toml",
        "filter = \"sshd\"\nlogpath = \"x.log\"\nnope = 1\n",
    );
    d.hup();
    wait_for(Duration::from_secs(5), "the refusal in the log", || {
        d.output().contains("reload refused")
    });
    assert_eq!(jail_names(&cfg), ["added", "sshd"]);
    assert!(d.output().contains("bad.toml:3:1"), "{}", d.output());
}
