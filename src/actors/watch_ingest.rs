//! WatchIngest: the HTTP endpoint Consul's watch handlers POST to.
//!
//! `POST /`, `/watcher/...` or `/watch/...` takes a service-health payload (array of `{Node,
//! Service, Checks}`) or a checks payload and hands it to HaBroadcaster as a health snapshot
//! (`HealthReport`): its source is the path and what it covers (a service name, every check),
//! its index the delivery's `X-Consul-Index`, so that a stale re-send changes nothing and what
//! a newer snapshot no longer lists is gone. It never waits on Motr or Consul. Malformed JSON
//! → 400 with a JSON error body; a body over the limit → 413; service IDs that are not process
//! fids are ignored with a log line; a keyprefix body is accepted and ignored; any other path
//! → 404 naming the served ones. `GET /healthz` answers liveness; `GET /readyz` readiness (200
//! once Motr's HA interface is started and hax said `hax: ready`, 503 before and once the
//! shutdown began); `GET /metrics` the metrics.
use crate::consul::health::{Parsed, PayloadKind};
use crate::messages::HealthReport;
use crate::model::health::{Coverage, Snapshot};
use crate::notify::Readiness;
use actix::Recipient;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;

/// What the handlers share.
#[derive(Clone)]
pub struct IngestState {
    pub updates: Recipient<HealthReport>,
    /// Largest accepted body in bytes.
    pub limit: usize,
    /// The value `X-Hax-Secret` must carry (None: no secret required).
    pub secret: Option<String>,
    /// Each watch path's last large body, so that the next is decoded from what changed.
    pub last: std::sync::Arc<crate::consul::health_delta::LastBodies>,
}

/// Header carrying the shared secret of watch POSTs.
pub const SECRET_HEADER: &str = "X-Hax-Secret";

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Registers WatchIngest's routes on an actix-web app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::post().to(ingest))
        .route("/watcher/{tail:.*}", web::post().to(ingest))
        .route("/watch/{tail:.*}", web::post().to(ingest))
        .route("/", web::get().to(alive))
        .route("/healthz", web::get().to(alive))
        .route("/readyz", web::get().to(ready))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::route().to(unknown_path));
}

/// The Prometheus metrics (text exposition format).
async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(crate::metrics::render())
}

/// Anything else: a clear answer naming the paths hax serves (a hand-written agent config with
/// another path would otherwise fail silently on Consul's side).
async fn unknown_path(req: HttpRequest) -> HttpResponse {
    log::warn!(
        "WatchIngest: {} {} is not a path hax serves",
        req.method(),
        req.path()
    );
    error(
        actix_web::http::StatusCode::NOT_FOUND,
        format!(
            "no such path {}: watch handlers POST to /, /watcher/<name> or /watch/<name>; \
             GET /healthz, /readyz and /metrics",
            req.path()
        ),
    )
}

async fn alive() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 `{"ready": true, "process": <fid>, "endpoint": <HA endpoint>}` once hax serves; 503
/// `{"ready": false, "state": "starting" | "stopping"}` before and during the shutdown.
async fn ready() -> HttpResponse {
    match crate::notify::readiness() {
        Readiness::Ready { process, endpoint } => HttpResponse::Ok()
            .json(json!({"ready": true, "process": process.to_string(), "endpoint": endpoint})),
        Readiness::Starting => {
            HttpResponse::ServiceUnavailable().json(json!({"ready": false, "state": "starting"}))
        }
        Readiness::Stopping => {
            HttpResponse::ServiceUnavailable().json(json!({"ready": false, "state": "stopping"}))
        }
    }
}

fn error(status: actix_web::http::StatusCode, msg: String) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": msg}))
}

async fn ingest(req: HttpRequest, body: web::Payload, st: web::Data<IngestState>) -> HttpResponse {
    let resp = take_delivery(req, body, st).await;
    crate::metrics::watch_post(resp.status().as_u16());
    resp
}

async fn take_delivery(
    req: HttpRequest,
    mut body: web::Payload,
    st: web::Data<IngestState>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let received = std::time::Instant::now();
    if let Some(secret) = &st.secret {
        let given = req
            .headers()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if !constant_time_eq(given, secret.as_bytes()) {
            let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            log::warn!(
                "WatchIngest: {} from {peer} refused: missing or wrong {SECRET_HEADER}",
                req.path()
            );
            return error(
                StatusCode::UNAUTHORIZED,
                format!("missing or wrong {SECRET_HEADER} header"),
            );
        }
    }
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > st.limit) {
        log::warn!(
            "WatchIngest: {} refused: body of {} bytes over the {} byte limit",
            req.path(),
            declared.unwrap_or(0),
            st.limit
        );
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {} bytes", st.limit),
        );
    }
    let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(0).min(st.limit));
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return error(StatusCode::BAD_REQUEST, "body could not be read".into());
        };
        if buf.len() + chunk.len() > st.limit {
            log::warn!(
                "WatchIngest: {} refused: body over the {} byte limit",
                req.path(),
                st.limit
            );
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {} bytes", st.limit),
            );
        }
        buf.extend_from_slice(&chunk);
    }
    crate::metrics::consul_bytes("watch", buf.len());
    let index = req
        .headers()
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let path = req.path().to_string();
    match st.last.parse(&path, Vec::from(buf)) {
        Ok((p, how)) => {
            if let crate::consul::health_delta::How::Delta { decoded, kept } = how {
                log::debug!(
                    "WatchIngest: {path}: {decoded} entr(ies) decoded, {kept} kept from the last delivery"
                );
            }
            if !p.ignored.is_empty() && p.kind != PayloadKind::Keys {
                log::info!(
                    "WatchIngest: ignored {} service id(s) that are not process fids: {:?}",
                    p.ignored.len(),
                    p.ignored.iter().take(5).collect::<Vec<_>>()
                );
            }
            let (accepted, ignored) = (p.health.len(), p.ignored.len());
            if let Some(snapshot) = snapshot_of(req.path(), index, p) {
                let report = HealthReport { snapshot, received };
                if st.updates.send(report).await.is_err() {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "hax is stopping: the HA model is gone".into(),
                    );
                }
            }
            HttpResponse::Ok().json(json!({"accepted": accepted, "ignored": ignored}))
        }
        Err(e) => {
            log::warn!("WatchIngest: {} refused: {e}", req.path());
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// The service name a watch path names (`.../service/<name>`), if it does.
fn service_of_path(path: &str) -> Option<&str> {
    let (head, name) = path.trim_end_matches('/').rsplit_once('/')?;
    (head.ends_with("/service") && !name.is_empty()).then_some(name)
}

/// The health snapshot a delivery on `path` is (None: a keyprefix body, nothing about health).
/// Its source is the path and what it covers, so that indexes are compared per watch.
pub fn snapshot_of(path: &str, index: u64, p: Parsed) -> Option<Snapshot> {
    let coverage = match &p.kind {
        PayloadKind::Keys => return None,
        PayloadKind::Service(Some(name)) => Coverage::Service(name.clone()),
        PayloadKind::Service(None) => Coverage::Listed,
        PayloadKind::Checks => Coverage::All,
        PayloadKind::Empty => match service_of_path(path) {
            Some(name) => Coverage::Service(name.to_string()),
            None if path.trim_end_matches('/').ends_with("/checks") => Coverage::All,
            None => Coverage::Listed,
        },
    };
    let what = match &coverage {
        Coverage::Service(name) => format!("service {name}"),
        Coverage::All => "checks".to_string(),
        _ => "listed".to_string(),
    };
    Some(Snapshot {
        source: format!("POST {path} ({what})"),
        index,
        coverage,
        entries: p.health,
        nodes: p.nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::health::parse_payload;

    #[test]
    fn a_delivery_covers_its_service_or_every_check_and_an_empty_one_what_its_path_names() {
        let cov = |path: &str, body: &[u8]| {
            snapshot_of(path, 7, parse_payload(body).unwrap()).map(|s| s.coverage)
        };
        assert_eq!(
            cov("/watcher/service/ios", b"[]"),
            Some(Coverage::Service("ios".into()))
        );
        assert_eq!(cov("/watch/checks", b"null"), Some(Coverage::All));
        assert_eq!(cov("/", b"[]"), Some(Coverage::Listed));
        let kv = br#"[{"Key":"eq/1","Value":null}]"#;
        assert_eq!(cov("/watcher/eq", kv), None);
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
