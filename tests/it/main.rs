//! Integration tests: the real `gaoler` binary with real sled state and, where the
//! kernel is involved, real nftables inside private network namespaces.

mod accuracy;
mod cli;
mod ctl;
mod daemon;
mod e2e;
mod events;
mod filters;
mod firewall;
mod fleet;
mod fleet_nats;
mod import;
mod journal;
mod lifecycle;
mod many_jails;
mod metrics;
mod notify;
mod reload;
mod scripts;
mod sources;
mod store_faults;
mod support;
mod tail_model;
mod torture;
mod webapp;
