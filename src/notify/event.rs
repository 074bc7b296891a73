//! An event as notifiers and `ctl events` see it: one ban or unban, with the lines
//! that made the ban. Pure.

use serde::{Deserialize, Serialize};

use crate::ban::Ended;
use crate::types::{Ban, Timestamp};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Ban,
    Unban,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Ban => "ban",
            EventKind::Unban => "unban",
        }
    }
}

/// One ban or unban (stable JSON: fields may be added, never removed or renamed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event: EventKind,
    /// The banned address or prefix.
    pub ip: String,
    pub jail: String,
    pub banned_at: Timestamp,
    /// `null`: permanent.
    pub expires_at: Option<Timestamp>,
    /// How many times this address has been banned in this jail, this ban included.
    pub count: u32,
    /// The log lines that made the ban, oldest first (`[]` for a ban by hand or from
    /// the fleet).
    pub matches: Vec<String>,
    /// The fleet host that decided the ban (`null`: this host).
    pub origin: Option<String>,
    /// For an unban: `expired` or `lifted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Event {
    /// A ban now in force.
    pub fn banned(ban: &Ban, matches: Vec<String>) -> Event {
        Event::of(EventKind::Ban, ban, matches, None)
    }

    /// A ban that ended, and why.
    pub fn ended(ban: &Ban, why: Ended, matches: Vec<String>) -> Event {
        let reason = match why {
            Ended::Expired => "expired",
            Ended::Lifted => "lifted",
        };
        Event::of(EventKind::Unban, ban, matches, Some(reason.to_string()))
    }

    fn of(event: EventKind, ban: &Ban, matches: Vec<String>, reason: Option<String>) -> Event {
        Event {
            event,
            ip: ban.target.to_string(),
            jail: ban.jail.clone(),
            banned_at: ban.banned_at,
            expires_at: ban.expires_at,
            count: ban.count,
            matches,
            origin: ban.origin.as_ref().map(|o| o.host.clone()),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_ban;

    #[test]
    fn an_event_has_the_documented_fields() {
        let ban = test_ban("sshd", "192.0.2.7");
        let v = serde_json::to_value(Event::banned(&ban, vec!["line".into()])).expect("json");
        for field in [
            "event",
            "ip",
            "jail",
            "banned_at",
            "expires_at",
            "count",
            "matches",
            "origin",
        ] {
            assert!(v.get(field).is_some(), "{field} in {v}");
        }
        assert_eq!(v["event"], "ban");
        assert_eq!(v["ip"], "192.0.2.7");
        assert_eq!(v["matches"][0], "line");
        assert!(v["origin"].is_null());
        assert!(v.get("reason").is_none());
        let v = serde_json::to_value(Event::ended(&ban, Ended::Expired, Vec::new())).expect("json");
        assert_eq!(
            (v["event"].as_str(), v["reason"].as_str()),
            (Some("unban"), Some("expired"))
        );
    }
}
