//! Synthetic Consul `service` watch payloads shaped like the captured ones
//! (`tests/fixtures/consul-watch/*-service-ios-*.json`): an array of `{Node, Service, Checks}`
//! whose ServiceIDs are process fids, each entry with the node's serfHealth check and the
//! service's TTL check.
use hax_fid::Fid;
use serde_json::{json, Value};

/// The process fid of the i-th synthetic entry (keys from `base_key`).
pub fn entry_fid(base_key: u64, i: usize) -> Fid {
    Fid::typed(b'r', 1, base_key + i as u64)
}

fn definition() -> Value {
    json!({"Interval": "0s", "Timeout": "0s", "DeregisterCriticalServiceAfter": "0s", "HTTP": "",
           "Header": null, "Method": "", "Body": "", "TLSSkipVerify": false, "TCP": "", "GRPC": "",
           "GRPCUseTLS": false})
}

/// One entry as Consul's `/v1/health/service/<name>` gives it.
pub fn entry(node: &str, service: &str, fid: Fid, port: u16, status: &str, index: u64) -> Value {
    let id = fid.to_string();
    json!({
        "Node": {"ID": "cbe405ed-c190-576d-6a02-b84e08f6da70", "Node": node, "Address": "127.0.0.1",
                 "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": "127.0.0.1", "lan_ipv4": "127.0.0.1", "wan": "127.0.0.1", "wan_ipv4": "127.0.0.1"},
                 "Meta": {"consul-network-segment": ""}, "CreateIndex": 11, "ModifyIndex": 12},
        "Service": {"ID": id, "Service": service, "Tags": [], "Meta": null, "Port": port,
                    "Address": "inet:tcp:127.0.0.1@", "Weights": {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": false, "CreateIndex": 16, "ModifyIndex": 16,
                    "Proxy": {"MeshGateway": {}, "Expose": {}}, "Connect": {}},
        "Checks": [
            {"Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
             "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "",
             "ServiceTags": [], "Type": "", "Definition": definition(), "CreateIndex": 11, "ModifyIndex": 11},
            {"Node": node, "CheckID": format!("service:{id}"), "Name": format!("Service '{service}' check"),
             "Status": status, "Notes": "", "Output": "", "ServiceID": id, "ServiceName": service,
             "ServiceTags": [], "Type": "ttl", "Definition": definition(), "CreateIndex": 16, "ModifyIndex": index}
        ]
    })
}

/// A payload of `fids.len()` entries of service `service` on `node`; the entries whose fid is
/// in `critical` have a critical service check, the others pass.
pub fn health_payload(
    node: &str,
    service: &str,
    fids: &[Fid],
    critical: &[Fid],
    index: u64,
) -> Vec<u8> {
    let entries: Vec<Value> = fids
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let status = if critical.contains(f) {
                "critical"
            } else {
                "passing"
            };
            entry(
                node,
                service,
                *f,
                22000u16.wrapping_add(i as u16),
                status,
                index,
            )
        })
        .collect();
    serde_json::to_vec(&Value::Array(entries)).expect("JSON encodes")
}

/// `n` passing entries with fids from `base_key` (the `--synthetic-entries` payload).
pub fn synthetic(n: usize, node: &str, base_key: u64) -> Vec<u8> {
    let fids: Vec<Fid> = (0..n).map(|i| entry_fid(base_key, i)).collect();
    health_payload(node, "ios", &fids, &[], 100)
}
