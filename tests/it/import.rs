//! `gaoler import-fail2ban` on a distribution's complete stock /etc/fail2ban (Debian's
//! fail2ban package, unpacked by scripts/test into target/fail2ban-stock): the output
//! passes `gaoler check`, and the imported sshd jail's filter finds offenders.

use std::path::PathBuf;

use crate::support::*;

fn stock() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fail2ban-stock/etc/fail2ban");
    assert!(
        dir.join("jail.conf").is_file(),
        "{} is missing: scripts/test unpacks Debian's fail2ban package there",
        dir.display()
    );
    dir
}

#[test]
fn the_stock_debian_fail2ban_tree_imports_and_passes_the_check() {
    let out = tempfile::tempdir().expect("tmp");
    let dest = out.path().join("gaoler");
    let run = std::process::Command::new(bin())
        .arg("import-fail2ban")
        .arg(stock())
        .arg("--output")
        .arg(&dest)
        .output()
        .expect("run");
    let report = text(&run.stdout);
    assert!(run.status.success(), "{report}\n{}", text(&run.stderr));
    assert!(report.contains("`gaoler check` passes"), "{report}");
    // The summary line: most of the stock filters convert fully.
    let converted: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("filters: "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("filters summary");
    assert!(converted >= 60, "{report}");
    let check = gaoler(&dest, &["check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    // Debian enables sshd; its imported filter finds the offender.
    assert!(dest.join("jails/sshd.toml").is_file());
    let log = out.path().join("auth.log");
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
    let line = format!("{stamp} web1 sshd[4242]: Invalid user admin from 192.0.2.77 port 50000\n");
    std::fs::write(&log, line).expect("log");
    let found = gaoler(
        &dest,
        &[
            "test-filter",
            "sshd",
            log.to_str().expect("utf-8"),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&found.stdout).expect("json");
    assert_eq!(v["matched"], 1, "{}", text(&found.stdout));
    assert_eq!(v["matches"][0]["host"], "192.0.2.77");
    // A second import into the same place is refused: nothing is overwritten.
    let again = std::process::Command::new(bin())
        .arg("import-fail2ban")
        .arg(stock())
        .arg("-o")
        .arg(&dest)
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already holds a gaoler.toml"));
}
