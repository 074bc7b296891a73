//! Fleet ban sharing over NATS JetStream: each host publishes its own ban decisions,
//! signed with its ed25519 key, and applies those of the hosts it trusts.
//! `wire.rs`: a decision as it travels (pure); `keys.rs`: key files; `admit.rs`: what a
//! received decision must pass (pure); `nats/`: the NATS edge (connect, stream,
//! publish with dedup, the durable consumer); `run.rs`: the publisher and the
//! consumer tasks.

pub mod admit;
pub mod keys;
pub mod nats;
mod run;
pub mod wire;

pub use run::{incoming, nats_options, outgoing, Fleet, Trust};
