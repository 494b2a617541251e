//! Consul over HTTP: one shared `awc` client with a bounded connection pool (Consul allows
//! 200 connections per client), blocking queries, KV reads and `/v1/txn` writes. Submodules:
//! `kv` (KV entries), `txn` (transactions: op and byte packing, error classes), `health`
//! (watch and health payloads), `health_delta` (a large watch delivery decoded from what
//! changed since the last), `catalog` (catalog entries and the endpoints they stand for),
//! `backoff` (retrying against Consul).
pub mod backoff;
pub mod catalog;
pub mod health;
pub mod health_delta;
pub mod kv;
pub mod txn;

use serde::de::DeserializeOwned;
use std::time::Duration;

/// Errors of the Consul boundary.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConsulError {
    #[error("Consul unreachable at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("Consul answered {status} to {what}: {body}")]
    Status {
        status: u16,
        what: String,
        body: String,
    },
    #[error("Consul's answer to {what} could not be read: {reason}")]
    Decode { what: String, reason: String },
}

impl ConsulError {
    /// Worth retrying later (Consul down, no leader, overloaded)?
    pub fn is_transient(&self) -> bool {
        match self {
            ConsulError::Unreachable { .. } => true,
            ConsulError::Status { status, .. } => *status >= 500 || *status == 429,
            ConsulError::Decode { .. } => false,
        }
    }
}

/// Where Consul is and how to authenticate.
#[derive(Clone, Debug, Default)]
pub struct ConsulConfig {
    /// `host:port` or a URL (`http://127.0.0.1:8500`, `https://127.0.0.1:8501`).
    pub addr: String,
    pub token: Option<String>,
    /// PEM file of the CA that signed Consul's HTTPS certificate.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Builds the TLS client configuration trusting only the CA in `ca_file`.
pub fn tls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("CA file {}: {e}", ca_file.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("CA file {}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA file {}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "CA file {} holds no certificate",
            ca_file.display()
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl ConsulConfig {
    /// An address and token, with the CA file from `CONSUL_CACERT` when set (as Consul's own
    /// CLI does).
    pub fn with_env_ca(addr: &str, token: Option<&str>) -> ConsulConfig {
        ConsulConfig {
            addr: addr.to_string(),
            token: token.map(str::to_string),
            ca_file: std::env::var_os("CONSUL_CACERT")
                .filter(|v| !v.is_empty())
                .map(Into::into),
        }
    }

    pub fn base_url(&self) -> String {
        if self.addr.starts_with("http://") || self.addr.starts_with("https://") {
            self.addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", self.addr)
        }
    }
}

/// A Consul client for one actix arbiter (awc clients are not `Send`; make one per thread).
#[derive(Clone)]
pub struct Consul {
    base: String,
    token: Option<String>,
    http: awc::Client,
}

/// The metric label of a read: the API the path is under (health, kv, catalog, ...).
/// The `source` of a KV read: its top-level key (a fixed set, so the label stays bounded).
fn kv_source(path: &str) -> &'static str {
    let key = path
        .trim_start_matches("/v1/kv/")
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    match key {
        "bq" => "kv_bq",
        "eq" => "kv_eq",
        "leader" => "kv_leader",
        "bq-offsets" => "kv_bq_offsets",
        "epochs" => "kv_epochs",
        "processes" => "kv_processes",
        "states" => "kv_states",
        "timeout" => "kv_timeout",
        "m0conf" => "kv_m0conf",
        _ => "kv_other",
    }
}

fn source_of(path: &str) -> &'static str {
    let api = path
        .trim_start_matches("/v1/")
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    match api {
        "health" => "health",
        "kv" => kv_source(path),
        "catalog" => "catalog",
        "session" => "session",
        "agent" => "agent",
        "status" => "status",
        _ => "other",
    }
}

/// Most connections hax opens to its Consul agent at once.
pub const MAX_CONNECTIONS: usize = 32;

impl Consul {
    /// A client for `cfg`. An unreadable CA file is reported here (checked at start-up with
    /// `tls_config`, so this only logs).
    pub fn new(cfg: &ConsulConfig) -> Consul {
        let mut connector = awc::Connector::new()
            .limit(MAX_CONNECTIONS)
            .timeout(Duration::from_secs(5));
        if let Some(ca) = &cfg.ca_file {
            match tls_config(ca) {
                Ok(tls) => connector = connector.rustls_0_23(std::sync::Arc::new(tls)),
                Err(e) => log::error!("Consul client: {e}"),
            }
        }
        let http = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_secs(15))
            .finish();
        Consul {
            base: cfg.base_url(),
            token: cfg.token.clone(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(
        &self,
        method: awc::http::Method,
        path: &str,
        timeout: Duration,
    ) -> awc::ClientRequest {
        let mut r = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .timeout(timeout);
        if let Some(t) = &self.token {
            r = r.insert_header(("X-Consul-Token", t.as_str()));
        }
        r
    }

    /// GET returning the body and `X-Consul-Index`. With `index` it is a blocking query
    /// waiting up to `wait` for a change. The whole exchange (send and body) has a deadline:
    /// a connection to a paused or half-dead server must not hang a caller forever.
    pub async fn get_raw(
        &self,
        path: &str,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<(Option<Vec<u8>>, u64), ConsulError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (url, timeout) = match index {
            Some(i) if i > 0 => (
                format!("{path}{sep}index={i}&wait={}s", wait.as_secs().max(1)),
                wait + wait / 16 + Duration::from_secs(5),
            ),
            _ => (path.to_string(), Duration::from_secs(10)),
        };
        let exchange = async {
            let mut resp = self
                .request(awc::http::Method::GET, &url, timeout)
                .send()
                .await
                .map_err(|e| self.unreachable(e.to_string()))?;
            let index = resp
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .limit(64 * 1024 * 1024)
                .await
                .map_err(|e| self.unreachable(e.to_string()))?;
            Ok::<_, ConsulError>((status, index, body))
        };
        let (status, index, body) =
            tokio::time::timeout(timeout + Duration::from_secs(2), exchange)
                .await
                .map_err(|_| {
                    self.unreachable(format!(
                        "no complete answer to GET {path} within {timeout:?}"
                    ))
                })??;
        crate::metrics::consul_bytes(source_of(path), body.len());
        match status {
            200 => Ok((Some(body.to_vec()), index)),
            404 => Ok((None, index)),
            s => Err(ConsulError::Status {
                status: s,
                what: format!("GET {path}"),
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            }),
        }
    }

    fn unreachable(&self, reason: String) -> ConsulError {
        ConsulError::Unreachable {
            addr: self.base.clone(),
            reason,
        }
    }

    /// GET a JSON document (`None` for 404).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<(Option<T>, u64), ConsulError> {
        let (body, idx) = self.get_raw(path, index, wait).await?;
        match body {
            None => Ok((None, idx)),
            Some(b) => serde_json::from_slice(&b)
                .map(|v| (Some(v), idx))
                .map_err(|e| ConsulError::Decode {
                    what: format!("GET {path}"),
                    reason: e.to_string(),
                }),
        }
    }

    /// PUT a JSON body, returning the response body (with the same overall deadline).
    pub async fn put(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, ConsulError> {
        let timeout = Duration::from_secs(15);
        let exchange = async {
            let mut resp = self
                .request(awc::http::Method::PUT, path, timeout)
                .insert_header(("Content-Type", "application/json"))
                .send_body(body)
                .await
                .map_err(|e| self.unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            let b = resp
                .body()
                .limit(16 * 1024 * 1024)
                .await
                .map_err(|e| self.unreachable(e.to_string()))?;
            Ok::<_, ConsulError>((status, b))
        };
        let (status, b) = tokio::time::timeout(timeout + Duration::from_secs(2), exchange)
            .await
            .map_err(|_| {
                self.unreachable(format!(
                    "no complete answer to PUT {path} within {timeout:?}"
                ))
            })??;
        if status == 200 {
            Ok(b.to_vec())
        } else {
            Err(ConsulError::Status {
                status,
                what: format!("PUT {path}"),
                body: String::from_utf8_lossy(&b).chars().take(300).collect(),
            })
        }
    }
}

impl Consul {
    /// The node name of the agent this client talks to (`/v1/agent/self`).
    pub async fn agent_node_name(&self) -> Result<String, ConsulError> {
        #[derive(serde::Deserialize)]
        struct SelfCfg {
            #[serde(rename = "Config")]
            config: NodeCfg,
        }
        #[derive(serde::Deserialize)]
        struct NodeCfg {
            #[serde(rename = "NodeName")]
            node_name: String,
        }
        match self
            .get_json::<SelfCfg>("/v1/agent/self", None, Duration::ZERO)
            .await?
        {
            (Some(s), _) => Ok(s.config.node_name),
            (None, _) => Err(ConsulError::Status {
                status: 404,
                what: "GET /v1/agent/self".into(),
                body: String::new(),
            }),
        }
    }
}

/// Percent-encodes a query value (filters contain spaces, quotes and `==`).
pub fn encode_query(v: &str) -> String {
    let mut s = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// A quoted Consul filter `Field == "value"` (unquoted values break on dashes).
pub fn filter_eq(field: &str, value: &str) -> String {
    encode_query(&format!(
        "{field} == \"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}
