//! The dry-run backend (`backend = "log"`): every decision is made and recorded as
//! usual, and what would be sent to the kernel is logged instead.

use super::{Change, Element, Firewall, FirewallError, Inventory, Layout};

#[derive(Default)]
pub struct LogFirewall;

impl Firewall for LogFirewall {
    async fn probe(&mut self) -> Result<(), FirewallError> {
        tracing::warn!("firewall backend is \"log\": a dry run, nothing is blocked");
        Ok(())
    }

    async fn install(&mut self, layout: &Layout, bans: &[Element]) -> Result<(), FirewallError> {
        tracing::info!(
            table = %layout.table,
            jails = layout.jails.len(),
            bans = bans.len(),
            "dry run: would build the table"
        );
        Ok(())
    }

    async fn apply(&mut self, changes: &[Change]) -> Result<(), FirewallError> {
        for change in changes {
            match change {
                Change::Ban(e) | Change::Renew(e) => {
                    tracing::info!(set = %e.set, target = %e.target, timeout = ?e.timeout, "dry run: would ban")
                }
                Change::Unban { set, target } => {
                    tracing::info!(%set, %target, "dry run: would unban")
                }
            }
        }
        Ok(())
    }

    async fn remove(&mut self) -> Result<(), FirewallError> {
        tracing::info!("dry run: would remove the table");
        Ok(())
    }

    async fn inventory(&mut self, _layout: &Layout) -> Result<Option<Inventory>, FirewallError> {
        Ok(None)
    }
}
