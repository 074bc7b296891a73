//! The current bans, indexed by (jail, target) and by expiry. Pure state with `now`
//! passed in; the ban manager is its only owner.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use crate::types::{Ban, Target, Timestamp};

/// Current bans and when each ends.
#[derive(Default, Debug)]
pub struct BanBook {
    /// Per jail, per target: looked up without building a key.
    bans: HashMap<String, HashMap<Target, Ban>>,
    expiry: BTreeSet<(Timestamp, String, Target)>,
    /// The last `listing`, while anyone still holds it and nothing changed since.
    listing: Weak<Vec<Ban>>,
}

impl BanBook {
    /// Adds or replaces the ban of `ban.target` in `ban.jail`; returns the old one.
    pub fn insert(&mut self, ban: Ban) -> Option<Ban> {
        let old = self.remove(&ban.jail, &ban.target);
        self.listing = Weak::new();
        if let Some(end) = ban.expires_at {
            self.expiry.insert((end, ban.jail.clone(), ban.target));
        }
        match self.bans.get_mut(&ban.jail) {
            Some(jail) => {
                jail.insert(ban.target, ban);
            }
            None => {
                self.bans
                    .insert(ban.jail.clone(), HashMap::from([(ban.target, ban)]));
            }
        }
        old
    }

    pub fn remove(&mut self, jail: &str, target: &Target) -> Option<Ban> {
        let ban = self.bans.get_mut(jail)?.remove(target)?;
        self.listing = Weak::new();
        if let Some(end) = ban.expires_at {
            self.expiry.remove(&(end, ban.jail.clone(), ban.target));
        }
        Some(ban)
    }

    pub fn get(&self, jail: &str, target: &Target) -> Option<&Ban> {
        self.bans.get(jail)?.get(target)
    }

    /// When the next ban ends.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.expiry.first().map(|(t, _, _)| *t)
    }

    /// Removes and returns every ban that has ended by `now`.
    pub fn take_expired(&mut self, now: Timestamp) -> Vec<Ban> {
        let mut out = Vec::new();
        while let Some((end, jail, target)) = self.expiry.first().cloned() {
            if end > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(ban) = self.bans.get_mut(&jail).and_then(|j| j.remove(&target)) {
                out.push(ban);
            }
        }
        if !out.is_empty() {
            self.listing = Weak::new();
        }
        out
    }

    /// Every ban, sorted like `select`, shared: whoever asks again before the book
    /// changes gets the same list (`ctl banned` from many clients costs one copy), and
    /// it is freed when the last holder drops it.
    pub fn listing(&mut self) -> Arc<Vec<Ban>> {
        if let Some(list) = self.listing.upgrade() {
            return list;
        }
        let list = Arc::new(self.select(None, None));
        self.listing = Arc::downgrade(&list);
        list
    }

    /// Bans matching the optional jail and target, sorted by jail then target.
    pub fn select(&self, jail: Option<&str>, target: Option<&Target>) -> Vec<Ban> {
        let mut out: Vec<Ban> = self
            .bans
            .iter()
            .filter(|(j, _)| jail.is_none_or(|want| want == j.as_str()))
            .flat_map(|(_, bans)| bans.values())
            .filter(|b| target.is_none_or(|t| b.target == *t))
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.jail, a.target).cmp(&(&b.jail, b.target)));
        out
    }

    /// The targets banned in `jail`.
    pub fn targets_in<'a>(&'a self, jail: &str) -> impl Iterator<Item = &'a Target> + 'a {
        self.bans.get(jail).into_iter().flat_map(|bans| bans.keys())
    }

    /// Number of current bans in `jail`.
    pub fn count_in(&self, jail: &str) -> usize {
        self.bans.get(jail).map_or(0, HashMap::len)
    }

    pub fn len(&self) -> usize {
        self.bans.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::types::test_time as t0;

    fn ban(jail: &str, ip: &str, secs: Option<i64>) -> Ban {
        Ban {
            target: ip.parse().expect("ip"),
            jail: jail.into(),
            banned_at: t0(),
            expires_at: secs.map(|s| t0() + chrono::Duration::seconds(s)),
            count: 1,
            origin: None,
        }
    }

    #[test]
    fn expiry_comes_in_order_and_permanent_bans_stay() {
        let mut book = BanBook::default();
        book.insert(ban("sshd", "192.0.2.1", Some(20)));
        book.insert(ban("sshd", "192.0.2.2", Some(10)));
        book.insert(ban("web", "192.0.2.1", None));
        assert_eq!(
            book.next_expiry(),
            Some(t0() + chrono::Duration::seconds(10))
        );
        let gone = book.take_expired(t0() + chrono::Duration::seconds(15));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].target.to_string(), "192.0.2.2");
        let gone = book.take_expired(t0() + chrono::Duration::days(999));
        assert_eq!(gone.len(), 1);
        assert_eq!(book.len(), 1);
        assert_eq!(book.next_expiry(), None);
    }

    #[test]
    fn replacing_a_ban_moves_its_expiry() {
        let mut book = BanBook::default();
        book.insert(ban("sshd", "192.0.2.1", Some(10)));
        let old = book.insert(ban("sshd", "192.0.2.1", Some(100)));
        assert!(old.is_some());
        assert!(book
            .take_expired(t0() + chrono::Duration::seconds(50))
            .is_empty());
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn select_by_jail_and_target() {
        let mut book = BanBook::default();
        book.insert(ban("sshd", "192.0.2.1", Some(10)));
        book.insert(ban("web", "192.0.2.1", Some(10)));
        book.insert(ban("web", "192.0.2.2", Some(10)));
        let t: Target = "192.0.2.1".parse().expect("ip");
        assert_eq!(book.select(None, Some(&t)).len(), 2);
        assert_eq!(book.select(Some("web"), None).len(), 2);
        assert_eq!(book.count_in("sshd"), 1);
        assert!(book.remove("web", &t).is_some());
        assert_eq!(book.select(None, Some(&t)).len(), 1);
    }

    #[test]
    fn a_listing_is_shared_until_the_book_changes_and_freed_with_its_last_holder() {
        let mut book = BanBook::default();
        book.insert(ban("web", "192.0.2.2", Some(10)));
        book.insert(ban("sshd", "192.0.2.1", Some(20)));
        let first = book.listing();
        assert_eq!(*first, book.select(None, None), "sorted like select");
        assert!(
            Arc::ptr_eq(&first, &book.listing()),
            "shared while unchanged"
        );

        book.insert(ban("sshd", "192.0.2.3", None));
        let second = book.listing();
        assert_eq!(
            (first.len(), second.len()),
            (2, 3),
            "a change makes a new one"
        );
        book.take_expired(t0() + chrono::Duration::seconds(15));
        assert_eq!(book.listing().len(), 2, "expiry too");
        let t: Target = "192.0.2.3".parse().expect("ip");
        let before = book.listing();
        book.remove("sshd", &t);
        assert_eq!((before.len(), book.listing().len()), (2, 1), "and removal");

        drop((first, second, before));
        let weak = Arc::downgrade(&book.listing());
        assert!(weak.upgrade().is_none(), "nobody holds it: freed");
    }
}
