//! What a received fleet message must pass before its decision is applied here: a
//! sound envelope (`wire::read`) of a key this host trusts (and not its own), whose
//! signature holds (`wire::verify_all`, a batch's signatures checked together),
//! not seen before, and, for a ban, not expired, clear of the ignore list and not
//! broader than the limits; and no origin may send more than its rate. Pure: the
//! caller passes the time and the ignore list; the state is the memory of message ids
//! seen and one token bucket per trusted key.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;

use ed25519_dalek::VerifyingKey;
use ipnet::IpNet;

use super::wire::{self, Kind, Sealed};
use crate::types::{IgnoreList, Target, Timestamp};

/// How many message ids are remembered for replay detection (the oldest forgotten
/// first). At 16 bytes each, about 3 MB at most.
pub const SEEN_MESSAGES: usize = 100_000;

/// What a trusted origin may ask of this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The shortest IPv4 prefix accepted in a ban: with 24, a /16 is refused and /24 or
    /// longer accepted. A /0 is refused whatever this says.
    pub max_prefix_v4: u8,
    /// The shortest IPv6 prefix accepted in a ban.
    pub max_prefix_v6: u8,
    /// Decisions per minute per origin key (also the burst); 0 refuses all.
    pub rate_per_origin: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_prefix_v4: 24,
            max_prefix_v6: 48,
            rate_per_origin: 60_000,
        }
    }
}

impl Limits {
    /// True when a ban of `target` is too broad to accept.
    fn too_broad(&self, target: &Target) -> bool {
        let net = target.net();
        let min = match net {
            IpNet::V4(_) => self.max_prefix_v4,
            IpNet::V6(_) => self.max_prefix_v6,
        };
        net.prefix_len() == 0 || net.prefix_len() < min
    }
}

/// Why a received message is not applied. Each is counted under its [`label`].
///
/// [`label`]: Rejected::label
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("signed by a key not in trusted_keys")]
    Untrusted,
    /// An echo of this host's own decision: not an error, the caller skips it.
    #[error("this host's own decision")]
    Own,
    #[error("already received")]
    Replayed,
    #[error("the ban has already expired")]
    Expired,
    #[error("the target overlaps ignoreip, loopback or this host's addresses")]
    Ignored,
    #[error("the target is broader than the fleet's prefix limits")]
    TooBroad,
    #[error("the origin sends more decisions than its rate allows")]
    RateLimited,
}

impl Rejected {
    /// Every label, for metrics that show zero counts too.
    pub const LABELS: [&'static str; 8] = [
        "malformed",
        "untrusted",
        "own",
        "replayed",
        "expired",
        "ignored",
        "too_broad",
        "rate_limited",
    ];

    /// The metric label of this rejection.
    pub fn label(&self) -> &'static str {
        match self {
            Rejected::Malformed(_) => "malformed",
            Rejected::Untrusted => "untrusted",
            Rejected::Own => "own",
            Rejected::Replayed => "replayed",
            Rejected::Expired => "expired",
            Rejected::Ignored => "ignored",
            Rejected::TooBroad => "too_broad",
            Rejected::RateLimited => "rate_limited",
        }
    }
}

/// The gate of received messages: trust, limits, and what was already seen.
pub struct Admission {
    own: VerifyingKey,
    /// The trusted keys by their bytes (parsed once, not for every message).
    trusted: HashMap<[u8; 32], VerifyingKey>,
    limits: Limits,
    seen: Seen,
    buckets: HashMap<VerifyingKey, Bucket>,
}

impl Admission {
    pub fn new(own_key: VerifyingKey, trusted: Vec<VerifyingKey>, limits: Limits) -> Self {
        Admission::with_memory(own_key, trusted, limits, SEEN_MESSAGES)
    }

    fn with_memory(
        own: VerifyingKey,
        trusted: Vec<VerifyingKey>,
        limits: Limits,
        remembered: usize,
    ) -> Self {
        Admission {
            own,
            trusted: by_bytes(trusted),
            limits,
            seen: Seen::new(remembered),
            buckets: HashMap::new(),
        }
    }

    /// New trusted keys and limits (a reload). The memory of seen messages stays; the
    /// buckets of keys still trusted keep their level (at most the new burst).
    pub fn set_trust(&mut self, trusted: Vec<VerifyingKey>, limits: Limits) {
        self.trusted = by_bytes(trusted);
        self.limits = limits;
        let burst = f64::from(limits.rate_per_origin);
        let trusted = &self.trusted;
        self.buckets
            .retain(|k, _| trusted.contains_key(k.as_bytes()));
        for b in self.buckets.values_mut() {
            b.tokens = b.tokens.min(burst);
        }
    }

    /// The decision in `bytes` if it may be applied here at `now`, or why not: a batch
    /// of one ([`Admission::check_all`]).
    pub fn check(
        &mut self,
        bytes: &[u8],
        now: Timestamp,
        ignore: &IgnoreList,
    ) -> Result<Sealed, Rejected> {
        self.check_all([bytes], now, ignore)
            .pop()
            .unwrap_or_else(|| Err(Rejected::Malformed("no message".into())))
    }

    /// For each message, in order, its decision if it may be applied here at `now`, or
    /// why not. An admitted message is remembered, so the same message again is
    /// `Replayed`; a rejected one is not (a rate-limited decision delivered again later
    /// may pass). A message of this host's own key or of an untrusted one is put aside
    /// before its signature is checked (a flood of strangers' messages costs no curve
    /// arithmetic); the signatures of the rest are checked together.
    pub fn check_all<'a>(
        &mut self,
        messages: impl IntoIterator<Item = &'a [u8]>,
        now: Timestamp,
        ignore: &IgnoreList,
    ) -> Vec<Result<Sealed, Rejected>> {
        let mut out: Vec<Result<Sealed, Rejected>> = Vec::new();
        let mut signed = Vec::new();
        let mut places = Vec::new();
        for bytes in messages {
            let verdict = match wire::read(bytes) {
                Err(e) => Err(Rejected::Malformed(e.to_string())),
                Ok(m) if m.key() == self.own.as_bytes() => Err(Rejected::Own),
                Ok(m) => match self.trusted.get(m.key()) {
                    None => Err(Rejected::Untrusted),
                    Some(key) => {
                        places.push(out.len());
                        signed.push((m, *key));
                        // Replaced below by what the signature check says.
                        Err(Rejected::Malformed(String::new()))
                    }
                },
            };
            out.push(verdict);
        }
        for (place, result) in places.into_iter().zip(wire::verify_all(signed)) {
            out[place] = result
                .map_err(|e| Rejected::Malformed(e.to_string()))
                .and_then(|sealed| self.admit(sealed, now, ignore));
        }
        out
    }

    /// The rules after the signature, for a message of a trusted key.
    fn admit(
        &mut self,
        sealed: Sealed,
        now: Timestamp,
        ignore: &IgnoreList,
    ) -> Result<Sealed, Rejected> {
        let d = &sealed.decision;
        let msg_id = d.msg_id();
        if self.seen.contains(&msg_id) {
            return Err(Rejected::Replayed);
        }
        // An unban only lifts what is here: whatever its target, it is harmless, and
        // refusing it could strand a ban admitted under older limits or ignore lists.
        if d.kind == Kind::Ban {
            if d.expires_at.is_some_and(|e| e <= now) {
                return Err(Rejected::Expired);
            }
            if ignore.overlaps(&d.target) {
                return Err(Rejected::Ignored);
            }
            if self.limits.too_broad(&d.target) {
                return Err(Rejected::TooBroad);
            }
        }
        let rate = self.limits.rate_per_origin;
        let bucket = self.buckets.entry(sealed.key).or_insert(Bucket {
            tokens: f64::from(rate),
            last: now,
        });
        if !bucket.take(now, rate) {
            return Err(Rejected::RateLimited);
        }
        self.seen.insert(&msg_id);
        Ok(sealed)
    }
}

/// The keys by their bytes. A weak (small-order) key is never trusted: batch
/// verification is not strict (the configuration refuses such keys already).
fn by_bytes(keys: Vec<VerifyingKey>) -> HashMap<[u8; 32], VerifyingKey> {
    keys.into_iter()
        .filter(|k| !k.is_weak())
        .map(|k| (k.to_bytes(), k))
        .collect()
}

/// A token bucket: `rate` tokens per minute, at most `rate` held.
struct Bucket {
    tokens: f64,
    last: Timestamp,
}

impl Bucket {
    /// Refills for the time since the last call (none if the clock went back), then
    /// takes a token if there is one.
    fn take(&mut self, now: Timestamp, rate: u32) -> bool {
        let rate = f64::from(rate);
        if now > self.last {
            let elapsed = (now - self.last).to_std().unwrap_or_default().as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate / 60.0).min(rate);
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The message ids admitted lately, at most `cap`, the oldest forgotten first. Ids
/// are kept as 128-bit keyed hashes (two SipHash keys drawn per process): small, and
/// a collision (a fresh message taken for a replay) has odds around 2^-100.
struct Seen {
    set: HashSet<u128>,
    order: VecDeque<u128>,
    cap: usize,
    keys: (RandomState, RandomState),
}

impl Seen {
    fn new(cap: usize) -> Self {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    fn digest(&self, id: &str) -> u128 {
        (u128::from(self.keys.0.hash_one(id)) << 64) | u128::from(self.keys.1.hash_one(id))
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(&self.digest(id))
    }

    fn insert(&mut self, id: &str) {
        let h = self.digest(id);
        if !self.set.insert(h) {
            return;
        }
        self.order.push_back(h);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::wire::tests::{ban, key};
    use crate::fleet::wire::{seal, Decision};
    use crate::types::test_time;
    use chrono::Duration;

    /// This host is key 0; keys 1 and 2 are trusted, key 9 is not.
    fn gate(limits: Limits) -> Admission {
        let trusted = vec![key(1).verifying_key(), key(2).verifying_key()];
        Admission::new(key(0).verifying_key(), trusted, limits)
    }

    fn none() -> IgnoreList {
        IgnoreList::new(vec![])
    }

    fn now() -> Timestamp {
        test_time() + Duration::seconds(10)
    }

    fn unban(target: &str) -> Decision {
        let mut d = ban(target);
        d.kind = Kind::Unban;
        d.at = test_time() + Duration::minutes(5);
        d
    }

    /// Ban number `n`: a distinct address, all from the same origin.
    fn nth(n: u32) -> Decision {
        ban(&format!(
            "10.{}.{}.{}",
            (n >> 16) & 255,
            (n >> 8) & 255,
            n & 255
        ))
    }

    #[test]
    fn a_trusted_ban_and_unban_are_admitted() {
        let mut g = gate(Limits::default());
        let d = ban("192.0.2.7");
        assert_eq!(
            g.check(&seal(&d, &key(1)), now(), &none())
                .map(|s| s.decision),
            Ok(d)
        );
        let u = unban("192.0.2.7");
        assert_eq!(
            g.check(&seal(&u, &key(1)), now(), &none())
                .map(|s| s.decision),
            Ok(u)
        );
        let p = ban("2001:db8:1::/48");
        assert_eq!(
            g.check(&seal(&p, &key(2)), now(), &none())
                .map(|s| s.decision),
            Ok(p)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let mut g = gate(Limits::default());
        let err = g
            .check(b"\x00garbage", now(), &none())
            .expect_err("refused");
        assert!(matches!(err, Rejected::Malformed(_)), "{err}");
        assert_eq!(err.label(), "malformed");
        assert!(err.to_string().starts_with("malformed: not JSON"), "{err}");
        let mut tampered = seal(&ban("192.0.2.7"), &key(1));
        let at = tampered
            .windows(9)
            .position(|w| w == b"192.0.2.7")
            .expect("target in the message");
        tampered[at + 8] = b'8';
        let err = g.check(&tampered, now(), &none()).expect_err("refused");
        assert!(err.to_string().contains("bad signature"), "{err}");
    }

    #[test]
    fn an_echo_of_this_hosts_own_decision_is_own_even_if_listed_as_trusted() {
        let mut g = gate(Limits::default());
        let bytes = seal(&ban("192.0.2.7"), &key(0));
        assert_eq!(g.check(&bytes, now(), &none()), Err(Rejected::Own));
        g.set_trust(vec![key(0).verifying_key()], Limits::default());
        assert_eq!(g.check(&bytes, now(), &none()), Err(Rejected::Own));
    }

    #[test]
    fn a_batch_gets_a_verdict_for_each_message_in_order() {
        let mut g = gate(Limits::default());
        let mut forged = seal(&ban("192.0.2.3"), &key(1));
        let at = forged
            .windows(9)
            .position(|w| w == b"192.0.2.3")
            .expect("target");
        forged[at + 8] = b'4';
        let messages: Vec<Vec<u8>> = vec![
            seal(&ban("192.0.2.1"), &key(1)),
            b"garbage".to_vec(),
            seal(&ban("192.0.2.2"), &key(0)),
            forged,
            seal(&ban("192.0.2.5"), &key(9)),
            seal(&ban("192.0.2.6"), &key(2)),
            seal(&ban("192.0.2.1"), &key(1)),
        ];
        let verdicts: Vec<Result<String, &'static str>> = g
            .check_all(messages.iter().map(Vec::as_slice), now(), &none())
            .into_iter()
            .map(|r| {
                r.map(|s| s.decision.target.to_string())
                    .map_err(|e| e.label())
            })
            .collect();
        assert_eq!(
            verdicts,
            [
                Ok("192.0.2.1".to_string()),
                Err("malformed"),
                Err("own"),
                Err("malformed"),
                Err("untrusted"),
                Ok("192.0.2.6".to_string()),
                Err("replayed"),
            ]
        );
    }

    #[test]
    fn a_message_naming_this_hosts_key_is_put_aside_unverified() {
        // Whatever its signature: this host never applies its own key's decisions.
        let mut g = gate(Limits::default());
        let mut bytes = seal(&ban("192.0.2.7"), &key(0));
        let at = bytes
            .windows(9)
            .position(|w| w == b"192.0.2.7")
            .expect("target");
        bytes[at + 8] = b'8';
        assert_eq!(g.check(&bytes, now(), &none()), Err(Rejected::Own));
    }

    #[test]
    fn a_well_signed_decision_of_an_unknown_key_is_untrusted() {
        let mut g = gate(Limits::default());
        let bytes = seal(&ban("192.0.2.7"), &key(9));
        assert_eq!(g.check(&bytes, now(), &none()), Err(Rejected::Untrusted));
        // An untrusted message leaves no trace: once trusted, the same one passes.
        g.set_trust(vec![key(9).verifying_key()], Limits::default());
        assert!(g.check(&bytes, now(), &none()).is_ok());
    }

    #[test]
    fn the_same_decision_twice_is_a_replay_but_an_old_one_is_not() {
        let mut g = gate(Limits::default());
        let d = ban("192.0.2.7");
        let bytes = seal(&d, &key(1));
        assert!(g.check(&bytes, now(), &none()).is_ok());
        assert_eq!(g.check(&bytes, now(), &none()), Err(Rejected::Replayed));
        // Published again after a crash: the same message id.
        let again = seal(&d.clone(), &key(1));
        assert_eq!(g.check(&again, now(), &none()), Err(Rejected::Replayed));
        // The unban of that ban is another decision.
        assert!(g
            .check(&seal(&unban("192.0.2.7"), &key(1)), now(), &none())
            .is_ok());
        // A decision made before everything remembered is no replay by itself.
        let mut older = ban("192.0.2.9");
        older.at = test_time() - Duration::hours(1);
        older.banned_at = older.at;
        assert!(g.check(&seal(&older, &key(1)), now(), &none()).is_ok());
    }

    #[test]
    fn the_memory_of_seen_messages_is_bounded_and_forgets_the_oldest() {
        let trusted = vec![key(1).verifying_key()];
        let mut g = Admission::with_memory(key(0).verifying_key(), trusted, Limits::default(), 3);
        let msgs: Vec<Vec<u8>> = (0..4).map(|n| seal(&nth(n), &key(1))).collect();
        for m in &msgs {
            assert!(g.check(m, now(), &none()).is_ok());
        }
        assert_eq!(g.seen.order.len(), 3);
        assert_eq!(g.seen.set.len(), 3);
        // 1..3 are remembered; 0 was forgotten.
        assert_eq!(g.check(&msgs[3], now(), &none()), Err(Rejected::Replayed));
        assert_eq!(g.check(&msgs[1], now(), &none()), Err(Rejected::Replayed));
        assert!(g.check(&msgs[0], now(), &none()).is_ok());
    }

    #[test]
    fn an_expired_ban_is_refused_but_an_unban_never_expires() {
        let mut g = gate(Limits::default());
        let d = ban("192.0.2.7");
        let expiry = d.expires_at.expect("expiry");
        let bytes = seal(&d, &key(1));
        assert_eq!(g.check(&bytes, expiry, &none()), Err(Rejected::Expired));
        assert_eq!(
            g.check(&bytes, expiry + Duration::days(1), &none()),
            Err(Rejected::Expired)
        );
        // Not remembered: still admitted a moment before its end.
        assert!(g
            .check(&bytes, expiry - Duration::seconds(1), &none())
            .is_ok());
        let mut permanent = ban("192.0.2.8");
        permanent.expires_at = None;
        let far = test_time() + Duration::days(3650);
        assert!(g.check(&seal(&permanent, &key(1)), far, &none()).is_ok());
        let u = unban("192.0.2.7");
        assert!(g.check(&seal(&u, &key(1)), far, &none()).is_ok());
    }

    #[test]
    fn a_ban_that_touches_the_ignore_list_or_loopback_is_ignored_but_its_unban_passes() {
        let mut g = gate(Limits::default());
        let ignore = IgnoreList::new(vec!["198.51.100.0/24".parse().expect("net")]);
        for target in ["198.51.100.7", "198.51.100.0/24", "127.0.0.1", "::1"] {
            let bytes = seal(&ban(target), &key(1));
            assert_eq!(
                g.check(&bytes, now(), &ignore),
                Err(Rejected::Ignored),
                "{target}"
            );
        }
        // A broader prefix that contains an ignored network: ignored before too broad.
        let mut loose = gate(Limits {
            max_prefix_v4: 8,
            ..Limits::default()
        });
        let bytes = seal(&ban("198.51.0.0/16"), &key(1));
        assert_eq!(loose.check(&bytes, now(), &ignore), Err(Rejected::Ignored));
        assert!(g
            .check(&seal(&ban("198.51.101.7"), &key(1)), now(), &ignore)
            .is_ok());
        let u = unban("198.51.100.7");
        assert!(g.check(&seal(&u, &key(1)), now(), &ignore).is_ok());
    }

    #[test]
    fn a_ban_broader_than_the_limits_is_refused() {
        let mut g = gate(Limits::default());
        for (target, ok) in [
            ("192.0.0.0/16", false),
            ("192.0.2.0/23", false),
            ("192.0.2.0/24", true),
            ("192.0.3.0/28", true),
            ("192.0.4.1", true),
            ("2001:db8::/32", false),
            ("2001:db8:1::/47", false),
            ("2001:db8:2::/48", true),
            ("2001:db8:3::/64", true),
            ("2001:db8::9", true),
        ] {
            let got = g.check(&seal(&ban(target), &key(1)), now(), &none());
            if ok {
                assert!(got.is_ok(), "{target}: {got:?}");
            } else {
                assert_eq!(got, Err(Rejected::TooBroad), "{target}");
            }
        }
        // An unban of a broad target lifts only what is here: harmless.
        let u = unban("192.0.0.0/16");
        assert!(g.check(&seal(&u, &key(1)), now(), &none()).is_ok());
    }

    #[test]
    fn a_slash_zero_is_refused_whatever_the_limits() {
        let mut g = gate(Limits {
            max_prefix_v4: 0,
            max_prefix_v6: 0,
            rate_per_origin: 600,
        });
        assert!(g
            .check(&seal(&ban("10.0.0.0/8"), &key(1)), now(), &none())
            .is_ok());
        for target in ["0.0.0.0/0", "::/0"] {
            let t: Target = target.parse().expect("target");
            assert!(g.limits.too_broad(&t), "{target}");
            // Refused in any case (a /0 also covers loopback, so it is Ignored first).
            let got = g.check(&seal(&ban(target), &key(1)), now(), &none());
            assert!(got.is_err(), "{target}: {got:?}");
        }
    }

    #[test]
    fn each_origin_has_its_own_rate_and_it_refills_over_time() {
        let mut g = gate(Limits {
            rate_per_origin: 3,
            ..Limits::default()
        });
        let t = now();
        for n in 0..3 {
            assert!(g.check(&seal(&nth(n), &key(1)), t, &none()).is_ok(), "{n}");
        }
        let fourth = seal(&nth(3), &key(1));
        assert_eq!(g.check(&fourth, t, &none()), Err(Rejected::RateLimited));
        // Another origin is not held back by the first.
        assert!(g.check(&seal(&nth(100), &key(2)), t, &none()).is_ok());
        // 3 a minute: one more token after 20 s, not before.
        let early = t + Duration::seconds(19);
        assert_eq!(g.check(&fourth, early, &none()), Err(Rejected::RateLimited));
        let later = t + Duration::seconds(20);
        assert!(g.check(&fourth, later, &none()).is_ok());
        assert_eq!(
            g.check(&seal(&nth(4), &key(1)), later, &none()),
            Err(Rejected::RateLimited)
        );
        // A long pause refills up to the burst, no further.
        let much_later = t + Duration::minutes(30);
        for n in 5..8 {
            assert!(g
                .check(&seal(&nth(n), &key(1)), much_later, &none())
                .is_ok());
        }
        let got = g.check(&seal(&nth(8), &key(1)), much_later, &none());
        assert_eq!(got, Err(Rejected::RateLimited));
        // A clock that goes back refills nothing and breaks nothing.
        let got = g.check(&seal(&nth(9), &key(1)), t, &none());
        assert_eq!(got, Err(Rejected::RateLimited));
    }

    #[test]
    fn rejected_messages_spend_no_tokens() {
        let mut g = gate(Limits {
            rate_per_origin: 1,
            ..Limits::default()
        });
        let ignore = IgnoreList::new(vec!["198.51.100.0/24".parse().expect("net")]);
        for target in ["198.51.100.1", "198.51.100.2", "10.0.0.0/8"] {
            assert!(g
                .check(&seal(&ban(target), &key(1)), now(), &ignore)
                .is_err());
        }
        assert!(g.check(&seal(&nth(1), &key(1)), now(), &ignore).is_ok());
    }

    #[test]
    fn a_reload_changes_trust_and_limits() {
        let mut g = gate(Limits::default());
        assert!(g.check(&seal(&nth(0), &key(1)), now(), &none()).is_ok());
        assert!(g.check(&seal(&nth(1), &key(2)), now(), &none()).is_ok());
        let strict = Limits {
            max_prefix_v4: 32,
            max_prefix_v6: 128,
            rate_per_origin: 1,
        };
        g.set_trust(vec![key(2).verifying_key()], strict);
        assert_eq!(
            g.check(&seal(&nth(2), &key(1)), now(), &none()),
            Err(Rejected::Untrusted)
        );
        assert_eq!(
            g.check(&seal(&ban("192.0.2.0/24"), &key(2)), now(), &none()),
            Err(Rejected::TooBroad)
        );
        // Key 2's bucket is clamped to the new burst of 1.
        assert!(g.check(&seal(&nth(3), &key(2)), now(), &none()).is_ok());
        assert_eq!(
            g.check(&seal(&nth(4), &key(2)), now(), &none()),
            Err(Rejected::RateLimited)
        );
        // The memory of seen messages survives the reload.
        g.set_trust(vec![key(1).verifying_key()], Limits::default());
        assert_eq!(
            g.check(&seal(&nth(0), &key(1)), now(), &none()),
            Err(Rejected::Replayed)
        );
        assert_eq!(g.buckets.len(), 0);
    }

    #[test]
    fn labels_are_distinct_and_listed() {
        let all = [
            Rejected::Malformed("x".into()),
            Rejected::Untrusted,
            Rejected::Own,
            Rejected::Replayed,
            Rejected::Expired,
            Rejected::Ignored,
            Rejected::TooBroad,
            Rejected::RateLimited,
        ];
        let labels: Vec<&str> = all.iter().map(Rejected::label).collect();
        assert_eq!(labels, Rejected::LABELS);
        let distinct: HashSet<&str> = labels.iter().copied().collect();
        assert_eq!(distinct.len(), all.len());
        for r in &all {
            assert!(!r.to_string().is_empty());
        }
    }
}
