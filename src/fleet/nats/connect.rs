//! Reaching NATS: the settings (`NatsOptions`, whose `Debug` hides secrets), the
//! client's options from them (user and password, token, nkey seed, creds file, TLS
//! with a CA and a client certificate, checked before any connection), and connection
//! errors in words an operator can act on.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectOptions, ServerAddr};

use super::{Link, NatsError};

/// How long one connection attempt to one server may take (TCP, TLS, INFO/CONNECT).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client pings its server: a connection cut off without a reset (a
/// partition) is given up after two pings without answer, and another server tried.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a JetStream API request (stream or consumer info, create, update) may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach NATS, and the stream the fleet shares. Its `Debug` hides the
/// password and the token.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`); one is enough, async-nats
    /// learns the cluster's other servers from it.
    pub servers: Vec<String>,
    /// The JetStream stream's name.
    pub stream: String,
    /// The subject bans are published on (the stream's subject).
    pub subject: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// PEM roots to trust for the server's certificate; setting it requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The stream's `max_age`: at least the longest bantime, so that a host coming back
    /// finds every ban still in force. `Duration::ZERO` keeps messages without limit.
    pub max_age: Duration,
    /// The stream's replicas when it is created (1, or 3 on a 3-node cluster).
    pub replicas: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            servers: vec!["nats://127.0.0.1:4222".to_string()],
            stream: "GAOLER".to_string(),
            subject: "gaoler.bans".to_string(),
            user: None,
            password: None,
            token: None,
            nkey_seed_file: None,
            creds_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            max_age: Duration::ZERO,
            replicas: 1,
        }
    }
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<hidden>");
        f.debug_struct("NatsOptions")
            .field("servers", &self.servers)
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("max_age", &self.max_age)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// Connects to one of `opts.servers` as `name` (the connection's name, seen in the
/// server's monitoring). Tries each server once; retrying is the caller's job.
pub async fn connect(opts: &NatsOptions, name: &str) -> Result<Link, NatsError> {
    let servers = opts.servers.join(", ");
    let addrs = server_addrs(opts)?;
    let options = connect_options(opts, name).await?;
    let client = options
        .connect(addrs)
        .await
        .map_err(|e| NatsError::Connect {
            servers: servers.clone(),
            reason: connect_reason(&e),
        })?;
    let js = jetstream::ContextBuilder::new()
        .timeout(API_TIMEOUT)
        .build(client.clone());
    Ok(Link {
        client,
        js,
        stream: opts.stream.clone(),
        subject: opts.subject.clone(),
        max_age: opts.max_age,
        replicas: opts.replicas.max(1),
    })
}

fn server_addrs(opts: &NatsOptions) -> Result<Vec<ServerAddr>, NatsError> {
    if opts.servers.is_empty() {
        return Err(NatsError::Options("no NATS server given".to_string()));
    }
    opts.servers
        .iter()
        .map(|s| {
            s.parse::<ServerAddr>()
                .map_err(|e| NatsError::Options(format!("server {s:?}: {e}")))
        })
        .collect()
}

async fn connect_options(opts: &NatsOptions, name: &str) -> Result<ConnectOptions, NatsError> {
    let mut o = ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        .request_timeout(Some(API_TIMEOUT))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("fleet: connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("fleet: disconnected from NATS, reconnecting")
                }
                other => tracing::debug!("fleet: NATS event: {other}"),
            }
        });
    match (&opts.user, &opts.password) {
        (Some(user), Some(password)) => {
            o = o.user_and_password(user.clone(), password.clone());
        }
        (None, None) => {}
        _ => {
            return Err(NatsError::Options(
                "a NATS user needs a password, and a password a user".to_string(),
            ))
        }
    }
    if let Some(token) = &opts.token {
        o = o.token(token.clone());
    }
    if let Some(path) = &opts.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|e| {
            NatsError::Options(format!("cannot read nkey seed {}: {e}", path.display()))
        })?;
        o = o.nkey(seed.trim().to_string());
    }
    if let Some(path) = &opts.creds_file {
        o = o.credentials_file(path).await.map_err(|e| {
            NatsError::Options(format!(
                "cannot read NATS credentials {}: {e}",
                path.display()
            ))
        })?;
    }
    for path in [&opts.tls_ca, &opts.tls_cert, &opts.tls_key]
        .into_iter()
        .flatten()
    {
        if !path.is_file() {
            return Err(NatsError::Options(format!(
                "TLS file {} is missing",
                path.display()
            )));
        }
    }
    if let Some(ca) = &opts.tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => {
            o = o
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        (None, None) => {}
        _ => {
            return Err(NatsError::Options(
                "a TLS client certificate needs its key, and a key its certificate".to_string(),
            ))
        }
    }
    Ok(o)
}

fn connect_reason(e: &async_nats::ConnectError) -> String {
    use async_nats::ConnectErrorKind as K;
    let text = e.to_string();
    // rustls' refusals come as I/O errors: say TLS, not "is it running".
    let tls = text.contains("certificate") || text.contains("TLS") || text.contains("tls");
    let hint = match e.kind() {
        _ if tls => " (TLS: check the CA, the client certificate and key, and the name or address the server's certificate is for)",
        K::AuthorizationViolation | K::Authentication => {
            " (check the fleet's NATS user, password, token, nkey or credentials)"
        }
        K::Tls => " (check the TLS CA, certificate and key, and that the server speaks TLS)",
        K::TimedOut => " (is the server reachable? a firewall may drop the connection)",
        K::Io => " (is nats-server running and listening there?)",
        _ => "",
    };
    format!("{text}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let o = NatsOptions {
            password: Some("pw-secret".into()),
            token: Some("tok-secret".into()),
            ..Default::default()
        };
        let shown = format!("{o:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<hidden>"), "{shown}");
    }
}
