//! [`ConsulClient`]: small blocking helpers over one Consul agent's HTTP API (ureq 2), its
//! [`HttpResponse`] and [`KvPair`], `/v1/txn` operation builders and the encodings they use.
use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

/// Percent-encodes everything but RFC 3986 unreserved characters (for query values).
pub fn url_encode(s: &str) -> String {
    encode(s, b"-_.~")
}

/// Percent-encodes a KV key for a URL path (keeps '/').
pub fn encode_key(key: &str) -> String {
    encode(key, b"-_.~/")
}

fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn b64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("bad base64 {s:?}: {e}"))
}

/// A response of any status (transport failures are the `Err` of the requests).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{e} in {:?}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// X-Consul-Index
    pub fn consul_index(&self) -> Option<u64> {
        self.header("X-Consul-Index")?.parse().ok()
    }
    /// Self if 2xx, else an error naming `what`, the status and the body.
    pub fn expect_ok(self, what: &str) -> Result<HttpResponse, String> {
        if self.ok() {
            Ok(self)
        } else {
            Err(format!(
                "{what}: HTTP {} {}",
                self.status,
                self.text().trim()
            ))
        }
    }
}

/// One KV entry with its value decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: Option<String>,
}

impl KvPair {
    pub fn from_json(v: &Value) -> Result<KvPair, String> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Ok(KvPair {
            key: v
                .get("Key")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("no Key in {v}"))?
                .to_string(),
            value: match v.get("Value").and_then(Value::as_str) {
                Some(s) => b64_decode(s)?,
                None => Vec::new(),
            },
            flags: u("Flags"),
            create_index: u("CreateIndex"),
            modify_index: u("ModifyIndex"),
            lock_index: u("LockIndex"),
            session: v.get("Session").and_then(Value::as_str).map(str::to_string),
        })
    }
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// `/v1/txn` operation builders.
pub fn txn_kv_set(key: &str, value: impl AsRef<[u8]>) -> Value {
    json!({"KV": {"Verb": "set", "Key": key, "Value": b64_encode(value.as_ref())}})
}
pub fn txn_kv_cas(key: &str, value: impl AsRef<[u8]>, index: u64) -> Value {
    json!({"KV": {"Verb": "cas", "Key": key, "Value": b64_encode(value.as_ref()), "Index": index}})
}
pub fn txn_kv_get(key: &str) -> Value {
    json!({"KV": {"Verb": "get", "Key": key}})
}
pub fn txn_kv_delete(key: &str) -> Value {
    json!({"KV": {"Verb": "delete", "Key": key}})
}

/// Blocking client for one Consul agent's HTTP API. Methods take paths ("/v1/...").
#[derive(Clone)]
pub struct ConsulClient {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl ConsulClient {
    /// `base_url` like "http://127.0.0.1:8500"; 2 s connect and 15 s request timeouts.
    pub fn new(base_url: &str) -> ConsulClient {
        Self::with_timeout(base_url, Duration::from_secs(15))
    }

    pub fn with_timeout(base_url: &str, timeout: Duration) -> ConsulClient {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout(timeout)
            .max_idle_connections_per_host(8)
            .build();
        ConsulClient {
            base: base_url.trim_end_matches('/').to_string(),
            agent,
            token: None,
        }
    }

    /// The same client, sending `X-Consul-Token` with every request.
    pub fn with_token(mut self, token: &str) -> ConsulClient {
        self.token = Some(token.to_string());
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Any request; `Err` only when no HTTP response came back.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, String> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("X-Consul-Token", t);
        }
        let res = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("{method} {url}: {e}")),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let mut body = Vec::new();
        resp.into_reader()
            .read_to_end(&mut body)
            .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    pub fn get(&self, path: &str) -> Result<HttpResponse, String> {
        self.request("GET", path, None)
    }
    pub fn put(&self, path: &str, body: &[u8]) -> Result<HttpResponse, String> {
        self.request("PUT", path, Some(body))
    }
    pub fn put_json(&self, path: &str, body: &Value) -> Result<HttpResponse, String> {
        self.put(path, body.to_string().as_bytes())
    }
    pub fn delete(&self, path: &str) -> Result<HttpResponse, String> {
        self.request("DELETE", path, None)
    }

    /// Writes `key` (errors on non-2xx or a `false` answer).
    pub fn kv_put(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
        let r = self
            .put(&format!("/v1/kv/{}", encode_key(key)), value.as_ref())?
            .expect_ok("kv put")?;
        match r.text().trim() {
            "true" => Ok(()),
            other => Err(format!("kv put {key}: Consul answered {other}")),
        }
    }

    /// Check-and-set: Ok(true) if written, Ok(false) if `index` was not the key's ModifyIndex
    /// (0: only if the key does not exist).
    pub fn kv_cas(&self, key: &str, value: impl AsRef<[u8]>, index: u64) -> Result<bool, String> {
        let r = self
            .put(
                &format!("/v1/kv/{}?cas={index}", encode_key(key)),
                value.as_ref(),
            )?
            .expect_ok("kv cas")?;
        match r.text().trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("kv cas {key}: unexpected answer {other}")),
        }
    }

    /// The entry at `key` (value decoded), None if absent.
    pub fn kv_get_pair(&self, key: &str) -> Result<Option<KvPair>, String> {
        let r = self.get(&format!("/v1/kv/{}", encode_key(key)))?;
        if r.status == 404 {
            return Ok(None);
        }
        let v = r.expect_ok("kv get")?.json()?;
        let first = v
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| format!("kv get {key}: {v}"))?;
        KvPair::from_json(first).map(Some)
    }

    /// The decoded value at `key`, None if absent.
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.kv_get_pair(key)?.map(|p| p.value))
    }

    pub fn kv_get_string(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.kv_get_pair(key)?.map(|p| p.value_str()))
    }

    /// All entries under `prefix` (values decoded), sorted by key.
    pub fn kv_list(&self, prefix: &str) -> Result<Vec<KvPair>, String> {
        let r = self.get(&format!("/v1/kv/{}?recurse", encode_key(prefix)))?;
        if r.status == 404 {
            return Ok(Vec::new());
        }
        let v = r.expect_ok("kv list")?.json()?;
        v.as_array()
            .ok_or_else(|| format!("kv list: {v}"))?
            .iter()
            .map(KvPair::from_json)
            .collect()
    }

    pub fn kv_delete(&self, key: &str) -> Result<(), String> {
        self.delete(&format!("/v1/kv/{}", encode_key(key)))?
            .expect_ok("kv delete")
            .map(drop)
    }

    pub fn kv_delete_tree(&self, prefix: &str) -> Result<(), String> {
        self.delete(&format!("/v1/kv/{}?recurse", encode_key(prefix)))?
            .expect_ok("kv delete tree")
            .map(drop)
    }

    /// `PUT /v1/txn` with `ops`; the raw response (200, 409 on a failed op, 413 when too many).
    pub fn txn(&self, ops: &[Value]) -> Result<HttpResponse, String> {
        self.put_json("/v1/txn", &Value::Array(ops.to_vec()))
    }

    /// `PUT /v1/agent/service/register` with a service definition.
    pub fn register_service(&self, definition: &Value) -> Result<(), String> {
        self.put_json("/v1/agent/service/register", definition)?
            .expect_ok("service register")
            .map(drop)
    }

    pub fn deregister_service(&self, id: &str) -> Result<(), String> {
        self.put(
            &format!("/v1/agent/service/deregister/{}", encode_key(id)),
            b"",
        )?
        .expect_ok("service deregister")
        .map(drop)
    }

    /// Sets a TTL check: `state` is "pass", "warn" or "fail".
    pub fn check_ttl(&self, check_id: &str, state: &str, note: &str) -> Result<(), String> {
        self.put(
            &format!(
                "/v1/agent/check/{state}/{}?note={}",
                encode_key(check_id),
                url_encode(note)
            ),
            b"",
        )?
        .expect_ok("check update")
        .map(drop)
    }
    pub fn check_pass(&self, check_id: &str) -> Result<(), String> {
        self.check_ttl(check_id, "pass", "")
    }
    pub fn check_fail(&self, check_id: &str) -> Result<(), String> {
        self.check_ttl(check_id, "fail", "")
    }

    fn with_filter(path: String, filter: Option<&str>) -> String {
        match filter {
            Some(f) => format!("{path}?filter={}", url_encode(f)),
            None => path,
        }
    }

    /// `GET /v1/catalog/service/<name>[?filter=...]`, raw (a bad filter is a 4xx/5xx).
    pub fn catalog_service(
        &self,
        name: &str,
        filter: Option<&str>,
    ) -> Result<HttpResponse, String> {
        self.get(&Self::with_filter(
            format!("/v1/catalog/service/{}", encode_key(name)),
            filter,
        ))
    }

    /// `GET /v1/health/service/<name>[?filter=...]`, raw.
    pub fn health_service(&self, name: &str, filter: Option<&str>) -> Result<HttpResponse, String> {
        self.get(&Self::with_filter(
            format!("/v1/health/service/{}", encode_key(name)),
            filter,
        ))
    }

    /// `/v1/status/leader`: "127.0.0.1:<server port>", or "" while there is none.
    pub fn leader(&self) -> Result<String, String> {
        let v = self
            .get("/v1/status/leader")?
            .expect_ok("status leader")?
            .json()?;
        Ok(v.as_str().unwrap_or("").to_string())
    }

    /// `/v1/status/peers`: the raft voters.
    pub fn peers(&self) -> Result<Vec<String>, String> {
        let v = self
            .get("/v1/status/peers")?
            .expect_ok("status peers")?
            .json()?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}
