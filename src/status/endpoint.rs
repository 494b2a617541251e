//! `GET /status` on hax's HTTP port: what this hax knows and last told its Motr processes
//! (read by `hax status`). JSON: `node`, `process`, `endpoint` (None until hax knows who it
//! is), `model_ready`, `consul_up`, `rc_leader`, and `states`: for every process and node of
//! the configuration tree, the HA state last broadcast or answered (null: nothing said yet).
use crate::actors::ha_broadcaster::SharedModel;
use crate::fid::Fid;
use crate::view::SharedView;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// What the handler reads.
#[derive(Clone)]
pub struct StatusState {
    pub view: SharedView,
    pub model: Arc<SharedModel>,
}

/// Registers `GET /status`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/status", web::get().to(serve));
}

/// The JSON document (also used by tests without HTTP).
pub fn document(st: &StatusState) -> Value {
    let (identity, leader, consul_up, fids) = {
        let v = st.view.read().unwrap_or_else(|e| e.into_inner());
        let fids: Vec<Fid> = v
            .config
            .processes
            .keys()
            .chain(v.config.nodes.keys())
            .copied()
            .collect();
        (v.identity.clone(), v.leader_node.clone(), v.consul_up, fids)
    };
    let states: Map<String, Value> = st
        .model
        .last_said(&fids)
        .into_iter()
        .map(|(f, s)| (f.to_string(), s.map_or(Value::Null, |s| json!(s.name()))))
        .collect();
    json!({
        "node": identity.as_ref().map(|i| i.node.clone()),
        "process": identity.as_ref().map(|i| i.process.to_string()),
        "endpoint": identity.as_ref().map(|i| i.endpoint.clone()),
        "model_ready": st.model.is_ready(),
        "consul_up": consul_up,
        "rc_leader": leader,
        "states": states,
    })
}

async fn serve(st: web::Data<StatusState>) -> HttpResponse {
    HttpResponse::Ok().json(document(&st))
}
