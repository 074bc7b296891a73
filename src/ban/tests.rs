//! Ban manager tests with the memory firewall and store, under paused tokio time.

use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::oneshot;

use super::*;
use crate::config::{Action, Protocol, RecidiveConfig, RECIDIVE};
use crate::firewall::{MemoryFirewall, Rule};
use crate::store::SharedStore as Shared;
use crate::store::StoreChange;
use crate::types::TokioClock;
use crate::types::{BanTime, IgnoreList, Increment};

use crate::types::test_time as t0;

fn layout() -> Layout {
    Layout {
        table: "gaoler".into(),
        priority: -10,
        jails: vec![Rule {
            jail: "sshd".into(),
            set: "sshd".into(),
            ports: vec![],
            protocol: Protocol::Tcp,
            action: Action::Drop,
        }],
    }
}

struct Rig {
    manager: BanManager<MemoryFirewall>,
    fw: MemoryFirewall,
    store: Shared,
    stats: Arc<Stats>,
}

fn rig(store: Shared) -> Rig {
    rig_with(store, None)
}

/// A manager whose sshd jail escalates with `increment`.
fn rig_with(store: Shared, increment: Option<Increment>) -> Rig {
    let fw = MemoryFirewall::default();
    let stats = Arc::new(Stats::new(["sshd"]));
    let jails = BTreeMap::from([(
        "sshd".to_string(),
        BanPolicy {
            set: "sshd".into(),
            bantime: BanTime::Finite(Duration::from_secs(600)),
            ignore: IgnoreList::new(vec!["192.0.2.0/24".parse().expect("net")]),
            increment,
        },
    )]);
    let manager = BanManager::new(
        fw.clone(),
        Box::new(store.clone()),
        jails,
        Arc::new(TokioClock::starting_at(t0())),
        stats.clone(),
    );
    Rig {
        manager,
        fw,
        store,
        stats,
    }
}

/// Adds jail `name` (60 s bans, nothing ignored) banning into set `set`.
fn add_jail(r: &mut Rig, name: &str, set: &str) {
    r.manager.jails.insert(
        name.to_string(),
        BanPolicy {
            set: set.into(),
            bantime: BanTime::Finite(Duration::from_secs(60)),
            ignore: IgnoreList::default(),
            increment: None,
        },
    );
}

fn currently_banned(r: &Rig) -> u64 {
    r.stats
        .jail("sshd")
        .map_or(0, |c| c.currently_banned.load(Relaxed))
}

/// The current ban of `ip` in `jail`, as `ctl banned` would show it.
fn ban_of(r: &Rig, jail: &str, ip: &str) -> Option<Ban> {
    r.manager.book().get(jail, &target(ip)).cloned()
}

fn target(s: &str) -> Target {
    s.parse().expect("target")
}

fn decision(ip: &str) -> Decision {
    Decision {
        jail: "sshd".into(),
        target: target(ip),
        failures: 3,
        addr: None,
        matches: Vec::new(),
    }
}

fn kernel_has(fw: &MemoryFirewall, ip: &str) -> Option<Option<Duration>> {
    let k = fw.kernel.lock().unwrap_or_else(|p| p.into_inner());
    k.elements.get(&("sshd".to_string(), target(ip))).copied()
}

#[tokio::test(start_paused = true)]
async fn a_decision_reaches_store_kernel_and_book() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager
        .decide(vec![decision("203.0.113.5"), decision("203.0.113.5")])
        .await;
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.5"),
        Some(Some(Duration::from_secs(600)))
    );
    let stored = r.store.get().bans.len();
    assert_eq!(stored, 1);
    let ban = ban_of(&r, "sshd", "203.0.113.5").expect("in book");
    assert_eq!(ban.count, 1);
    assert_eq!(ban.expires_at, Some(t0() + chrono::Duration::seconds(600)));
    assert_eq!(r.stats.bans.load(Relaxed), 1);
    assert_eq!(currently_banned(&r), 1);
    // A second decision while banned changes nothing.
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    assert_eq!(r.stats.bans.load(Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn bans_expire_from_book_and_store_and_count_grows_on_the_next_ban() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    tokio::time::advance(Duration::from_secs(601)).await;
    r.manager.expire();
    assert!(r.manager.book().is_empty());
    assert!(r.store.get().bans.is_empty());
    assert_eq!(currently_banned(&r), 0);
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    let ban = ban_of(&r, "sshd", "203.0.113.5").expect("banned again");
    assert_eq!(ban.count, 2);
}

#[tokio::test(start_paused = true)]
async fn restore_puts_back_live_bans_with_less_time_and_drops_the_rest() {
    let store = Shared::default();
    let now = t0();
    let mk = |ip: &str, jail: &str, banned_ago: i64, len: Option<i64>| Ban {
        target: target(ip),
        jail: jail.into(),
        banned_at: now - chrono::Duration::seconds(banned_ago),
        expires_at: len
            .map(|l| now - chrono::Duration::seconds(banned_ago) + chrono::Duration::seconds(l)),
        count: 1,
        origin: None,
    };
    store
        .clone()
        .commit(&[
            StoreChange::Put(mk("203.0.113.1", "sshd", 100, Some(600))),
            StoreChange::Put(mk("203.0.113.2", "sshd", 700, Some(600))),
            StoreChange::Put(mk("203.0.113.3", "gone", 10, Some(600))),
            StoreChange::Put(mk("203.0.113.4", "sshd", 10, None)),
        ])
        .expect("seed");
    let mut r = rig(store);
    let report = r.manager.restore(&layout()).await.expect("restore");
    assert_eq!((report.loaded, report.expired, report.orphaned), (2, 1, 1));
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.1"),
        Some(Some(Duration::from_secs(500)))
    );
    assert_eq!(kernel_has(&r.fw, "203.0.113.4"), Some(None));
    assert_eq!(kernel_has(&r.fw, "203.0.113.2"), None);
    let left: Vec<String> = r
        .store
        .get()
        .bans
        .values()
        .map(|b| b.target.to_string())
        .collect();
    assert_eq!(left, vec!["203.0.113.1", "203.0.113.4"]);
    assert_eq!(
        r.fw.kernel.lock().map(|k| k.transactions).unwrap_or(0),
        1,
        "one transaction"
    );
}

#[tokio::test(start_paused = true)]
async fn manual_bans_are_checked_and_can_be_lifted() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    let two = Some(BanTime::Finite(Duration::from_secs(2)));
    let ban = r
        .manager
        .manual_ban("sshd", target("203.0.113.9"), two)
        .await
        .expect("ban");
    assert_eq!(ban.expires_at, Some(t0() + chrono::Duration::seconds(2)));
    assert!(matches!(
        r.manager
            .manual_ban("nope", target("203.0.113.9"), None)
            .await,
        Err(BanError::UnknownJail(_))
    ));
    assert!(matches!(
        r.manager
            .manual_ban("sshd", target("192.0.2.1"), None)
            .await,
        Err(BanError::Ignored { .. })
    ));
    assert!(matches!(
        r.manager
            .manual_ban("sshd", target("127.0.0.1"), None)
            .await,
        Err(BanError::Ignored { .. })
    ));
    // A prefix ban is fine; an overlapping prefix in the same jail is refused.
    r.manager
        .manual_ban("sshd", target("2001:db8::/64"), None)
        .await
        .expect("prefix ban");
    assert!(matches!(
        r.manager
            .manual_ban("sshd", target("2001:db8::/48"), None)
            .await,
        Err(BanError::Overlaps { .. })
    ));
    // A single address inside it lives in another set: no conflict.
    r.manager
        .manual_ban("sshd", target("2001:db8::77"), None)
        .await
        .expect("address inside a banned prefix");
    r.manager
        .manual_ban("sshd", target("2001:db8::9"), Some(BanTime::Permanent))
        .await
        .expect("ban v6");
    let lifted = r
        .manager
        .unban(Some(&target("203.0.113.9")), None)
        .await
        .expect("unban");
    assert_eq!(lifted.len(), 1);
    assert_eq!(kernel_has(&r.fw, "203.0.113.9"), None);
    assert!(r
        .manager
        .unban(Some(&target("203.0.113.9")), None)
        .await
        .expect("again")
        .is_empty());
    let all = r.manager.unban(None, None).await.expect("all");
    assert_eq!(all.len(), 3);
    assert!(r.store.get().bans.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failing_kernel_keeps_the_ban_saved_and_retries() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    r.fw.kernel
        .lock()
        .map(|mut k| k.failures_left = 2)
        .expect("lock");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    // Saved, not shown, not in the kernel.
    assert_eq!(r.store.get().bans.len(), 1);
    assert!(r.manager.book().is_empty());
    assert_eq!(kernel_has(&r.fw, "203.0.113.5"), None);
    // First retry after 1 s fails again, the second after 2 more succeeds.
    tokio::time::advance(Duration::from_secs(1)).await;
    r.manager.retry().await;
    assert!(r.manager.book().is_empty());
    tokio::time::advance(Duration::from_secs(2)).await;
    r.manager.retry().await;
    assert_eq!(r.manager.book().len(), 1);
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.5"),
        Some(Some(Duration::from_secs(597)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusing_store_keeps_decided_bans_in_the_kernel_and_takes_back_manual_ones() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    let held = kernel_has(&r.fw, "203.0.113.5");
    assert!(held.is_some());
    r.store.get().fail = true;
    // A decided ban reaches the kernel (a full disk must not let the offender in),
    // but not the book: `ctl banned` shows what is in the kernel and the store.
    assert!(
        !r.manager.decide(vec![decision("203.0.113.6")]).await,
        "not saved"
    );
    assert!(kernel_has(&r.fw, "203.0.113.6").is_some());
    assert!(ban_of(&r, "sshd", "203.0.113.6").is_none());
    // A ban by hand fails as a whole; the re-banned address keeps the ban it had.
    let manual = r
        .manager
        .manual_ban("sshd", target("203.0.113.5"), Some(BanTime::Permanent))
        .await;
    assert!(matches!(manual, Err(BanError::Store(_))), "{manual:?}");
    assert_eq!(kernel_has(&r.fw, "203.0.113.5"), held);
    assert_eq!(r.manager.book().len(), 1);
    // The reconciler leaves the unsaved ban's element alone.
    r.manager.reconcile().await;
    assert!(kernel_has(&r.fw, "203.0.113.6").is_some());
    // The store works again: the retry saves it and it is in force.
    r.store.get().fail = false;
    tokio::time::advance(Duration::from_secs(1)).await;
    r.manager.retry().await;
    assert_eq!(r.store.get().bans.len(), 2);
    assert!(ban_of(&r, "sshd", "203.0.113.6").is_some());
    assert!(kernel_has(&r.fw, "203.0.113.6").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_bans_evidence_is_saved_with_it_also_by_the_retry_and_goes_with_it() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    let with_lines = |ip: &str| Decision {
        matches: vec![format!("Failed password from {ip}"), format!("again {ip}")],
        ..decision(ip)
    };
    r.manager.decide(vec![with_lines("203.0.113.5")]).await;
    let saved = |r: &Rig, ip: &str| {
        r.store
            .get()
            .evidence
            .get(&("sshd".to_string(), target(ip)))
            .cloned()
    };
    assert_eq!(
        saved(&r, "203.0.113.5"),
        Some(vec![
            "Failed password from 203.0.113.5".to_string(),
            "again 203.0.113.5".to_string()
        ])
    );
    // Not saved the first time: the retry saves the lines with the ban.
    r.store.get().fail = true;
    r.manager.decide(vec![with_lines("203.0.113.6")]).await;
    assert_eq!(saved(&r, "203.0.113.6"), None);
    r.store.get().fail = false;
    tokio::time::advance(Duration::from_secs(1)).await;
    r.manager.retry().await;
    assert_eq!(saved(&r, "203.0.113.6").map(|m| m.len()), Some(2));
    // Lifted: the evidence goes with the ban.
    r.manager
        .unban(Some(&target("203.0.113.5")), None)
        .await
        .expect("unban");
    assert_eq!(saved(&r, "203.0.113.5"), None);
}

/// What `ctl banned` would get from the running manager.
async fn list(commands: &mpsc::Sender<Command>) -> Vec<Ban> {
    let (reply, rx) = oneshot::channel();
    commands.send(Command::List { reply }).await.expect("send");
    rx.await.expect("reply").to_vec()
}

#[tokio::test(start_paused = true)]
async fn run_loop_expires_bans_by_itself_and_stops_on_shutdown() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    let (dtx, drx) = mpsc::channel(8);
    let (ctx, crx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let store = r.store.clone();
    let task = tokio::spawn(r.manager.run(drx, crx, shutdown.clone(), OnStop::Flush));
    dtx.send(Decided::Ban(decision("203.0.113.5")))
        .await
        .expect("send");
    // Decisions and commands are separate queues: let the decision land first.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(list(&ctx).await.len(), 1);
    tokio::time::sleep(Duration::from_secs(601)).await;
    assert!(list(&ctx).await.is_empty());
    assert!(store.get().bans.is_empty());
    shutdown.cancel();
    task.await.expect("manager stops");
    assert!(
        r.fw.kernel
            .lock()
            .map(|k| k.installed.is_none())
            .unwrap_or(false),
        "flush removed the table"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reader_may_save_its_position_only_behind_saved_decisions() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    let (dtx, drx) = mpsc::channel(8);
    let (_ctx, crx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let store = r.store.clone();
    let task = tokio::spawn(r.manager.run(drx, crx, shutdown.clone(), OnStop::Keep));
    // A ban, then a barrier: answered once the ban is in the store.
    let (tx, saved) = oneshot::channel();
    dtx.send(Decided::Ban(decision("203.0.113.5")))
        .await
        .expect("send");
    dtx.send(Decided::Saved(tx)).await.expect("send");
    saved.await.expect("answered");
    assert_eq!(store.get().bans.len(), 1);
    // With the store refusing, the ban waits and so does the barrier, until the
    // retry saves the ban (disk full, then space again).
    store.get().fail = true;
    let (tx, mut held) = oneshot::channel();
    dtx.send(Decided::Ban(decision("203.0.113.6")))
        .await
        .expect("send");
    dtx.send(Decided::Saved(tx)).await.expect("send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        held.try_recv().is_err(),
        "not answered while the ban is unsaved"
    );
    // A barrier behind it waits too.
    let (tx, mut later) = oneshot::channel();
    dtx.send(Decided::Saved(tx)).await.expect("send");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(later.try_recv().is_err());
    store.get().fail = false;
    tokio::time::sleep(Duration::from_secs(2)).await;
    held.await.expect("answered once saved");
    later.await.expect("answered once saved");
    assert_eq!(
        store.get().bans.len(),
        2,
        "the refused ban is saved after all"
    );
    shutdown.cancel();
    task.await.expect("manager stops");
}

fn doubling() -> Increment {
    Increment {
        factor: 2.0,
        multipliers: vec![],
        maxtime: Some(Duration::from_secs(2000)),
        rndtime: Duration::ZERO,
    }
}

fn ban_length(r: &Rig, ip: &str) -> Option<i64> {
    r.manager
        .book()
        .get("sshd", &target(ip))
        .and_then(|b| b.expires_at.map(|e| (e - b.banned_at).num_seconds()))
}

#[tokio::test(start_paused = true)]
async fn repeat_offenders_get_longer_bans_also_across_a_restart() {
    let store = Shared::default();
    let mut r = rig_with(store.clone(), Some(doubling()));
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    assert_eq!(ban_length(&r, "203.0.113.5"), Some(600));
    tokio::time::advance(Duration::from_secs(601)).await;
    r.manager.expire();
    // A new manager on the same store: the daemon restarted.
    let mut r = rig_with(store.clone(), Some(doubling()));
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    assert_eq!(ban_length(&r, "203.0.113.5"), Some(1200));
    let ban = ban_of(&r, "sshd", "203.0.113.5").expect("ban");
    assert_eq!(ban.count, 2);
    // Third: 2400 s, capped at maxtime 2000 s.
    tokio::time::advance(Duration::from_secs(1201)).await;
    r.manager.expire();
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    assert_eq!(ban_length(&r, "203.0.113.5"), Some(2000));
    // An explicit ctl bantime is taken as given.
    let manual = r
        .manager
        .manual_ban(
            "sshd",
            target("203.0.113.6"),
            Some(BanTime::Finite(Duration::from_secs(60))),
        )
        .await
        .expect("ban");
    assert_eq!(
        manual
            .expires_at
            .map(|e| (e - manual.banned_at).num_seconds()),
        Some(60)
    );
}

#[tokio::test(start_paused = true)]
async fn history_older_than_the_horizon_no_longer_escalates_and_is_purged() {
    let store = Shared::default();
    let mut r = rig_with(store.clone(), Some(doubling()));
    r.manager = r.manager.with_history_horizon(Duration::from_secs(3600));
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    r.manager.expire();
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    let ban = ban_of(&r, "sshd", "203.0.113.5").expect("ban");
    assert_eq!((ban.count, ban_length(&r, "203.0.113.5")), (1, Some(600)));
    // Purging keeps the history of the current ban and drops old, unbanned ones.
    store
        .clone()
        .commit(&[StoreChange::Remove(Ban {
            target: target("203.0.113.9"),
            jail: "sshd".into(),
            banned_at: t0() - chrono::Duration::days(60),
            expires_at: Some(t0() - chrono::Duration::days(59)),
            count: 3,
            origin: None,
        })])
        .expect("seed");
    r.manager.purge_history();
    assert!(store
        .get()
        .history
        .contains_key(&("sshd".to_string(), target("203.0.113.5"))));
    assert!(!store
        .get()
        .history
        .contains_key(&("sshd".to_string(), target("203.0.113.9"))));
}

/// A manager with jail sshd (600 s bans) and recidive: 2 bans in a day -> a week.
fn recidive_rig(store: Shared) -> Rig {
    let mut r = rig(store);
    let week = BanTime::Finite(Duration::from_secs(7 * 86_400));
    r.manager.jails.insert(
        RECIDIVE.to_string(),
        BanPolicy {
            set: RECIDIVE.to_string(),
            bantime: week,
            ignore: IgnoreList::default(),
            increment: None,
        },
    );
    r.manager = r.manager.with_recidive(Some(RecidiveConfig {
        maxretry: 2,
        findtime: Duration::from_secs(86_400),
        bantime: week,
    }));
    r
}

#[tokio::test(start_paused = true)]
async fn recidive_bans_repeat_offenders_on_all_ports_also_across_a_restart() {
    let store = Shared::default();
    let mut r = recidive_rig(store.clone());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    assert!(
        r.manager
            .book()
            .get(RECIDIVE, &target("203.0.113.5"))
            .is_none(),
        "one ban is not enough"
    );
    tokio::time::advance(Duration::from_secs(601)).await;
    r.manager.expire();
    // Restart: the second ban is counted from the store.
    let mut r = recidive_rig(store.clone());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    let ban = ban_of(&r, RECIDIVE, "203.0.113.5").expect("recidive ban");
    assert_eq!(
        ban.expires_at.map(|e| (e - ban.banned_at).num_seconds()),
        Some(7 * 86_400)
    );
    let k =
        r.fw.kernel
            .lock()
            .map(|k| {
                k.elements
                    .contains_key(&(RECIDIVE.to_string(), target("203.0.113.5")))
            })
            .unwrap_or(false);
    assert!(k, "the recidive ban is in the kernel");
    // Bans older than findtime do not count.
    r.manager.decide(vec![decision("203.0.113.6")]).await;
    tokio::time::advance(Duration::from_secs(2 * 86_400)).await;
    r.manager.expire();
    r.manager.decide(vec![decision("203.0.113.6")]).await;
    assert!(r
        .manager
        .book()
        .get(RECIDIVE, &target("203.0.113.6"))
        .is_none());
}

#[tokio::test(start_paused = true)]
async fn the_reconciler_repairs_missing_unknown_and_wrong_elements_and_a_lost_table() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager
        .decide(vec![decision("203.0.113.5"), decision("203.0.113.6")])
        .await;
    {
        let mut k = r.fw.kernel.lock().unwrap_or_else(|p| p.into_inner());
        k.elements
            .remove(&("sshd".to_string(), target("203.0.113.5")));
        k.elements.insert(
            ("sshd".to_string(), target("203.0.113.6")),
            Some(Duration::from_secs(86_400)),
        );
        k.elements
            .insert(("sshd".to_string(), target("198.51.100.66")), None);
    }
    r.manager.reconcile().await;
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.5"),
        Some(Some(Duration::from_secs(600))),
        "missing: re-added"
    );
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.6"),
        Some(Some(Duration::from_secs(600))),
        "timeout corrected"
    );
    assert_eq!(kernel_has(&r.fw, "198.51.100.66"), None, "unknown: removed");
    assert_eq!(r.stats.repairs.load(Relaxed), 3);
    // Nothing more to do: no further repairs.
    r.manager.reconcile().await;
    assert_eq!(r.stats.repairs.load(Relaxed), 3);
    // The whole table gone: rebuilt with every ban.
    r.fw.kernel
        .lock()
        .map(|mut k| {
            k.installed = None;
            k.elements.clear();
        })
        .expect("lock");
    r.manager.reconcile().await;
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.5"),
        Some(Some(Duration::from_secs(600)))
    );
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.6"),
        Some(Some(Duration::from_secs(600)))
    );
    assert_eq!(r.stats.repairs.load(Relaxed), 4);
}

#[tokio::test(start_paused = true)]
async fn jails_sharing_a_set_keep_the_element_while_any_of_them_bans() {
    let mut r = rig(Shared::default());
    // A second jail "web" sharing the set "sshd".
    add_jail(&mut r, "web", "sshd");
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    let web = Decision {
        jail: "web".into(),
        target: target("203.0.113.5"),
        failures: 1,
        addr: None,
        matches: Vec::new(),
    };
    r.manager.decide(vec![web]).await;
    // One element in the shared set, lasting as long as the longer ban (sshd, 600 s).
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.5"),
        Some(Some(Duration::from_secs(600)))
    );
    assert_eq!(r.manager.book().len(), 2);
    // Lifting sshd's ban leaves the element, now timed to web's ban.
    r.manager
        .unban(Some(&target("203.0.113.5")), Some("sshd"))
        .await
        .expect("unban");
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.5"),
        Some(Some(Duration::from_secs(60)))
    );
    // Lifting the last one removes it.
    r.manager
        .unban(Some(&target("203.0.113.5")), Some("web"))
        .await
        .expect("unban");
    assert_eq!(kernel_has(&r.fw, "203.0.113.5"), None);
}

#[tokio::test(start_paused = true)]
async fn a_reload_lifts_the_bans_of_removed_jails_and_rebuilds_a_changed_table() {
    let mut r = rig(Shared::default());
    let web = BanPolicy {
        set: "web".into(),
        bantime: BanTime::Finite(Duration::from_secs(60)),
        ignore: IgnoreList::default(),
        increment: None,
    };
    r.manager.jails.insert("web".to_string(), web.clone());
    let mut two = layout();
    two.jails.push(Rule {
        jail: "web".into(),
        set: "web".into(),
        ports: vec![],
        protocol: Protocol::Tcp,
        action: Action::Drop,
    });
    r.manager.restore(&two).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    let web_ban = Decision {
        jail: "web".into(),
        target: target("203.0.113.6"),
        failures: 1,
        addr: None,
        matches: Vec::new(),
    };
    r.manager.decide(vec![web_ban]).await;
    let installs = r.fw.kernel.lock().map(|k| k.transactions).expect("lock");

    // The same configuration again: nothing happens.
    let same = Reconfig {
        jails: r.manager.jails.clone(),
        layout: two.clone(),
        recidive: None,
        history_horizon: Duration::from_secs(86_400),
        reconcile_every: None,
        sharing: None,
    };
    let done = r.manager.reconfigure(same.clone()).await.expect("reload");
    assert_eq!(done, Reconfigured::default());
    assert_eq!(
        r.fw.kernel.lock().map(|k| k.transactions).expect("lock"),
        installs
    );

    // Jail web removed, sshd's bantime changed: web's ban is lifted everywhere, sshd's
    // stays as it is, and the next sshd ban takes the new bantime.
    let mut jails = same.jails.clone();
    jails.remove("web");
    if let Some(sshd) = jails.get_mut("sshd") {
        sshd.bantime = BanTime::Finite(Duration::from_secs(7200));
    }
    let done = r
        .manager
        .reconfigure(Reconfig {
            jails,
            layout: layout(),
            ..same
        })
        .await
        .expect("reload");
    assert_eq!(
        done,
        Reconfigured {
            lifted: 1,
            rebuilt: true
        }
    );
    assert_eq!(r.manager.book().len(), 1);
    assert_eq!(r.store.get().bans.len(), 1);
    assert_eq!(
        r.fw.kernel
            .lock()
            .map(|k| k.installed.clone())
            .expect("lock"),
        Some(layout())
    );
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.5"),
        Some(Some(Duration::from_secs(600)))
    );
    r.manager.decide(vec![decision("203.0.113.7")]).await;
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.7"),
        Some(Some(Duration::from_secs(7200)))
    );
}

#[tokio::test(start_paused = true)]
async fn every_transaction_is_counted_and_every_ended_ban_is_an_unban() {
    let mut r = rig(Shared::default());
    let tx = |r: &Rig| {
        let t = &r.stats.transactions;
        (t.count.load(Relaxed), t.errors.load(Relaxed))
    };
    let unbans = |r: &Rig| {
        r.stats
            .jail("sshd")
            .map_or(0, |c| c.total_unbanned.load(Relaxed))
    };
    r.manager.restore(&layout()).await.expect("restore");
    assert_eq!(tx(&r), (1, 0), "the table build");
    // Refused once, then retried: two transactions, one error, one ban.
    r.fw.kernel
        .lock()
        .map(|mut k| k.failures_left = 1)
        .expect("lock");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    assert_eq!(tx(&r), (2, 1));
    tokio::time::advance(Duration::from_secs(1)).await;
    r.manager.retry().await;
    assert_eq!(tx(&r), (3, 1));
    assert_eq!(
        r.stats.jail("sshd").map(|c| c.total_banned.load(Relaxed)),
        Some(1)
    );
    // A pending ban lifted by ctl was never in force: not an unban.
    r.fw.kernel
        .lock()
        .map(|mut k| k.failures_left = 1)
        .expect("lock");
    let _ = r
        .manager
        .manual_ban("sshd", target("203.0.113.6"), None)
        .await;
    r.manager
        .unban(Some(&target("203.0.113.6")), None)
        .await
        .expect("unban");
    assert_eq!(unbans(&r), 0);
    assert_eq!(tx(&r), (5, 2));
    // Lifted by ctl, and expired: two unbans.
    r.manager
        .manual_ban("sshd", target("203.0.113.7"), None)
        .await
        .expect("ban");
    r.manager
        .unban(Some(&target("203.0.113.7")), None)
        .await
        .expect("unban");
    assert_eq!(unbans(&r), 1);
    tokio::time::advance(Duration::from_secs(601)).await;
    r.manager.expire();
    assert_eq!(unbans(&r), 2);
    assert_eq!(currently_banned(&r), 0);
    assert_eq!(tx(&r), (7, 2), "expiry sends nothing to the kernel");
    let buckets = r.stats.transactions.cumulative();
    assert_eq!(buckets.last().map(|(le, n)| (*le, *n)), Some(("+Inf", 7)));
}

#[tokio::test(start_paused = true)]
async fn outputs_see_every_ban_and_every_end_of_one_without_slowing_them() {
    let mut r = rig(Shared::default());
    let (output, mut events) = Output::new(16);
    let (full, _never_read) = Output::new(1);
    let dropped = full.dropped();
    r.manager = r.manager.with_output(output).with_output(full);
    r.manager.restore(&layout()).await.expect("restore");
    r.manager
        .decide(vec![decision("203.0.113.5"), decision("203.0.113.6")])
        .await;
    r.manager.decide(vec![decision("203.0.113.7")]).await;
    let Ok(BanEvent::Banned(first)) = events.try_recv() else {
        panic!("a batch of bans")
    };
    assert_eq!(first.len(), 2);
    assert!(matches!(events.try_recv(), Ok(BanEvent::Banned(b)) if b.len() == 1));
    r.manager
        .unban(Some(&target("203.0.113.5")), None)
        .await
        .expect("unban");
    assert!(matches!(
        events.try_recv(),
        Ok(BanEvent::Ended { ban, why: Ended::Lifted, .. }) if ban.target == target("203.0.113.5")
    ));
    tokio::time::advance(Duration::from_secs(601)).await;
    r.manager.expire();
    let expired: Vec<BanEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert_eq!(expired.len(), 2);
    assert!(expired.iter().all(|e| matches!(
        e,
        BanEvent::Ended {
            why: Ended::Expired,
            ..
        }
    )));
    // The output nobody read kept one event and dropped the rest; no ban waited.
    assert_eq!(dropped.load(Relaxed), 4);
    assert_eq!(r.stats.bans.load(Relaxed), 3);
}

#[tokio::test(start_paused = true)]
async fn a_table_wiped_under_the_manager_is_rebuilt_at_once_with_every_ban() {
    let mut r = rig(Shared::default());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    let wipe = |fw: &MemoryFirewall| {
        let mut k = fw.kernel.lock().expect("kernel");
        k.installed = None;
        k.elements.clear();
    };
    // `nft flush ruleset`: the next ban fails for want of the table, and the table
    // is rebuilt at the next wake with both bans, not retried with backoff.
    wipe(&r.fw);
    r.manager.decide(vec![decision("203.0.113.6")]).await;
    assert_eq!(kernel_has(&r.fw, "203.0.113.6"), None);
    assert_eq!(r.manager.next_wake(), Instant::now(), "looks at once");
    r.manager.settle_doubt().await;
    assert!(kernel_has(&r.fw, "203.0.113.5").is_some());
    assert!(kernel_has(&r.fw, "203.0.113.6").is_some());
    assert_eq!(
        ban_of(&r, "sshd", "203.0.113.6").map(|b| b.count),
        Some(1),
        "in force now"
    );
    // A reported deletion while the table is there (gaoler's own rebuild) changes
    // nothing; one that really removed it rebuilds.
    let before = r.fw.kernel.lock().expect("k").transactions;
    r.manager.doubt(Doubt::Deleted);
    r.manager.settle_doubt().await;
    assert_eq!(
        r.fw.kernel.lock().expect("k").transactions,
        before + 1,
        "one look, no rebuild"
    );
    wipe(&r.fw);
    r.manager.doubt(Doubt::Deleted);
    r.manager.settle_doubt().await;
    assert!(
        kernel_has(&r.fw, "203.0.113.5").is_some() && kernel_has(&r.fw, "203.0.113.6").is_some()
    );
}

fn refuse(fw: &MemoryFirewall, ips: &[&str], on: bool) {
    let mut k = fw.kernel.lock().unwrap_or_else(|p| p.into_inner());
    for ip in ips {
        if on {
            k.refused.insert(target(ip));
        } else {
            k.refused.remove(&target(ip));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_element_the_kernel_refuses_never_takes_its_batch_or_the_restore_down() {
    let store = Shared::default();
    let mut r = rig(store.clone());
    r.manager.restore(&layout()).await.expect("restore");
    refuse(&r.fw, &["203.0.113.7"], true);
    let batch: Vec<Decision> = (1..=20)
        .map(|i| decision(&format!("203.0.113.{i}")))
        .collect();
    r.manager.decide(batch).await;
    // Nineteen in force; the refused one saved and waiting, not shown.
    assert_eq!(r.manager.book().len(), 19);
    assert!(ban_of(&r, "sshd", "203.0.113.7").is_none());
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.8"),
        Some(Some(Duration::from_secs(600)))
    );
    assert_eq!(r.store.get().bans.len(), 20);
    // A ban by hand that the kernel refuses says so.
    refuse(&r.fw, &["198.51.100.9"], true);
    let e = r
        .manager
        .manual_ban("sshd", target("198.51.100.9"), None)
        .await
        .expect_err("refused");
    assert!(matches!(e, BanError::Firewall(_)), "{e}");

    // A restart with both refused elements in the store: the table is built and the
    // other bans are in force; the refused ones wait.
    let mut again = rig(store);
    refuse(&again.fw, &["203.0.113.7", "198.51.100.9"], true);
    again
        .manager
        .restore(&layout())
        .await
        .expect("restore never fails for one element");
    assert_eq!(again.manager.book().len(), 19);
    assert_eq!(
        kernel_has(&again.fw, "203.0.113.1"),
        Some(Some(Duration::from_secs(600)))
    );
    // Once the kernel takes them, the retry puts them in force.
    refuse(&again.fw, &["203.0.113.7", "198.51.100.9"], false);
    tokio::time::advance(Duration::from_secs(1)).await;
    again.manager.retry().await;
    assert_eq!(again.manager.book().len(), 21);
    assert!(kernel_has(&again.fw, "203.0.113.7").is_some());
}

#[tokio::test(start_paused = true)]
async fn prefixes_of_jails_sharing_a_set_never_overlap() {
    let mut r = rig(Shared::default());
    add_jail(&mut r, "web", "sshd");
    r.manager.restore(&layout()).await.expect("restore");
    r.manager
        .manual_ban("sshd", target("203.0.113.0/24"), None)
        .await
        .expect("prefix");
    let e = r
        .manager
        .manual_ban("web", target("203.0.0.0/16"), None)
        .await
        .expect_err("overlaps the other jail's prefix in the shared set");
    assert!(matches!(e, BanError::Overlaps { .. }), "{e}");
    // A jail with a set of its own may.
    add_jail(&mut r, "other", "other");
    r.manager
        .manual_ban("other", target("203.0.0.0/16"), None)
        .await
        .expect("own set");
}

fn damage() -> crate::store::Damage {
    crate::store::Damage {
        reason: "a test".into(),
        moved_to: None,
        missing: Some(2),
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_damaged_at_start_is_rebuilt_from_the_kernels_table() {
    let store = Shared::default();
    let mut r = rig(store.clone());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager
        .decide(vec![decision("203.0.113.5"), decision("203.0.113.6")])
        .await;
    // The store loses its bans; the kernel (kept at stop) still holds them.
    store.get().bans.clear();
    store.get().damage = Some(damage());
    let mut again = rig(store.clone());
    again.fw = r.fw.clone();
    again.manager.firewall = r.fw.clone();
    tokio::time::advance(Duration::from_secs(100)).await;
    let report = again.manager.restore(&layout()).await.expect("restore");
    assert_eq!(report.recovered, 2);
    assert_eq!(again.manager.book().len(), 2);
    assert_eq!(store.get().bans.len(), 2, "saved again");
    assert!(store.get().damage.is_none(), "healed");
    // With the time the kernel had left, never more.
    let ban = ban_of(&again, "sshd", "203.0.113.5").expect("recovered");
    let left = ban
        .remaining(again.manager.clock.now())
        .flatten()
        .expect("finite");
    assert!(left <= Duration::from_secs(600), "{left:?}");
}

#[tokio::test(start_paused = true)]
async fn a_store_replaced_at_run_time_gets_every_ban_held_again() {
    let store = Shared::default();
    let mut r = rig(store.clone());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager
        .decide(vec![decision("203.0.113.5"), decision("203.0.113.6")])
        .await;
    store.get().bans.clear();
    store.get().damage = Some(damage());
    r.manager.decide(vec![decision("203.0.113.7")]).await;
    assert_eq!(store.get().bans.len(), 3, "every ban held is saved again");
    assert!(store.get().damage.is_none(), "healed");
}

fn origin(host: &str, id: &str) -> crate::types::Origin {
    crate::types::Origin {
        host: host.into(),
        key: format!("key-of-{host}"),
        id: id.into(),
    }
}

fn received(ip: &str, host: &str, secs: i64) -> Received {
    Received {
        jail: "sshd".into(),
        target: target(ip),
        banned_at: t0() - chrono::Duration::seconds(10),
        expires_at: Some(t0() + chrono::Duration::seconds(secs)),
        count: 3,
        origin: origin(host, &format!("{host}/sshd/{ip}")),
    }
}

/// What the manager put in the outbox, as announcements.
fn announced(r: &Rig) -> Vec<crate::types::Announcement> {
    use crate::store::Outbox;
    let outbox = r.store.get().outbox.clone();
    outbox
        .waiting(0, 1000)
        .expect("outbox")
        .into_iter()
        .map(|(_, bytes)| serde_json::from_slice(&bytes).expect("announcement"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn own_bans_of_shared_jails_and_unbans_by_hand_are_announced_in_their_commit() {
    use crate::types::AnnouncementKind::{Ban as Banned, Unban};
    let mut r = rig(Shared::default());
    add_jail(&mut r, "web", "web");
    r.manager.sharing = Some(Sharing {
        jails: Some(["sshd".to_string()].into()),
    });
    r.manager.restore(&layout()).await.expect("restore");
    r.manager.decide(vec![decision("203.0.113.5")]).await;
    let web = Decision {
        jail: "web".into(),
        ..decision("203.0.113.6")
    };
    r.manager.decide(vec![web]).await;
    let out = announced(&r);
    assert_eq!(out.len(), 1, "only the shared jail: {out:?}");
    assert_eq!(
        (out[0].kind, out[0].ban.target),
        (Banned, target("203.0.113.5"))
    );
    assert_eq!(out[0].at, out[0].ban.banned_at);

    // A store that refuses the ban refuses its announcement with it.
    r.store.get().fail = true;
    r.manager.decide(vec![decision("203.0.113.7")]).await;
    r.store.get().fail = false;
    assert_eq!(announced(&r).len(), 1);

    r.manager
        .unban(Some(&target("203.0.113.5")), None)
        .await
        .expect("unban");
    let out = announced(&r);
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[1].kind, out[1].ban.target),
        (Unban, target("203.0.113.5"))
    );
    // Expiry is not announced: every host lets the ban end on its own.
    tokio::time::advance(Duration::from_secs(601)).await;
    r.manager.expire();
    assert_eq!(announced(&r).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_fleet_ban_lands_with_its_origins_end_is_never_announced_again_and_only_its_origin_lifts_it(
) {
    let mut r = rig(Shared::default());
    r.manager.sharing = Some(Sharing::default());
    r.manager.restore(&layout()).await.expect("restore");
    r.manager
        .apply_received(vec![received("203.0.113.20", "web-2", 300)])
        .await;
    let ban = ban_of(&r, "sshd", "203.0.113.20").expect("applied");
    assert_eq!(ban.origin.as_ref().map(|o| o.host.as_str()), Some("web-2"));
    assert_eq!(ban.expires_at, Some(t0() + chrono::Duration::seconds(300)));
    assert_eq!(ban.count, 3);
    assert_eq!(
        kernel_has(&r.fw, "203.0.113.20"),
        Some(Some(Duration::from_secs(300)))
    );
    assert_eq!(r.store.get().bans.len(), 1, "saved like a local ban");
    assert!(announced(&r).is_empty(), "no echo");
    assert_eq!(r.stats.fleet.applied.load(Relaxed), 1);

    // Refused here: an ignored address, a jail this host lacks, an ended ban.
    let mut ignored = received("192.0.2.9", "web-2", 300);
    ignored.origin.id = "x".into();
    let elsewhere = Received {
        jail: "nope".into(),
        ..received("203.0.113.21", "web-2", 300)
    };
    let ended = received("203.0.113.22", "web-2", 0);
    let loopback = received("127.0.0.1", "web-2", 300);
    let wide = Received {
        target: target("192.0.0.0/16"),
        ..received("192.0.0.0", "web-2", 300)
    };
    r.manager
        .apply_received(vec![ignored, elsewhere, ended, loopback, wide])
        .await;
    assert_eq!(r.stats.fleet.refused_here.load(Relaxed), 5);
    assert_eq!(r.manager.book().count_in("sshd"), 1);

    // An unban from another origin, or with another id, lifts nothing.
    for lift in [
        Lift {
            jail: "sshd".into(),
            target: target("203.0.113.20"),
            origin: origin("web-3", "web-2/sshd/203.0.113.20"),
        },
        Lift {
            jail: "sshd".into(),
            target: target("203.0.113.20"),
            origin: origin("web-2", "another ban"),
        },
    ] {
        r.manager.lift_received(lift).await;
        assert!(ban_of(&r, "sshd", "203.0.113.20").is_some());
    }
    // Nor does it lift this host's own ban of the same address.
    r.manager.decide(vec![decision("203.0.113.30")]).await;
    r.manager
        .lift_received(Lift {
            jail: "sshd".into(),
            target: target("203.0.113.30"),
            origin: origin("web-2", "web-2/sshd/203.0.113.30"),
        })
        .await;
    assert!(ban_of(&r, "sshd", "203.0.113.30").is_some());
    // Its origin's does, everywhere, without announcing anything.
    let before = announced(&r).len();
    r.manager
        .lift_received(Lift {
            jail: "sshd".into(),
            target: target("203.0.113.20"),
            origin: origin("web-2", "web-2/sshd/203.0.113.20"),
        })
        .await;
    assert!(ban_of(&r, "sshd", "203.0.113.20").is_none());
    assert_eq!(kernel_has(&r.fw, "203.0.113.20"), None);
    assert!(r
        .store
        .get()
        .bans
        .keys()
        .all(|(_, t)| *t != target("203.0.113.20")));
    assert_eq!(announced(&r).len(), before);
}
