//! The project's shell scripts run under `set -o pipefail`, where `producer | grep -q`
//! fails at random: grep exits at its first match and the producer, still writing,
//! dies of SIGPIPE (exit 141). Regression for the flaky `packaging/test` on a new
//! machine (`rpm -qp --configfiles | grep -q` failed 3 times in 20).

use std::path::Path;
use std::process::Command;

/// Readers that may stop before their input ends.
const EARLY_EXIT: [&str; 5] = ["grep -q", "grep -m", "grep -l", "head", "sed -n 1q"];

#[test]
fn the_pipefail_hazard_is_real() {
    let out = Command::new("bash")
        .args(["-c", "set -o pipefail; yes | grep -q y; echo $?"])
        .output()
        .expect("bash");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "141");
}

#[test]
fn no_script_pipes_into_a_reader_that_exits_early() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut scripts: Vec<std::path::PathBuf> = vec![root.join(".ci/run")];
    for dir in ["scripts", "packaging"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("dir").flatten() {
            let path = entry.path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.starts_with("#!/usr/bin/env bash") || text.starts_with("#!/bin/bash") {
                scripts.push(path);
            }
        }
    }
    assert!(scripts.len() >= 5, "found {scripts:?}");
    let mut bad = Vec::new();
    for path in &scripts {
        let text = std::fs::read_to_string(path).expect("read");
        for (n, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or("");
            for pipe in code.split("||").flat_map(|part| part.split('|').skip(1)) {
                let reader = pipe.trim_start();
                if EARLY_EXIT.iter().any(|r| reader.starts_with(r)) {
                    bad.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "capture the output first, then search it:\n{}",
        bad.join("\n")
    );
}
