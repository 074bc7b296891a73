//! A fleet decision as it travels: the [`Decision`] (a ban or an unban, as its origin
//! made it), and the signed envelope around it ([`seal`], [`open`]). Pure: no I/O, no
//! clock. Opening checks the form and the signature only; whether the signer is
//! trusted, and whether the decision may be applied here, is `admit.rs`'s business.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::types::{Target, Timestamp};

/// The envelope format this code writes and reads.
pub const VERSION: u64 = 1;

/// The largest message [`open`] reads; a decision's envelope is a few hundred bytes.
pub const MAX_MESSAGE: usize = 8 * 1024;

/// What a decision does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ban,
    Unban,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ban => "ban",
            Kind::Unban => "unban",
        }
    }
}

/// A ban or an unban decided by one host of the fleet, as published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub kind: Kind,
    /// The deciding host's name (`[fleet] host`).
    pub host: String,
    pub jail: String,
    /// `"1.2.3.4"` or `"2001:db8::/64"`.
    pub target: Target,
    pub banned_at: Timestamp,
    /// `None`: permanent.
    pub expires_at: Option<Timestamp>,
    /// The ban's number for this target in this jail at its origin.
    pub count: u32,
    /// The origin's ban id ([`Decision::ban_id`]); an unban names the ban it lifts.
    pub id: String,
    /// When this decision was made: `banned_at` for a ban, the unban's time for an
    /// unban.
    pub at: Timestamp,
}

impl Decision {
    /// The id of a ban at its origin: the same inputs always give the same id, and two
    /// bans differ in at least one of them (a host bans a target in a jail at most once
    /// at a given instant).
    pub fn ban_id(host: &str, jail: &str, target: &Target, banned_at: Timestamp) -> String {
        format!("{host}/{jail}/{target}/{}", unix_nanos(banned_at))
    }

    /// The JetStream `Nats-Msg-Id` of this decision: deterministic, so a decision
    /// published again after a crash is deduplicated by the server, and distinct for
    /// two decisions (host, kind, ban id and time). ASCII without spaces or control
    /// characters: any other byte of a name is written `%XX`.
    pub fn msg_id(&self) -> String {
        let mut out = String::with_capacity(self.host.len() + self.id.len() + 40);
        escape_into(&mut out, &self.host);
        out.push('|');
        out.push_str(self.kind.as_str());
        out.push('|');
        escape_into(&mut out, &self.id);
        out.push('|');
        out.push_str(&unix_nanos(self.at).to_string());
        out
    }
}

/// Nanoseconds since the Unix epoch, defined for every representable time (chrono's
/// own `timestamp_nanos_opt` ends in 2262).
fn unix_nanos(t: Timestamp) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

/// Appends `s` with every byte outside `[A-Za-z0-9._~:/-]` as `%XX`, so the `|` that
/// separates the parts of a message id never appears inside one.
fn escape_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b".-_~:/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The envelope on the wire. The payload is the decision's JSON as a string, and the
/// signature is over its bytes: no canonical JSON needed, the receiver verifies exactly
/// the bytes that were signed and only then parses them.
#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u64,
    /// The signer's public key, base64 (standard alphabet).
    key: String,
    /// The ed25519 signature of `payload`'s bytes, base64.
    sig: String,
    payload: String,
}

/// A decision serialized and signed with `key`, ready to publish.
pub fn seal(d: &Decision, key: &SigningKey) -> Vec<u8> {
    // Neither can fail: every field serializes as a string, a number or null.
    let payload = serde_json::to_string(d).unwrap_or_default();
    let sig = key.sign(payload.as_bytes());
    let envelope = Envelope {
        v: VERSION,
        key: STANDARD.encode(key.verifying_key().as_bytes()),
        sig: STANDARD.encode(sig.to_bytes()),
        payload,
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// A message whose signature holds: the decision and the key that signed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sealed {
    pub decision: Decision,
    pub key: VerifyingKey,
}

/// Why a received message is not a well-signed decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {0} bytes, over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a gaoler envelope: {0}")]
    Envelope(String),
    #[error("unknown envelope version {0}")]
    Version(String),
    #[error("`{field}` is not base64: {reason}")]
    Base64 { field: &'static str, reason: String },
    #[error("bad public key: {0}")]
    Key(String),
    #[error("bad signature: {0}")]
    Signature(String),
    #[error("signed payload is not a decision: {0}")]
    Payload(String),
}

/// A message whose form holds but whose signature is not checked yet ([`read`]): the
/// signer's key is known, so a message of this host's own key or of a key nobody
/// trusts is put aside before any curve arithmetic, and the signatures of trusted ones
/// are checked together ([`verify_all`]).
#[derive(Clone, Debug)]
pub struct Unverified {
    key: [u8; 32],
    sig: Signature,
    payload: String,
}

impl Unverified {
    /// The key the message says signed it (not checked yet).
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Checks the signature with `key` (strict ed25519), then reads the decision.
    pub fn verify(self, key: &VerifyingKey) -> Result<Sealed, WireError> {
        key.verify_strict(self.payload.as_bytes(), &self.sig)
            .map_err(|_| WireError::Signature("does not verify with the message's key".into()))?;
        self.decision(*key)
    }

    /// The signed payload as a decision, once its signature held.
    fn decision(self, key: VerifyingKey) -> Result<Sealed, WireError> {
        let decision: Decision =
            serde_json::from_str(&self.payload).map_err(|e| WireError::Payload(short(&e)))?;
        Ok(Sealed { decision, key })
    }
}

/// Reads a message's size, form, version, key and signature fields, without checking
/// the signature.
pub fn read(bytes: &[u8]) -> Result<Unverified, WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| WireError::NotJson(short(&e)))?;
    match value.get("v") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => return Err(WireError::Version(clip(&v.to_string()))),
        None => return Err(WireError::Envelope("no `v` field".into())),
    }
    let envelope: Envelope =
        serde_json::from_value(value).map_err(|e| WireError::Envelope(short(&e)))?;
    let key = decode("key", &envelope.key)?;
    let key: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| WireError::Key(format!("{} bytes, 32 expected", key.len())))?;
    let sig = decode("sig", &envelope.sig)?;
    let sig = Signature::from_slice(&sig)
        .map_err(|_| WireError::Signature(format!("{} bytes, 64 expected", sig.len())))?;
    Ok(Unverified {
        key,
        sig,
        payload: envelope.payload,
    })
}

/// Reads a message: its size, form, version, key and signature (strict ed25519
/// verification), then its decision. Does not decide whether the key is trusted.
pub fn open(bytes: &[u8]) -> Result<Sealed, WireError> {
    let message = read(bytes)?;
    let key = VerifyingKey::from_bytes(message.key())
        .map_err(|_| WireError::Key("not a point of the curve".into()))?;
    message.verify(&key)
}

/// Checks many messages, each with the key it is paired with (a trusted key whose
/// bytes are the message's): their signatures together (ed25519 batch verification,
/// about three times cheaper a signature than one by one), and only when the batch
/// fails, one by one (strict) to tell the bad from the good. The keys must not be weak
/// (`keys::parse_public` refuses those), as batch verification is not strict.
pub fn verify_all(messages: Vec<(Unverified, VerifyingKey)>) -> Vec<Result<Sealed, WireError>> {
    if messages.iter().any(|(m, k)| k.as_bytes() != m.key()) {
        // Not how the admission calls it: no batch, each checked with its own pair.
        return messages.into_iter().map(|(m, k)| m.verify(&k)).collect();
    }
    let together = messages.len() > 1 && {
        let payloads: Vec<&[u8]> = messages.iter().map(|(m, _)| m.payload.as_bytes()).collect();
        let sigs: Vec<Signature> = messages.iter().map(|(m, _)| m.sig).collect();
        let keys: Vec<VerifyingKey> = messages.iter().map(|(_, k)| *k).collect();
        ed25519_dalek::verify_batch(&payloads, &sigs, &keys).is_ok()
    };
    messages
        .into_iter()
        .map(|(m, key)| {
            if together {
                m.decision(key)
            } else {
                m.verify(&key)
            }
        })
        .collect()
}

fn decode(field: &'static str, text: &str) -> Result<Vec<u8>, WireError> {
    STANDARD.decode(text).map_err(|e| WireError::Base64 {
        field,
        reason: e.to_string(),
    })
}

/// A parse error as a short, printable reason (it may quote the sender's text).
fn short(e: &serde_json::Error) -> String {
    clip(&e.to_string())
}

/// At most 160 characters, control characters escaped: safe to log.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(160).flat_map(char::escape_debug).collect();
    if s.chars().nth(160).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::test_time;
    use chrono::Duration;

    /// The fixed key of fleet unit tests number `n`.
    pub(crate) fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    /// A one-hour ban of `target` in sshd, decided by `web-1` at [`test_time`].
    pub(crate) fn ban(target: &str) -> Decision {
        let target: Target = target.parse().expect("target");
        let at = test_time();
        Decision {
            kind: Kind::Ban,
            host: "web-1".into(),
            jail: "sshd".into(),
            target,
            banned_at: at,
            expires_at: Some(at + Duration::hours(1)),
            count: 1,
            id: Decision::ban_id("web-1", "sshd", &target, at),
            at,
        }
    }

    fn envelope(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("json")
    }

    #[test]
    fn a_sealed_decision_opens_to_itself_and_its_key() {
        for d in [ban("192.0.2.7"), ban("2001:db8::/64")] {
            let bytes = seal(&d, &key(1));
            let sealed = open(&bytes).expect("opens");
            assert_eq!(sealed.decision, d);
            assert_eq!(sealed.key, key(1).verifying_key());
        }
        let mut unban = ban("192.0.2.7");
        unban.kind = Kind::Unban;
        unban.expires_at = None;
        unban.at = test_time() + Duration::minutes(5);
        assert_eq!(open(&seal(&unban, &key(1))).expect("opens").decision, unban);
    }

    #[test]
    fn the_envelope_has_the_documented_shape() {
        let d = ban("192.0.2.7");
        let v = envelope(&seal(&d, &key(1)));
        assert_eq!(v["v"], 1);
        assert_eq!(
            v["key"],
            STANDARD.encode(key(1).verifying_key().as_bytes()).as_str()
        );
        let payload: serde_json::Value =
            serde_json::from_str(v["payload"].as_str().expect("payload text")).expect("json");
        assert_eq!(payload["kind"], "ban");
        assert_eq!(payload["target"], "192.0.2.7");
        assert_eq!(payload["host"], "web-1");
        assert_eq!(payload["expires_at"], "2026-11-21T09:00:00Z");
        let sig = STANDARD
            .decode(v["sig"].as_str().expect("sig"))
            .expect("base64");
        assert_eq!(sig.len(), 64);
    }

    #[test]
    fn a_permanent_ban_travels_with_a_null_expiry() {
        let mut d = ban("2001:db8::/64");
        d.expires_at = None;
        let bytes = seal(&d, &key(1));
        let payload = envelope(&bytes)["payload"]
            .as_str()
            .expect("text")
            .to_string();
        assert!(payload.contains("\"expires_at\":null"), "{payload}");
        assert!(payload.contains("\"2001:db8::/64\""), "{payload}");
        assert_eq!(open(&bytes).expect("opens").decision.expires_at, None);
    }

    #[test]
    fn one_flipped_byte_of_the_payload_breaks_the_signature() {
        let bytes = seal(&ban("192.0.2.7"), &key(1));
        let text = String::from_utf8(bytes).expect("utf8");
        // 192.0.2.7 -> 192.0.2.8 inside the payload string.
        let tampered = text.replacen("192.0.2.7", "192.0.2.8", 1);
        assert_ne!(tampered, text);
        assert!(matches!(
            open(tampered.as_bytes()),
            Err(WireError::Signature(_))
        ));
        // Any single byte of the payload, even one that keeps it valid JSON.
        let mut v = envelope(text.as_bytes());
        let payload = v["payload"].as_str().expect("text").replacen("1", "2", 1);
        v["payload"] = payload.into();
        let bytes = serde_json::to_vec(&v).expect("json");
        assert!(matches!(open(&bytes), Err(WireError::Signature(_))));
    }

    #[test]
    fn another_key_in_the_envelope_breaks_the_signature() {
        let mut v = envelope(&seal(&ban("192.0.2.7"), &key(1)));
        v["key"] = STANDARD.encode(key(2).verifying_key().as_bytes()).into();
        let bytes = serde_json::to_vec(&v).expect("json");
        assert!(matches!(open(&bytes), Err(WireError::Signature(_))));
    }

    #[test]
    fn a_signature_of_another_payload_does_not_verify() {
        let a = envelope(&seal(&ban("192.0.2.7"), &key(1)));
        let mut b = envelope(&seal(&ban("192.0.2.8"), &key(1)));
        b["sig"] = a["sig"].clone();
        let bytes = serde_json::to_vec(&b).expect("json");
        assert!(matches!(open(&bytes), Err(WireError::Signature(_))));
    }

    #[test]
    fn garbage_and_huge_input_are_refused_without_panicking() {
        assert!(matches!(open(b""), Err(WireError::NotJson(_))));
        assert!(matches!(
            open(b"\xff\xfe garbage \x00"),
            Err(WireError::NotJson(_))
        ));
        assert!(matches!(open(b"[1,2,3]"), Err(WireError::Envelope(_))));
        assert!(matches!(open(b"{}"), Err(WireError::Envelope(_))));
        assert!(matches!(
            open(br#"{"v":1,"key":"a"}"#),
            Err(WireError::Envelope(_))
        ));
        let huge = vec![b' '; MAX_MESSAGE + 1];
        assert_eq!(open(&huge), Err(WireError::TooLarge(MAX_MESSAGE + 1)));
        let mut big = seal(&ban("192.0.2.7"), &key(1));
        big.resize(10 << 20, b' ');
        assert!(matches!(open(&big), Err(WireError::TooLarge(_))));
        // Every prefix of a good message is refused, none panics.
        let good = seal(&ban("192.0.2.7"), &key(1));
        for n in 0..good.len() {
            assert!(open(&good[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    /// `n` well-signed bans by `signer`, and the one at `bad` with its payload altered.
    fn batch(n: usize, bad: Option<usize>) -> Vec<(Unverified, VerifyingKey)> {
        (0..n)
            .map(|i| {
                let mut bytes = seal(&ban(&format!("192.0.2.{i}")), &key(1));
                if bad == Some(i) {
                    let at = bytes
                        .windows(8)
                        .position(|w| w == b"192.0.2.")
                        .expect("target");
                    bytes[at] = b'8';
                }
                (read(&bytes).expect("reads"), key(1).verifying_key())
            })
            .collect()
    }

    #[test]
    fn a_batch_verifies_together_and_a_forgery_in_it_is_found_alone() {
        let all = verify_all(batch(64, None));
        assert_eq!(all.len(), 64);
        for (i, r) in all.iter().enumerate() {
            let target = format!("192.0.2.{i}").parse::<Target>().expect("target");
            assert_eq!(r.as_ref().map(|s| s.decision.target), Ok(target));
        }
        let mixed = verify_all(batch(64, Some(17)));
        for (i, r) in mixed.iter().enumerate() {
            match r {
                Err(WireError::Signature(_)) => assert_eq!(i, 17),
                Ok(s) => assert_eq!(s.key, key(1).verifying_key()),
                Err(e) => panic!("{i}: {e}"),
            }
        }
        assert_eq!(mixed.iter().filter(|r| r.is_err()).count(), 1);
        // Of one, and of none.
        assert!(matches!(
            verify_all(batch(1, Some(0))).as_slice(),
            [Err(WireError::Signature(_))]
        ));
        assert!(verify_all(Vec::new()).is_empty());
        // A key that is not the message's: refused, whatever the batch.
        let mut wrong = batch(3, None);
        wrong[1].1 = key(2).verifying_key();
        let r = verify_all(wrong);
        assert!(r[0].is_ok() && r[2].is_ok() && r[1].is_err(), "{r:?}");
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let mut v = envelope(&seal(&ban("192.0.2.7"), &key(1)));
        v["v"] = 2.into();
        let bytes = serde_json::to_vec(&v).expect("json");
        assert_eq!(open(&bytes), Err(WireError::Version("2".into())));
        v["v"] = "1".into();
        let bytes = serde_json::to_vec(&v).expect("json");
        assert!(matches!(open(&bytes), Err(WireError::Version(_))));
    }

    #[test]
    fn bad_base64_and_bad_keys_are_told_apart() {
        let good = envelope(&seal(&ban("192.0.2.7"), &key(1)));
        let with = |field: &str, value: &str| {
            let mut v = good.clone();
            v[field] = value.into();
            open(&serde_json::to_vec(&v).expect("json"))
        };
        assert!(matches!(
            with("key", "not base64!"),
            Err(WireError::Base64 { field: "key", .. })
        ));
        assert!(matches!(
            with("sig", "not base64!"),
            Err(WireError::Base64 { field: "sig", .. })
        ));
        assert_eq!(
            with("key", &STANDARD.encode([7u8; 16])),
            Err(WireError::Key("16 bytes, 32 expected".into()))
        );
        assert!(matches!(
            with("sig", &STANDARD.encode([7u8; 10])),
            Err(WireError::Signature(_))
        ));
        // A weak (small-order) key: refused by strict verification.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(with("key", &STANDARD.encode(identity)).is_err());
    }

    #[test]
    fn a_well_signed_payload_that_is_not_a_decision_is_refused() {
        let k = key(1);
        let sign = |payload: &str| {
            let env = Envelope {
                v: VERSION,
                key: STANDARD.encode(k.verifying_key().as_bytes()),
                sig: STANDARD.encode(k.sign(payload.as_bytes()).to_bytes()),
                payload: payload.into(),
            };
            serde_json::to_vec(&env).expect("json")
        };
        assert!(matches!(open(&sign("hello")), Err(WireError::Payload(_))));
        let mut v = serde_json::to_value(ban("192.0.2.7")).expect("json");
        v["target"] = "evil.example\nfake log line".into();
        let err = open(&sign(&v.to_string())).expect_err("refused");
        assert!(matches!(err, WireError::Payload(_)));
        assert!(!err.to_string().contains('\n'), "{err}");
        v["target"] = "192.0.2.7".into();
        v["kind"] = "nuke".into();
        assert!(matches!(
            open(&sign(&v.to_string())),
            Err(WireError::Payload(_))
        ));
    }

    #[test]
    fn ban_ids_are_deterministic_and_distinct() {
        let t: Target = "192.0.2.7".parse().expect("t");
        let at = test_time();
        let id = Decision::ban_id("web-1", "sshd", &t, at);
        assert_eq!(id, Decision::ban_id("web-1", "sshd", &t, at));
        assert_eq!(id, "web-1/sshd/192.0.2.7/1795248000000000000");
        for other in [
            Decision::ban_id("web-2", "sshd", &t, at),
            Decision::ban_id("web-1", "nginx", &t, at),
            Decision::ban_id("web-1", "sshd", &"192.0.2.8".parse().expect("t"), at),
            Decision::ban_id("web-1", "sshd", &t, at + Duration::nanoseconds(1)),
        ] {
            assert_ne!(id, other);
        }
    }

    #[test]
    fn message_ids_are_deterministic_ascii_and_differ_per_decision() {
        let b = ban("2001:db8::/64");
        assert_eq!(b.msg_id(), b.clone().msg_id());
        let id = b.msg_id();
        assert!(
            id.bytes().all(|c| c.is_ascii_graphic()),
            "not plain ASCII: {id}"
        );
        let mut unban = b.clone();
        unban.kind = Kind::Unban;
        assert_ne!(unban.msg_id(), id);
        let mut later = unban.clone();
        later.at = b.at + Duration::seconds(1);
        assert_ne!(later.msg_id(), unban.msg_id());
        let mut other_host = b.clone();
        other_host.host = "web-2".into();
        assert_ne!(other_host.msg_id(), id);
        // Names with spaces, separators or non-ASCII stay plain ASCII, and distinct.
        let mut odd = b.clone();
        odd.host = "web 1|é".into();
        let odd_id = odd.msg_id();
        assert!(odd_id.bytes().all(|c| c.is_ascii_graphic()), "{odd_id}");
        assert!(odd_id.starts_with("web%201%7C%C3%A9|ban|"), "{odd_id}");
    }
}
