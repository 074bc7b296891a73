//! What follows the bans beyond the kernel and the store: each ban and unban as an
//! [`Event`] (the JSON of SPEC "Evidence and notifications"), made by the hub from
//! the ban manager's outputs and handed to `ctl events` followers, none of which the
//! ban manager ever waits for.

mod event;
mod hub;

pub use event::{Event, EventKind};
pub use hub::{followers, run_hub, Followers, FOLLOWER_LAG};
