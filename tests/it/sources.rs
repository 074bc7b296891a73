//! File sources through the real daemon: resume after SIGTERM and after kill -9 (lines
//! written while down are read, none twice), rotation while running, a file created
//! later matching a glob, and partial lines.

use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(15);

fn counting_jail(logpath: &str) -> String {
    format!("filter = \"sshd\"\nlogpath = \"{logpath}\"\nmaxretry = 3\n")
}

#[test]
fn restart_reads_what_was_written_while_down_and_nothing_twice() {
    let cfg = ConfigDir::new("backend = \"log\"", &counting_jail("auth.log"));
    let mut d = Daemon::start(cfg.path(), None);
    cfg.sshd_failure("203.0.113.1");
    cfg.sshd_failure("203.0.113.1");
    wait_for(WAIT, "two failures", || failures(cfg.path()) == 2);
    d.stop();
    // Written while gaoler is down: must be read at the next start.
    for _ in 0..3 {
        cfg.sshd_failure("203.0.113.2");
    }
    let mut d = Daemon::start(cfg.path(), None);
    wait_for(WAIT, "the ban from lines written while down", || {
        banned_ips(cfg.path()) == vec!["203.0.113.2".to_string()]
    });
    // Only the three new lines were counted: the two read before were not read again.
    assert_eq!(failures(cfg.path()), 3);

    // The same after kill -9 (give the reader a moment to save its position).
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    for _ in 0..3 {
        cfg.sshd_failure("203.0.113.3");
    }
    let _d = Daemon::start(cfg.path(), None);
    wait_for(WAIT, "the ban after kill -9", || {
        banned_ips(cfg.path()).contains(&"203.0.113.3".to_string())
    });
    assert_eq!(
        failures(cfg.path()),
        3,
        "lines before the kill are not counted again"
    );
}

#[test]
fn rename_rotation_and_copytruncate_while_running_lose_nothing() {
    let cfg = ConfigDir::new("backend = \"log\"", &counting_jail("auth.log"));
    let _d = Daemon::start(cfg.path(), None);
    // Two failures, then logrotate's default (rename, then create), then the third.
    cfg.sshd_failure("203.0.113.4");
    cfg.sshd_failure("203.0.113.4");
    std::fs::rename(cfg.path().join("auth.log"), cfg.path().join("auth.log.1")).expect("rotate");
    cfg.append("auth.log.1", sshd_line("203.0.113.5").as_bytes()); // the logger's last write to the old file
    cfg.write("auth.log", &sshd_line("203.0.113.4"));
    wait_for(WAIT, "the ban across a rename rotation", || {
        banned_ips(cfg.path()).contains(&"203.0.113.4".to_string())
    });
    wait_for(WAIT, "four failures", || failures(cfg.path()) == 4);
    // copytruncate: the file is emptied in place and written from 0 again.
    std::fs::write(cfg.path().join("auth.log"), "").expect("truncate");
    for _ in 0..3 {
        cfg.sshd_failure("203.0.113.6");
    }
    wait_for(WAIT, "the ban after copytruncate", || {
        banned_ips(cfg.path()).contains(&"203.0.113.6".to_string())
    });
    assert_eq!(failures(cfg.path()), 7);
}

#[test]
fn a_file_created_later_that_matches_a_glob_is_read() {
    let cfg = ConfigDir::new("backend = \"log\"", &counting_jail("logs/*.log"));
    std::fs::create_dir_all(cfg.path().join("logs")).expect("mkdir");
    cfg.write("logs/old.log", &sshd_line("203.0.113.7"));
    let _d = Daemon::start(cfg.path(), None);
    // A file that appears while gaoler runs is read from its start.
    let mut three = String::new();
    for _ in 0..3 {
        three.push_str(&sshd_line("203.0.113.8"));
    }
    cfg.write("logs/new.log", &three);
    cfg.write(
        "logs/ignored.txt",
        &three.replace("203.0.113.8", "203.0.113.9"),
    );
    wait_for(WAIT, "the ban from the new file", || {
        banned_ips(cfg.path()) == vec!["203.0.113.8".to_string()]
    });
    // The old file was followed from its end; the .txt file does not match the glob.
    assert_eq!(failures(cfg.path()), 3);
}

#[test]
fn a_partial_line_waits_for_its_newline() {
    let cfg = ConfigDir::new("backend = \"log\"", &counting_jail("auth.log"));
    let _d = Daemon::start(cfg.path(), None);
    let line = sshd_line("203.0.113.10");
    let (head, tail) = line.split_at(line.len() / 2);
    cfg.append("auth.log", head.as_bytes());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        ctl_json(cfg.path(), &["stats"])["lines_read"],
        0,
        "half a line is not a line"
    );
    cfg.append("auth.log", tail.as_bytes());
    wait_for(WAIT, "the completed line", || failures(cfg.path()) == 1);
}

#[test]
fn fifos_and_devices_at_logpaths_never_stall_the_start_a_reload_or_the_stop() {
    // Regression (issue 19): a FIFO at a logpath blocked its reader in open; after
    // that reload never returned and SIGTERM was ignored, and with two FIFOs at start
    // the daemon never became ready. A symlink to /dev/zero was read without end.
    let cfg = ConfigDir::new(
        "backend = \"log\"",
        "filter = \"sshd\"\nlogpath = [\"one.fifo\", \"two.fifo\", \"zero.log\", \"auth.log\"]\nmaxretry = 2\n",
    );
    for f in ["one.fifo", "two.fifo"] {
        let status = std::process::Command::new("mkfifo")
            .arg(cfg.path().join(f))
            .status()
            .expect("mkfifo");
        assert!(status.success());
    }
    std::os::unix::fs::symlink("/dev/zero", cfg.path().join("zero.log")).expect("symlink");
    let started = std::time::Instant::now();
    let mut d = Daemon::start(cfg.path(), None);
    assert!(started.elapsed() < Duration::from_secs(5), "ready at once");
    // The regular file among them is followed.
    cfg.sshd_failure("203.0.113.40");
    cfg.sshd_failure("203.0.113.40");
    wait_for(WAIT, "the ban from the regular file", || {
        banned_ips(cfg.path()) == vec!["203.0.113.40".to_string()]
    });
    let t = std::time::Instant::now();
    let out = gaoler(cfg.path(), &["ctl", "reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "reload returned at once"
    );
    // One refusal logged per path, not one per read.
    std::thread::sleep(Duration::from_millis(2500));
    let log = d.output();
    // Per path and generation (start, reload): at most the open's and the first
    // read's line, whatever the number of polls since.
    let refusals = log.matches("not a regular file").count();
    assert!((3..=12).contains(&refusals), "{refusals} refusals:\n{log}");
    assert!(!log.contains("truncated"), "/dev/zero is never read: {log}");
    let t = std::time::Instant::now();
    d.stop();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "SIGTERM stops it at once"
    );
}

/// Two failures before a clean restart and one after ban at maxretry 3: the failure
/// windows are saved at stop and counted again at start. After `kill -9` nothing was
/// saved: the two are lost, never counted twice.
#[test]
fn failure_windows_survive_a_clean_restart_and_are_never_counted_twice() {
    let cfg = ConfigDir::new("backend = \"log\"", &counting_jail("auth.log"));
    let mut d = Daemon::start(cfg.path(), None);
    cfg.sshd_failure("203.0.113.21");
    cfg.sshd_failure("203.0.113.21");
    wait_for(WAIT, "two failures", || failures(cfg.path()) == 2);
    d.stop();
    assert!(
        d.output().contains("failure windows saved"),
        "{}",
        d.output()
    );
    let mut d = Daemon::start(cfg.path(), None);
    cfg.sshd_failure("203.0.113.21");
    wait_for(
        WAIT,
        "the ban from failures on both sides of the restart",
        || banned_ips(cfg.path()) == vec!["203.0.113.21".to_string()],
    );
    // Counted once: a second clean restart has nothing left to restore for it.
    cfg.sshd_failure("203.0.113.22");
    wait_for(WAIT, "one failure", || failures(cfg.path()) == 2);
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    let _d = Daemon::start(cfg.path(), None);
    cfg.sshd_failure("203.0.113.22");
    cfg.sshd_failure("203.0.113.22");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        banned_ips(cfg.path()),
        vec!["203.0.113.21".to_string()],
        "after kill -9 the failure before it is not restored"
    );
    assert_eq!(failures(cfg.path()), 2, "and no line is read twice");
}
