//! The session rules line by line: inherited addresses, held failures confirmed or
//! dropped, user switching, and the cap and age limit.

use super::*;
use chrono::{TimeZone, Utc};

fn at(secs: i64) -> Timestamp {
    Utc.timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("time")
}

fn mark(role: Role, host: Option<&str>, user: Option<&str>) -> Mark {
    Mark {
        role,
        host: host.map(|h| h.parse().expect("address")),
        user: user.map(str::to_string),
        regex: 0,
        via: None,
    }
}

/// Runs lines of one session; returns what each settled (count, or 0).
fn run(s: &mut Sessions, key: u64, lines: &[Mark]) -> Vec<u32> {
    lines
        .iter()
        .enumerate()
        .map(|(i, m)| {
            s.observe(Some(key), m, at(i as i64))
                .map_or(0, |settled| settled.count)
        })
        .collect()
}

const A: &str = "192.0.2.44";

#[test]
fn failures_without_an_address_wait_for_the_sessions_address() {
    let mut s = Sessions::new(10, 600);
    let got = run(
        &mut s,
        1,
        &[
            mark(Role::Fail, None, Some("root")),
            mark(Role::End, Some(A), None),
        ],
    );
    assert_eq!(got, [0, 1]);
    assert!(s.is_empty(), "an end forgets the session");
    // Known first (`Connection from`), then a failure without one.
    let got = run(
        &mut s,
        2,
        &[
            mark(Role::Note, Some(A), None),
            mark(Role::Fail, None, None),
            mark(Role::Fail, None, None),
        ],
    );
    assert_eq!(got, [0, 1, 1]);
    let settled = s.observe(Some(2), &mark(Role::Fail, None, None), at(9));
    assert_eq!(settled.map(|x| x.host), Some(A.parse().expect("ip")));
}

#[test]
fn another_sessions_address_is_never_inherited() {
    let mut s = Sessions::new(10, 600);
    assert_eq!(run(&mut s, 1, &[mark(Role::Fail, None, None)]), [0]);
    assert_eq!(run(&mut s, 2, &[mark(Role::End, Some(A), None)]), [0]);
}

#[test]
fn held_failures_are_dropped_by_a_success_of_the_same_user() {
    let mut s = Sessions::new(10, 600);
    let got = run(
        &mut s,
        1,
        &[
            mark(Role::Hold, Some(A), Some("git")),
            mark(Role::Hold, Some(A), Some("git")),
            mark(Role::Hold, Some(A), Some("git")),
            mark(Role::Success, Some(A), Some("git")),
            mark(Role::End, Some(A), None),
        ],
    );
    assert_eq!(got, [0, 0, 0, 0, 0]);
}

#[test]
fn held_failures_count_once_a_real_failure_confirms_them() {
    let mut s = Sessions::new(10, 600);
    let got = run(
        &mut s,
        1,
        &[
            mark(Role::Hold, Some(A), Some("git")),
            mark(Role::Hold, Some(A), Some("git")),
            mark(Role::Fail, None, Some("git")),
            mark(Role::End, Some(A), None),
        ],
    );
    assert_eq!(got, [0, 0, 3, 0]);
}

#[test]
fn held_failures_end_with_the_session_when_nothing_confirms_them() {
    let mut s = Sessions::new(10, 600);
    let got = run(
        &mut s,
        1,
        &[
            mark(Role::Hold, Some(A), Some("root")),
            mark(Role::End, Some(A), None),
        ],
    );
    assert_eq!(got, [0, 0]);
}

#[test]
fn a_second_user_name_makes_the_session_hostile() {
    let mut s = Sessions::new(10, 600);
    let got = run(
        &mut s,
        1,
        &[
            mark(Role::Hold, Some(A), Some("root")),
            mark(Role::Hold, Some(A), Some("sudoer")),
            mark(Role::Success, Some(A), Some("known")),
        ],
    );
    assert_eq!(got, [0, 2, 1]);
    // Two tries as root, then in as someone else: all three count.
    let got = run(
        &mut s,
        2,
        &[
            mark(Role::Hold, Some(A), Some("root")),
            mark(Role::Hold, Some(A), Some("root")),
            mark(Role::Success, Some(A), Some("known")),
        ],
    );
    assert_eq!(got, [0, 0, 3]);
}

#[test]
fn a_line_without_a_key_is_a_session_of_its_own() {
    let mut s = Sessions::new(10, 600);
    let one = |m: Mark, s: &mut Sessions| s.observe(None, &m, at(0)).map_or(0, |x| x.count);
    assert_eq!(one(mark(Role::Fail, Some(A), None), &mut s), 1);
    assert_eq!(one(mark(Role::Fail, None, None), &mut s), 0);
    assert_eq!(one(mark(Role::Hold, Some(A), None), &mut s), 0);
    assert!(s.is_empty());
}

#[test]
fn a_quiet_session_is_forgotten_after_the_age_limit() {
    let mut s = Sessions::new(10, 60);
    assert!(s
        .observe(Some(7), &mark(Role::Fail, None, None), at(0))
        .is_none());
    // The same process id much later is a new connection: the old failure is gone.
    assert!(s
        .observe(Some(7), &mark(Role::Note, Some(A), None), at(500))
        .is_none());
    // Sweeps also drop sessions nobody mentions again.
    for k in 100..110 {
        s.observe(Some(k), &mark(Role::Note, Some(A), None), at(600));
    }
    s.observe(Some(1), &mark(Role::Note, Some(A), None), at(2000));
    assert_eq!(s.len(), 1);
    assert_eq!(s.evicted(), 0, "aged sessions are not evictions");
}

#[test]
fn the_cap_holds_under_a_flood_of_new_sessions_and_counts_evictions() {
    let cap = 1000;
    let mut s = Sessions::new(cap, 600);
    for k in 0..100_000u64 {
        s.observe(
            Some(key_of(&k.to_le_bytes())),
            &mark(Role::Fail, None, None),
            at((k / 1000) as i64),
        );
        assert!(s.len() <= cap);
    }
    assert!(s.evicted() >= 100_000 - cap as u64);
    // The newest sessions survive: a recent one still inherits its address.
    let recent = key_of(&99_999u64.to_le_bytes());
    let got = s.observe(Some(recent), &mark(Role::End, Some(A), None), at(100));
    assert_eq!(got.map(|x| x.count), Some(1));
}

#[test]
fn keys_of_different_processes_differ() {
    assert_ne!(key_of(b"host sshd[100]: "), key_of(b"host sshd[101]: "));
    assert_ne!(key_of(b"a sshd[1]: "), key_of(b"b sshd[1]: "));
}
