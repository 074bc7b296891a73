//! The store contract, run against both the memory fake and real sled on disk.

use super::*;
use crate::source::Positions;
use chrono::{TimeZone, Utc};

fn ban(ip: &str, count: u32) -> Ban {
    let at = Utc
        .with_ymd_and_hms(2026, 11, 21, 8, 0, 0)
        .single()
        .expect("time");
    Ban {
        target: ip.parse().expect("ip"),
        jail: "sshd".into(),
        banned_at: at,
        expires_at: Some(at + chrono::Duration::hours(1)),
        count,
        origin: None,
    }
}

/// Reopens a store just dropped in this process. sled's flusher thread lets go of
/// the file lock a moment after the handle is dropped (a new process never waits).
fn reopen(dir: &std::path::Path) -> Result<SledStore, StoreError> {
    for _ in 0..100 {
        match SledStore::open(dir) {
            Err(StoreError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
    SledStore::open(dir)
}

fn contract(store: &mut dyn BanStore) {
    let a = ban("192.0.2.1", 1);
    let b = Ban {
        expires_at: None,
        ..ban("2001:db8::/64", 1)
    };
    store
        .commit(&[StoreChange::Put(a.clone()), StoreChange::Put(b.clone())])
        .expect("commit");
    let mut all = store.bans().expect("bans");
    all.sort_by_key(|b| b.target);
    assert_eq!(all, vec![a.clone(), b.clone()]);
    store
        .commit(&[StoreChange::Remove(a.clone())])
        .expect("remove");
    assert_eq!(store.bans().expect("bans"), vec![b.clone()]);
    // History outlives the ban.
    let h = store
        .history("sshd", &a.target)
        .expect("history")
        .expect("some");
    assert_eq!(h.count, 1);
    assert_eq!(store.history("web", &a.target).expect("history"), None);
    // A current ban is not history yet (the ban manager holds current bans).
    assert_eq!(store.history("sshd", &b.target).expect("history"), None);
    // Recent bans are kept only when noted.
    assert!(store.recent_bans(&a.target).expect("recent").is_empty());
    store
        .commit(&[StoreChange::NoteRecent(a.clone())])
        .expect("note");
    assert_eq!(store.recent_bans(&a.target).expect("recent").len(), 1);
}

#[test]
fn memory_store_keeps_the_contract() {
    contract(&mut MemoryStore::default());
}

#[test]
fn sled_store_keeps_the_contract_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = SledStore::open(dir.path()).expect("open");
        contract(&mut store);
        store
            .commit(&[
                StoreChange::Put(ban("192.0.2.9", 3)),
                StoreChange::Remove(ban("192.0.2.9", 3)),
                StoreChange::Put(ban("192.0.2.10", 1)),
            ])
            .expect("commit");
    }
    let store = reopen(dir.path()).expect("reopen");
    assert_eq!(store.bans().expect("bans").len(), 2);
    let t: Target = "192.0.2.9".parse().expect("ip");
    assert_eq!(
        store.history("sshd", &t).expect("h").map(|h| h.count),
        Some(3)
    );
}

#[test]
fn a_second_open_of_the_same_state_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = SledStore::open(dir.path()).expect("open");
    match SledStore::open(dir.path()) {
        Err(StoreError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("second open succeeded"),
    }
}

#[test]
fn version_1_records_still_load() {
    // A record exactly as format version 1 writes it; keep this test when the format moves.
    let v1 = r#"{"v":1,"target":"192.0.2.1","jail":"sshd","banned_at":"2026-11-21T08:00:00Z","expires_at":"2026-11-21T09:00:00Z","count":2}"#;
    let rec: BanRecord = serde_json::from_str(v1).expect("v1 loads");
    assert_eq!(rec.ban, ban("192.0.2.1", 2));
    let permanent = r#"{"v":1,"target":"2001:db8::/64","jail":"sshd","banned_at":"2026-11-21T08:00:00Z","expires_at":null,"count":1}"#;
    let rec: BanRecord = serde_json::from_str(permanent).expect("permanent loads");
    assert_eq!(rec.ban.expires_at, None);
}

#[test]
fn evidence_is_saved_with_its_ban_survives_a_restart_and_goes_with_the_ban() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = ban("192.0.2.1", 1);
    let lines = vec![
        "first line".to_string(),
        "second \u{1b}[31m line".to_string(),
    ];
    {
        let mut store = SledStore::open(dir.path()).expect("open");
        store
            .commit(&[
                StoreChange::Put(b.clone()),
                StoreChange::Evidence {
                    jail: b.jail.clone(),
                    target: b.target,
                    matches: lines.clone(),
                },
            ])
            .expect("commit");
    }
    let mut store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.evidence("sshd", &b.target).expect("evidence"), lines);
    let other: Target = "192.0.2.2".parse().expect("target");
    assert!(store.evidence("sshd", &other).expect("none").is_empty());
    store
        .commit(&[StoreChange::Remove(b.clone())])
        .expect("remove");
    assert!(store.evidence("sshd", &b.target).expect("gone").is_empty());
}

#[test]
fn a_format_1_database_opens_with_its_bans_and_no_evidence_and_is_marked_format_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        // As gaoler with format 1 wrote it: its meta and a version 1 record.
        store.raw(|h| {
            h.tree.insert(b"meta/format", &b"1"[..]).expect("meta");
            let v1 = br#"{"v":1,"target":"192.0.2.1","jail":"sshd","banned_at":"2026-11-21T08:00:00Z","expires_at":"2026-11-21T09:00:00Z","count":2}"#;
            h.tree.insert(b"b/sshd/192.0.2.1", &v1[..]).expect("record");
            h.flush().expect("flush");
        });
    }
    let store = SledStore::open(dir.path()).expect("format 1 opens");
    assert_eq!(store.bans().expect("bans"), vec![ban("192.0.2.1", 2)]);
    assert!(store
        .evidence("sshd", &"192.0.2.1".parse().expect("target"))
        .expect("evidence")
        .is_empty());
    let format = store.raw(|h| h.tree.get(b"meta/format").expect("meta"));
    assert_eq!(format.as_deref(), Some(&b"2"[..]));
}

#[test]
fn a_fleet_bans_origin_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = ban("192.0.2.9", 1);
    b.origin = Some(crate::types::Origin {
        host: "web-2".into(),
        key: "a2V5".into(),
        id: "sshd/192.0.2.9/1".into(),
    });
    {
        let mut store = SledStore::open(dir.path()).expect("open");
        store
            .commit(&[StoreChange::Put(b.clone())])
            .expect("commit");
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.bans().expect("bans"), vec![b]);
}

#[test]
fn the_outbox_keeps_its_order_across_restarts_and_forgets_what_was_published() {
    use super::Outbox;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = SledStore::open(dir.path()).expect("open");
        store
            .commit(&[
                StoreChange::Put(ban("192.0.2.1", 1)),
                StoreChange::Publish(b"first".to_vec()),
            ])
            .expect("commit");
        store
            .commit(&[StoreChange::Publish(b"second".to_vec())])
            .expect("commit");
        assert_eq!(store.outbox().depth(), 2);
    }
    let mut store = SledStore::open(dir.path()).expect("reopen");
    store
        .commit(&[StoreChange::Publish(b"third".to_vec())])
        .expect("commit");
    let outbox = store.outbox();
    let waiting = outbox.waiting(0, 10).expect("waiting");
    let texts: Vec<&[u8]> = waiting.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(texts, [&b"first"[..], b"second", b"third"]);
    assert_eq!(outbox.waiting(0, 1).expect("one").len(), 1);
    // From a sequence on: what a publisher with entries in flight reads next.
    let later = outbox.waiting(waiting[1].0, 10).expect("later");
    assert_eq!(later, waiting[1..].to_vec());
    assert!(outbox
        .waiting(waiting[2].0 + 1, 10)
        .expect("none")
        .is_empty());
    // Two at once, not neighbours.
    outbox
        .published(&[waiting[0].0, waiting[2].0])
        .expect("published");
    drop((outbox, store));
    let store = SledStore::open(dir.path()).expect("reopen");
    let left: Vec<Vec<u8>> = store
        .outbox()
        .waiting(0, 10)
        .expect("waiting")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(left, [b"second".to_vec()]);
    // Outbox entries are not bans.
    assert_eq!(store.bans().expect("bans").len(), 1);
}

#[test]
fn a_newer_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        store.raw(|h| {
            h.tree.insert(b"meta/format", &b"99"[..]).expect("insert");
            h.flush().expect("flush");
        });
    }
    match reopen(dir.path()) {
        Err(e @ StoreError::Newer { .. }) => assert!(e.to_string().contains("newer")),
        Err(other) => panic!("expected Newer, got {other}"),
        Ok(_) => panic!("opened a newer store"),
    }
}

fn positions_contract(p: &dyn Positions) {
    let file = b"f//var/log/auth.log";
    assert_eq!(p.load(file).expect("read"), None);
    p.save(file, b"position one").expect("save");
    assert_eq!(
        p.load(file).expect("read").as_deref(),
        Some(&b"position one"[..])
    );
    assert_eq!(p.load(b"f//other").expect("read"), None);
    p.save(b"journal", b"cursor").expect("save");
    p.save(file, b"position two").expect("save");
    assert_eq!(
        p.load(file).expect("read").as_deref(),
        Some(&b"position two"[..])
    );
}

#[test]
fn positions_are_kept_in_memory_and_in_sled_across_reopen() {
    positions_contract(&MemoryPositions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        positions_contract(&store.positions());
    }
    let store = reopen(dir.path()).expect("reopen");
    let p = store.positions();
    assert_eq!(
        p.load(b"f//var/log/auth.log").expect("read").as_deref(),
        Some(&b"position two"[..])
    );
    assert_eq!(
        p.load(b"journal").expect("read").as_deref(),
        Some(&b"cursor"[..])
    );
}

#[test]
fn purging_history_keeps_current_bans_and_recent_records_in_sled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SledStore::open(dir.path()).expect("open");
    let old = ban("192.0.2.1", 1);
    let current = ban("192.0.2.2", 1);
    store
        .commit(&[
            StoreChange::Put(old.clone()),
            StoreChange::Remove(old.clone()),
            StoreChange::Put(current.clone()),
            StoreChange::NoteRecent(old.clone()),
            StoreChange::NoteRecent(current.clone()),
        ])
        .expect("commit");
    let later = old.banned_at + chrono::Duration::days(1);
    assert_eq!(store.purge_history(later).expect("purge"), 1);
    assert_eq!(store.history("sshd", &old.target).expect("h"), None);
    assert_eq!(store.bans().expect("bans"), vec![current.clone()]);
    assert_eq!(
        store.purge_history(old.banned_at).expect("purge"),
        0,
        "recent history stays"
    );
}

#[test]
fn bans_read_ahead_go_stale_on_a_commit_and_are_read_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SledStore::open(dir.path()).expect("open");
    let mut changes: Vec<StoreChange> = (0..1000u32)
        .map(|i| {
            StoreChange::Put(ban(
                &std::net::Ipv4Addr::from(0xC633_6400 + i).to_string(),
                1,
            ))
        })
        .collect();
    changes.push(StoreChange::Put(ban("2001:db8::1", 1)));
    store.commit(&changes).expect("commit");
    store.read_ahead();
    store
        .commit(&[StoreChange::Put(ban("2001:db8::2", 1))])
        .expect("commit");
    let mut got: Vec<String> = store
        .bans()
        .expect("bans")
        .iter()
        .map(|b| b.target.to_string())
        .collect();
    let n = got.len();
    got.sort();
    got.dedup();
    assert_eq!(
        (n, got.len()),
        (1002, 1002),
        "each once, the late commit included"
    );
    drop(store);
    let store = reopen(dir.path()).expect("reopen");
    store.read_ahead();
    assert_eq!(store.bans().expect("bans").len(), 1002);
    assert_eq!(
        store.bans().expect("bans").len(),
        1002,
        "read again after the read-ahead is taken"
    );
}

/// A write that failed (a full disk) may leave in sled's memory what never reached
/// the disk; the next commit reopens the database first and counts what it really
/// holds, so the ledger it writes matches the records a restart finds.
#[test]
fn a_commit_after_a_failed_write_counts_the_reopened_database_not_the_old_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = SledStore::open(dir.path()).expect("open");
        store
            .commit(&[
                StoreChange::Put(ban("192.0.2.1", 1)),
                StoreChange::Put(ban("192.0.2.2", 1)),
            ])
            .expect("commit");
        // What the disk holds differs from the count (one record never made it),
        // and the database is marked as after a failed write.
        store.raw(|h| {
            let key = super::ban_key("sshd", &"192.0.2.2".parse().expect("target"));
            h.tree.remove(key).expect("remove");
            h.flush().expect("flush");
        });
        store.mark_broken();
        store
            .commit(&[StoreChange::Put(ban("192.0.2.3", 1))])
            .expect("commit");
        assert_eq!(store.bans().expect("bans").len(), 2);
        let damage = store.damage().expect("the lost record is noticed");
        assert_eq!(damage.missing, Some(1), "{damage:?}");
    }
    // The ledger counts what the database holds: a restart finds nothing missing.
    let store = reopen(dir.path()).expect("reopen");
    assert_eq!(store.bans().expect("bans").len(), 2);
    assert_eq!(store.damage(), None);
}

#[test]
fn a_damaged_database_is_moved_aside_and_a_lost_ban_is_counted_until_healed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = SledStore::open(dir.path()).expect("open");
        store
            .commit(&[
                StoreChange::Put(ban("192.0.2.1", 1)),
                StoreChange::Put(ban("192.0.2.2", 1)),
            ])
            .expect("commit");
        assert_eq!(store.damage(), None);
    }
    // The ledger counts two; a database that holds one lost the other.
    {
        let store = reopen(dir.path()).expect("reopen");
        assert_eq!(store.bans().expect("bans").len(), 2);
        store.raw(|h| {
            h.tree
                .remove(ban_key("sshd", &"192.0.2.2".parse().expect("t")))
                .expect("rm");
            h.flush().expect("flush");
        });
    }
    {
        let mut store = reopen(dir.path()).expect("reopen");
        assert_eq!(store.bans().expect("bans").len(), 1);
        let damage = store.damage().expect("the loss is noticed");
        assert_eq!(damage.missing, Some(1));
        store.healed();
        assert_eq!(store.damage(), None);
    }
    // sled's file overwritten with garbage: moved aside, a new database, reported
    // until healed, across a restart too.
    let file = dir.path().join("db").join("db");
    let len = std::fs::metadata(&file).expect("file").len() as usize;
    std::fs::write(&file, vec![0x5a; len.max(4096)]).expect("garble");
    let store = reopen(dir.path()).expect("a damaged database does not stop the start");
    assert_eq!(store.bans().expect("bans"), Vec::<Ban>::new());
    let damage = store.damage().expect("reported");
    let moved = damage.moved_to.expect("moved aside");
    assert!(moved.exists(), "{}", moved.display());
    drop(store);
    let mut store = reopen(dir.path()).expect("reopen");
    assert!(store.damage().is_some(), "still to heal after a restart");
    store.healed();
    assert_eq!(store.damage(), None);
    assert!(!moved.exists(), "marked healed");
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

/// Puts the copy `older` of sled's files back in place of `dir`'s.
fn roll_back(dir: &std::path::Path, older: &std::path::Path) {
    std::fs::remove_dir_all(dir.join("db")).expect("rm db");
    copy_tree(older, &dir.join("db"));
}

/// sled coming back without the last commit it finished (a flipped bit in that
/// commit's records makes it stop reading there, after a clean stop) lost bans,
/// even though its count is the one the ledger saw before that commit; without the
/// commit the ledger saw begin but never finish (a crash before sled's flush), it
/// lost none.
#[test]
fn a_database_back_without_its_last_finished_commit_is_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let older = tempfile::tempdir().expect("tempdir");
    {
        let mut store = SledStore::open(dir.path()).expect("open");
        store
            .commit(&[StoreChange::Put(ban("192.0.2.1", 1))])
            .expect("commit");
        // Flushed: as sled would find it after a crash here.
        copy_tree(&dir.path().join("db"), older.path());
        store
            .commit(&[
                StoreChange::Put(ban("192.0.2.2", 1)),
                StoreChange::Put(ban("192.0.2.3", 1)),
            ])
            .expect("commit");
    }
    roll_back(dir.path(), older.path());
    {
        let store = reopen(dir.path()).expect("reopen");
        assert_eq!(store.bans().expect("bans").len(), 1);
        let damage = store.damage().expect("the lost commit is noticed");
        assert_eq!(damage.missing, Some(2));
    }
    // The same files with the ledger of a commit begun and never finished.
    roll_back(dir.path(), older.path());
    let (ledger, _) = super::ledger::Ledger::open(dir.path()).expect("ledger");
    ledger
        .write(super::ledger::Counts {
            before: 1,
            after: 3,
        })
        .expect("write");
    drop(ledger);
    let store = reopen(dir.path()).expect("reopen");
    assert_eq!(store.bans().expect("bans").len(), 1);
    assert_eq!(
        store.damage(),
        None,
        "a crash before the flush loses nothing"
    );
}
