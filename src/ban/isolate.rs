//! One element the kernel refuses never takes its batch down. A transaction that nft
//! refuses for what is in it (`FirewallError::Rejected`: an overlapping interval, a
//! value out of range) is split in halves, and the halves again, until each refused
//! change stands alone and every other change has landed. A failure that is not about
//! the content (nft missing, the table gone) fails the whole batch as before. A whole
//! table build that nft refuses installs the table empty, then its bans the same way.
//!
//! The search is bounded: at most `MAX_TRANSACTIONS` more transactions per batch.
//! What is still untried then counts as refused, and waits for the retry like any
//! ban the kernel refused.

use std::collections::HashSet;

use super::transaction;
use crate::firewall::{Change, Element, Firewall, FirewallError, Layout};
use crate::stats::Stats;
use crate::types::Target;

/// Most extra transactions one batch may spend finding what nft refuses: one bad
/// element in 10,000 takes about 15.
const MAX_TRANSACTIONS: usize = 64;
/// Refused changes logged one by one per batch; the rest are counted.
const LOGGED: usize = 10;

/// The (set, target) keys whose changes the kernel refused.
#[derive(Debug, Default)]
pub struct Refused {
    pub keys: HashSet<(String, Target)>,
    /// nft's words for the first refused change.
    pub first: Option<String>,
}

impl Refused {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn holds(&self, set: &str, target: &Target) -> bool {
        !self.keys.is_empty() && self.keys.contains(&(set.to_string(), *target))
    }

    /// The refusal as an error, for a request whose every change was refused.
    pub fn error(&self) -> FirewallError {
        FirewallError::Rejected {
            what: "a change refused alone".into(),
            stderr: self.first.clone().unwrap_or_default(),
        }
    }
}

/// True for a failure caused by what the transaction holds, which splitting it can
/// isolate.
fn about_content(e: &FirewallError) -> bool {
    matches!(e, FirewallError::Rejected { .. })
}

fn key(change: &Change) -> (String, Target) {
    match change {
        Change::Ban(e) | Change::Renew(e) => (e.set.clone(), e.target),
        Change::Unban { set, target } => (set.clone(), *target),
    }
}

/// Applies `changes`; what nft refuses for its content is isolated and returned,
/// everything else lands. `Err`: the batch failed for another reason (nothing known
/// to be applied).
pub async fn apply<F: Firewall>(
    firewall: &mut F,
    stats: &Stats,
    changes: &[Change],
) -> Result<Refused, FirewallError> {
    if changes.is_empty() {
        return Ok(Refused::default());
    }
    match transaction(stats, firewall.apply(changes)).await {
        Ok(()) => Ok(Refused::default()),
        Err(e) if about_content(&e) => split(firewall, stats, changes, e).await,
        Err(e) => Err(e),
    }
}

/// Builds the table with `elements` in one transaction; when nft refuses that for its
/// content, builds it empty and adds the elements as `apply` does.
pub async fn install<F: Firewall>(
    firewall: &mut F,
    stats: &Stats,
    layout: &Layout,
    elements: &[Element],
) -> Result<Refused, FirewallError> {
    let e = match transaction(stats, firewall.install(layout, elements)).await {
        Ok(()) => return Ok(Refused::default()),
        Err(e) if about_content(&e) && !elements.is_empty() => e,
        Err(e) => return Err(e),
    };
    tracing::error!(error = %e, bans = elements.len(), "nft refused the table with its bans: building it empty and adding the bans apart, to find what it refuses");
    transaction(stats, firewall.install(layout, &[])).await?;
    let changes: Vec<Change> = elements.iter().cloned().map(Change::Ban).collect();
    apply(firewall, stats, &changes).await
}

/// Halves `changes`, known to be refused with `error`, until each refused change is
/// alone.
async fn split<F: Firewall>(
    firewall: &mut F,
    stats: &Stats,
    changes: &[Change],
    error: FirewallError,
) -> Result<Refused, FirewallError> {
    let mut refused = Vec::new();
    let mut budget = MAX_TRANSACTIONS;
    // Groups known to hold at least one refused change, each with its error.
    let mut failed: Vec<(&[Change], FirewallError)> = vec![(changes, error)];
    while let Some((group, error)) = failed.pop() {
        if group.len() == 1 || budget == 0 {
            refused.extend(group.iter().map(|c| (c, error.to_string())));
            continue;
        }
        let (first, second) = group.split_at(group.len() / 2);
        budget -= 1;
        match transaction(stats, firewall.apply(first)).await {
            // The first half landed: the refused change is in the second.
            Ok(()) => failed.push((second, error)),
            Err(e) if about_content(&e) => {
                failed.push((first, e));
                if budget == 0 {
                    failed.push((second, error));
                    continue;
                }
                budget -= 1;
                match transaction(stats, firewall.apply(second)).await {
                    Ok(()) => {}
                    Err(e) if about_content(&e) => failed.push((second, e)),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    for (change, error) in refused.iter().take(LOGGED) {
        let (set, target) = key(change);
        tracing::error!(%set, %target, %error, "nft refused this change alone; the rest of its batch landed; it is kept and retried");
    }
    if refused.len() > LOGGED {
        tracing::error!(
            refused = refused.len(),
            "nft refused more changes of the batch than are logged one by one"
        );
    }
    Ok(Refused {
        first: refused.first().map(|(_, e)| e.clone()),
        keys: refused.into_iter().map(|(c, _)| key(c)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::MemoryFirewall;
    use std::time::Duration;

    fn ban(set: &str, ip: &str) -> Change {
        Change::Ban(Element {
            set: set.into(),
            target: ip.parse().expect("target"),
            timeout: Some(Duration::from_secs(600)),
        })
    }

    fn layout() -> Layout {
        Layout {
            table: "t".into(),
            priority: 0,
            jails: Vec::new(),
        }
    }

    fn batch(n: u32) -> Vec<Change> {
        (0..n)
            .map(|i| {
                ban(
                    "sshd",
                    &format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn one_refused_element_in_ten_thousand_is_found_and_the_rest_land() {
        let fw = MemoryFirewall::default();
        let stats = Stats::default();
        let bad: Target = "10.0.30.57".parse().expect("t");
        {
            let mut k = fw.kernel.lock().expect("lock");
            k.refused.insert(bad);
        }
        let mut f = fw.clone();
        f.install(&layout(), &[]).await.expect("installed");
        let changes = batch(10_000);
        let refused = apply(&mut f, &stats, &changes).await.expect("isolated");
        assert_eq!(refused.keys.len(), 1);
        assert!(refused.holds("sshd", &bad));
        let k = fw.kernel.lock().expect("lock");
        assert_eq!(k.elements.len(), 9_999, "every other element landed");
        assert!(
            k.transactions <= 1 + 2 * 14,
            "{} transactions",
            k.transactions
        );
    }

    #[tokio::test]
    async fn a_refused_restore_builds_the_table_and_keeps_the_good_bans() {
        let fw = MemoryFirewall::default();
        let stats = Stats::default();
        let bad: [Target; 2] = [
            "10.0.0.3".parse().expect("t"),
            "10.0.1.200".parse().expect("t"),
        ];
        fw.kernel.lock().expect("lock").refused.extend(bad);
        let elements: Vec<Element> = batch(1_000)
            .into_iter()
            .map(|c| match c {
                Change::Ban(e) => e,
                _ => unreachable!("bans only"),
            })
            .collect();
        let mut f = fw.clone();
        let refused = install(&mut f, &stats, &layout(), &elements)
            .await
            .expect("installed");
        assert_eq!(refused.keys.len(), 2);
        let k = fw.kernel.lock().expect("lock");
        assert!(k.installed.is_some());
        assert_eq!(k.elements.len(), 998);
    }

    #[tokio::test]
    async fn the_search_is_bounded_and_what_it_did_not_try_counts_as_refused() {
        let fw = MemoryFirewall::default();
        let stats = Stats::default();
        let changes = batch(1_000);
        {
            let mut k = fw.kernel.lock().expect("lock");
            // Every element refused: the worst case.
            for c in &changes {
                k.refused.insert(key(c).1);
            }
        }
        let mut f = fw.clone();
        f.install(&layout(), &[]).await.expect("installed");
        let before = fw.kernel.lock().expect("lock").attempts;
        let refused = apply(&mut f, &stats, &changes).await.expect("isolated");
        assert_eq!(refused.keys.len(), 1_000);
        let attempts = fw.kernel.lock().expect("lock").attempts - before;
        assert!(attempts <= 1 + MAX_TRANSACTIONS, "{attempts} attempts");
    }

    #[tokio::test]
    async fn a_missing_table_fails_the_whole_batch() {
        let mut fw = MemoryFirewall::default();
        let stats = Stats::default();
        let e = apply(&mut fw, &stats, &batch(4))
            .await
            .expect_err("no table");
        assert!(e.table_missing());
    }
}
