//! The answers to control requests: one handler, cheap to share between connections,
//! with a method per request kind. It reads counters and the store (through a
//! `StoreReader`) and sends everything else to the ban manager or the supervisor; it
//! never touches ban state itself. The socket and its connections are `server.rs`'s.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

use super::access::SocketGroup;
use super::answer::Answer;
use super::{
    BanView, FleetReport, JailStatus, PastBans, Request, Response, ShowReport, StatsReport,
    StatusReport, PROTOCOL_VERSION,
};
use crate::ban::Command;
use crate::logging::LogControl;
use crate::stats::Stats;
use crate::store::StoreReader;
use crate::types::{Ban, Target};
use crate::units::parse_bantime;

/// Answers requests; cheap to share between connections.
pub struct Handler {
    pub commands: mpsc::Sender<Command>,
    pub stats: Arc<Stats>,
    /// (jail, filter) of the enabled jails, in order; replaced by a reload.
    pub jails: RwLock<Vec<(String, String)>>,
    /// Besides root and the daemon's user, who may send requests.
    pub group: Option<SocketGroup>,
    /// Reloads go to the daemon's supervisor, which answers when done.
    pub reload: mpsc::Sender<oneshot::Sender<Response>>,
    /// The daemon's own log: level and file.
    pub logs: Arc<LogControl>,
    /// `[fleet]` is configured (a restart adds or removes it).
    pub fleet: bool,
    /// Bans' evidence, read from the store.
    pub evidence: Arc<dyn StoreReader>,
    /// Where `ctl events` followers subscribe.
    pub events: crate::notify::Followers,
}

pub(super) fn usage(message: impl Into<String>) -> Response {
    Response::Error {
        usage: true,
        message: message.into(),
    }
}

pub(super) fn gone() -> Response {
    Response::Error {
        usage: false,
        message: "the daemon is shutting down".into(),
    }
}

impl Handler {
    pub async fn handle(&self, request: Request) -> Answer {
        let response = match request {
            Request::Banned { jail, matches } => return self.banned(jail, matches).await,
            Request::Ping => Response::Pong {
                version: env!("CARGO_PKG_VERSION").into(),
            },
            Request::Version => Response::Version {
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
            },
            Request::Status { jail } => self.status(jail).await,
            Request::Ban { jail, ip, bantime } => self.ban(jail, ip, bantime).await,
            Request::Unban { ip, jail, all } => self.unban(ip, jail, all).await,
            Request::Stats => Response::Stats(StatsReport {
                lines_read: self.stats.lines_read.load(Relaxed),
                failures: self.stats.failures.load(Relaxed),
                bans: self.stats.bans.load(Relaxed),
                tracked: self.stats.tracked(),
                evicted: self.stats.evicted.load(Relaxed),
                repairs: self.stats.repairs.load(Relaxed),
                lines_cut: self.stats.lines_cut.load(Relaxed),
                sessions_evicted: self.stats.sessions_evicted.load(Relaxed),
                lines_over_limit: self.stats.lines_over_limit.load(Relaxed),
                notify_sent: self.stats.notify.sent.load(Relaxed),
                notify_failed: self.stats.notify.failed.load(Relaxed),
                notify_timed_out: self.stats.notify.timed_out.load(Relaxed),
                notify_dropped: self.stats.notify.dropped.load(Relaxed),
            }),
            Request::Fleet => Response::Fleet(FleetReport::of(&self.stats.fleet, self.fleet)),
            Request::Show { ip } => self.show(&ip).await,
            Request::Events { jail } => {
                if let Some(j) = &jail {
                    if !self.knows(j) {
                        return Answer::Frame(usage(format!("no enabled jail named `{j}`")));
                    }
                }
                return Answer::Events {
                    events: self.events.subscribe(),
                    jail,
                };
            }
            Request::LogLevel { level } => match self.logs.set_level(&level) {
                Ok(()) => {
                    tracing::info!(level = %level.to_ascii_lowercase(), "log level changed by ctl");
                    Response::LogLevel {
                        level: level.to_ascii_lowercase(),
                    }
                }
                Err(e) => usage(e.to_string()),
            },
            Request::FlushLogs => match self.logs.reopen() {
                Ok(file) => Response::LogsFlushed {
                    file: file.map(|f| f.display().to_string()),
                },
                Err(e) => Response::Error {
                    usage: false,
                    message: e.to_string(),
                },
            },
            Request::Reload => {
                let (reply, answer) = oneshot::channel();
                match self.reload.send(reply).await {
                    Ok(()) => answer.await.unwrap_or_else(|_| gone()),
                    Err(_) => gone(),
                }
            }
        };
        Answer::Frame(response)
    }

    async fn banned(&self, jail: Option<String>, matches: bool) -> Answer {
        if let Some(j) = &jail {
            if !self.knows(j) {
                return Answer::Frame(usage(format!("no enabled jail named `{j}`")));
            }
        }
        match self.list().await {
            Some(all) => Answer::Bans {
                all,
                jail,
                evidence: matches.then(|| self.evidence.clone()),
            },
            None => Answer::Frame(gone()),
        }
    }

    /// `ctl show`: the bans that cover `ip` (or overlap a prefix), each with its
    /// evidence, and the history of `ip` and of those bans' targets in each jail.
    async fn show(&self, ip: &str) -> Response {
        let asked: Target = match ip.trim().parse() {
            Ok(t) => t,
            Err(e) => return usage(format!("`{ip}` is not an address or prefix: {e}")),
        };
        let Some(all) = self.list().await else {
            return gone();
        };
        let (q, mut targets) = (asked.net(), vec![asked]);
        let bans = all
            .iter()
            .filter(|b| b.target.net().contains(&q) || q.contains(&b.target.net()))
            .map(|b| {
                if !targets.contains(&b.target) {
                    targets.push(b.target);
                }
                let mut view = BanView::from(b);
                view.matches = self
                    .evidence
                    .evidence(&b.jail, &b.target)
                    .unwrap_or_default();
                view
            })
            .collect();
        let mut past = Vec::new();
        for (jail, _) in self.rows() {
            for target in &targets {
                if let Ok(Some(h)) = self.evidence.history(&jail, target) {
                    past.push(PastBans {
                        ip: target.to_string(),
                        jail: jail.clone(),
                        count: h.count,
                        last_banned_at: h.last_banned_at,
                    });
                }
            }
        }
        Response::Show(ShowReport {
            ip: asked.to_string(),
            bans,
            past,
        })
    }

    /// The (jail, filter) rows of the running configuration.
    fn rows(&self) -> Vec<(String, String)> {
        self.jails.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn knows(&self, jail: &str) -> bool {
        self.rows().iter().any(|(j, _)| j == jail)
    }

    /// Every current ban: the manager's list, shared with whoever else asked since
    /// the last change.
    async fn list(&self) -> Option<Arc<Vec<Ban>>> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::List { reply }).await.ok()?;
        rx.await.ok()
    }

    async fn status(&self, jail: Option<String>) -> Response {
        if let Some(j) = &jail {
            if !self.knows(j) {
                return usage(format!("no enabled jail named `{j}`"));
            }
        }
        let banned = match &jail {
            Some(j) => match self.list().await {
                Some(all) => all
                    .iter()
                    .filter(|b| &b.jail == j)
                    .map(|b| b.target.to_string())
                    .collect(),
                None => return gone(),
            },
            None => Vec::new(),
        };
        let jails = self
            .rows()
            .into_iter()
            .filter(|(name, _)| jail.as_ref().is_none_or(|j| j == name))
            .map(|(name, filter)| {
                let c = self.stats.jail(&name);
                let get = |f: fn(&crate::stats::JailCounters) -> u64| c.as_deref().map_or(0, f);
                JailStatus {
                    name,
                    filter,
                    currently_banned: get(|c| c.currently_banned.load(Relaxed)),
                    total_banned: get(|c| c.total_banned.load(Relaxed)),
                    currently_failed: get(|c| c.currently_failed.load(Relaxed)),
                    total_failed: get(|c| c.total_failed.load(Relaxed)),
                    banned: banned.clone(),
                }
            })
            .collect();
        Response::Status(StatusReport { jails })
    }

    async fn ban(&self, jail: String, ip: String, bantime: Option<String>) -> Response {
        let target: Target = match ip.parse() {
            Ok(t) => t,
            Err(e) => return usage(e.to_string()),
        };
        let bantime = match bantime.as_deref().map(parse_bantime) {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return usage(format!("--bantime: {e}")),
        };
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Ban {
            jail,
            target,
            bantime,
            reply,
        };
        if self.commands.send(cmd).await.is_err() {
            return gone();
        }
        match rx.await {
            Ok(Ok(ban)) => Response::Banned {
                ban: Box::new(BanView::from(&ban)),
            },
            Ok(Err(e)) => Response::Error {
                usage: e.is_usage(),
                message: e.to_string(),
            },
            Err(_) => gone(),
        }
    }

    async fn unban(&self, ip: Option<String>, jail: Option<String>, all: bool) -> Response {
        let target = match (ip, all) {
            (Some(_), true) => return usage("give an address or --all, not both"),
            (None, false) => return usage("give the address to unban, or --all"),
            (None, true) => None,
            (Some(ip), false) => match ip.parse::<Target>() {
                Ok(t) => Some(t),
                Err(e) => return usage(e.to_string()),
            },
        };
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Unban {
                target,
                jail,
                reply,
            })
            .await
            .is_err()
        {
            return gone();
        }
        match rx.await {
            Ok(Ok(bans)) => Response::Unbanned {
                bans: bans.iter().map(BanView::from).collect(),
            },
            Ok(Err(e)) => Response::Error {
                usage: e.is_usage(),
                message: e.to_string(),
            },
            Err(_) => gone(),
        }
    }
}
