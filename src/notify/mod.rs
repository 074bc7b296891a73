//! What follows the bans beyond the kernel and the store: each ban and unban as an
//! [`Event`] (the JSON of SPEC "Evidence and notifications"), made by the hub from
//! the ban manager's outputs and handed to `ctl events` followers and to the
//! `[[notify]]` notifiers (`run.rs`), none of which the ban manager ever waits for.

mod event;
mod hub;
mod run;

pub use event::{Event, EventKind};
pub use hub::{followers, notifiers, run_hub, Followers, Notifiers, FOLLOWER_LAG};
pub use run::{fill, fill_json, Notifier, Outcome};
