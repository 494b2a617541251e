//! The cluster description: a YAML file naming the nodes (Consul node names and loopback
//! addresses), each node's hax and Motr processes, and the kind of health check Consul runs.
//! See `docs/cluster-description.md`. Parsing refuses unknown keys; validation reports every
//! problem at once, each naming the offending field (`nodes[0].processes[1].endpoint_port`).
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

/// Why a description was refused.
#[derive(Debug, thiserror::Error)]
pub enum DescError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    /// YAML syntax, an unknown key, a missing field or a wrong type (serde_yaml's message
    /// names the field and its line and column).
    #[error("{0}")]
    Syntax(String),
    /// The description parsed but makes no sense; one line per problem.
    #[error("invalid cluster description:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl DescError {
    /// The same error with the file name in front of each message.
    fn in_file(self, path: &Path) -> DescError {
        let p = path.display();
        match self {
            DescError::Syntax(m) => DescError::Syntax(format!("{p}: {m}")),
            DescError::Invalid(v) => {
                DescError::Invalid(v.into_iter().map(|m| format!("{p}: {m}")).collect())
            }
            io => io,
        }
    }
}

/// The whole description.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Description {
    /// The health check of every registered service (a node may override it).
    #[serde(default)]
    pub check: CheckSpec,
    /// Where every hax learns Consul health from (`hax --health-from`): `node` (default: no
    /// agent watches, O(N) bytes per failure) or `watches` (a `service` watch per Motr service
    /// name on every agent, the original design, O(N²)).
    #[serde(default)]
    pub health_from: crate::actors::health_monitor::HealthFrom,
    pub nodes: Vec<NodeSpec>,
}

/// One node: a Consul agent, a hax and the Motr processes running there.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The Consul node name (the agent's `-node`).
    pub name: String,
    /// The node's address; only loopback (127.0.0.0/8) addresses are allowed in this project.
    pub address: String,
    /// HTTP port of this node's Consul agent.
    #[serde(default = "default_consul_http_port")]
    pub consul_http_port: u16,
    pub hax: HaxSpec,
    #[serde(default)]
    pub processes: Vec<ProcessSpec>,
    /// Overrides the top-level `check` for this node's services.
    #[serde(default)]
    pub check: Option<CheckSpec>,
}

/// This node's hax.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HaxSpec {
    /// Port of hax's HTTP endpoint receiving Consul's watch deliveries (`--http-port`).
    pub http_port: u16,
    /// Port of hax's Motr endpoint (`inet:tcp:<address>@<port>`).
    pub endpoint_port: u16,
}

/// One Motr process.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub kind: ProcessKind,
    /// Unique on its node.
    pub name: String,
    pub endpoint_port: u16,
    /// IO servers: the drives their IO service stores on (device paths), one sdev each.
    #[serde(default)]
    pub drives: Vec<String>,
    /// The process runs a DTM0 service (it then reports DTM_RECOVERED after STARTED).
    #[serde(default)]
    pub dtm0: bool,
}

/// The kinds of Motr processes a description may name.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ProcessKind {
    /// A confd server (m0d with a `confd` and an `rms` service).
    Confd,
    /// An IO server (m0d with an `ios` and an `rms` service).
    Ios,
    /// A Motr client (an `rms` service).
    Client,
}

impl ProcessKind {
    /// The Consul service name its processes are registered under.
    pub fn service_name(&self) -> &'static str {
        match self {
            ProcessKind::Confd => "confd",
            ProcessKind::Ios => "ios",
            ProcessKind::Client => "client",
        }
    }
}

/// The health check Consul runs for each registered service.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(default)]
    pub kind: CheckKind,
    /// `script` only: how often Consul runs `hax check <fid>` (default `2s`).
    #[serde(default)]
    pub interval: Option<String>,
    /// `script` only: the hax binary the agent runs (default: `hax`, found on the agent's PATH;
    /// the `hax bootstrap` command fills in its own path).
    #[serde(default)]
    pub hax_bin: Option<String>,
    /// `ttl` only: the check's TTL (default `3600s`).
    #[serde(default)]
    pub ttl: Option<String>,
    /// `ttl` only: the status at registration, `critical` (default) or `passing`.
    #[serde(default)]
    pub initial_status: Option<InitialStatus>,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            kind: CheckKind::Script,
            interval: None,
            hax_bin: None,
            ttl: None,
            initial_status: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// Consul runs `<hax_bin> --consul <agent> check <fid>` every `interval`.
    #[default]
    Script,
    /// Somebody else reports the status through `/v1/agent/check/{pass,fail}/service:<fid>`.
    Ttl,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitialStatus {
    #[default]
    Critical,
    Passing,
}

impl InitialStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            InitialStatus::Critical => "critical",
            InitialStatus::Passing => "passing",
        }
    }
}

pub const DEFAULT_CONSUL_HTTP_PORT: u16 = 8500;
pub const DEFAULT_SCRIPT_INTERVAL: &str = "2s";
pub const DEFAULT_TTL: &str = "3600s";

fn default_consul_http_port() -> u16 {
    DEFAULT_CONSUL_HTTP_PORT
}

impl Description {
    /// Reads, parses and validates a description file.
    pub fn load(path: impl AsRef<Path>) -> Result<Description, DescError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| DescError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Description::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Parses and validates a description.
    pub fn parse(text: &str) -> Result<Description, DescError> {
        let d: Description =
            serde_yaml::from_str(text).map_err(|e| DescError::Syntax(e.to_string()))?;
        d.validate()?;
        Ok(d)
    }

    /// The check that applies to node `i`.
    pub fn check_of(&self, node: usize) -> &CheckSpec {
        self.nodes[node].check.as_ref().unwrap_or(&self.check)
    }

    /// Every problem of the description, each naming its field.
    pub fn validate(&self) -> Result<(), DescError> {
        let mut bad = Vec::new();
        if self.nodes.is_empty() {
            bad.push("nodes: at least one node is required".to_string());
        }
        check_check("check", &self.check, &mut bad);
        let mut node_names: BTreeMap<&str, usize> = BTreeMap::new();
        // (address, port) -> the field that uses it
        let mut ports: BTreeMap<(Ipv4Addr, u16), String> = BTreeMap::new();
        let mut confds = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            let at = format!("nodes[{i}]");
            if let Err(why) = check_name(&n.name) {
                bad.push(format!("{at}.name: {why}"));
            } else if let Some(j) = node_names.insert(&n.name, i) {
                bad.push(format!(
                    "{at}.name: {:?} is already the name of nodes[{j}]",
                    n.name
                ));
            }
            let at = format!("{at} ({})", n.name);
            let addr = match check_address(&n.address) {
                Ok(a) => Some(a),
                Err(why) => {
                    bad.push(format!("{at}.address: {why}"));
                    None
                }
            };
            if let Some(c) = &n.check {
                check_check(&format!("{at}.check"), c, &mut bad);
            }
            let mut use_port = |field: String, port: u16, bad: &mut Vec<String>| {
                if port == 0 {
                    bad.push(format!(
                        "{field}: port 0 is not allowed (give a fixed port)"
                    ));
                    return;
                }
                let Some(a) = addr else { return };
                if let Some(first) = ports.get(&(a, port)) {
                    bad.push(format!(
                        "{field}: port {port} on {a} is already used by {first}"
                    ));
                } else {
                    ports.insert((a, port), field);
                }
            };
            use_port(
                format!("{at}.consul_http_port"),
                n.consul_http_port,
                &mut bad,
            );
            use_port(format!("{at}.hax.http_port"), n.hax.http_port, &mut bad);
            use_port(
                format!("{at}.hax.endpoint_port"),
                n.hax.endpoint_port,
                &mut bad,
            );
            let mut proc_names: BTreeMap<&str, usize> = BTreeMap::new();
            for (k, p) in n.processes.iter().enumerate() {
                let pat = format!("{at}.processes[{k}]");
                if let Err(why) = check_name(&p.name) {
                    bad.push(format!("{pat}.name: {why}"));
                } else if p.name == "hax" {
                    bad.push(format!(
                        "{pat}.name: \"hax\" is reserved for the node's hax process"
                    ));
                } else if let Some(j) = proc_names.insert(&p.name, k) {
                    bad.push(format!(
                        "{pat}.name: {:?} is already the name of {at}.processes[{j}]",
                        p.name
                    ));
                }
                use_port(
                    format!("{pat} ({}).endpoint_port", p.name),
                    p.endpoint_port,
                    &mut bad,
                );
                if p.kind == ProcessKind::Confd {
                    confds += 1;
                }
                if !p.drives.is_empty() && p.kind != ProcessKind::Ios {
                    bad.push(format!(
                        "{pat} ({}).drives: only IO servers (kind ios) have drives",
                        p.name
                    ));
                }
                let mut paths = BTreeSet::new();
                for (d, path) in p.drives.iter().enumerate() {
                    if path.is_empty() || path.contains(char::is_whitespace) {
                        bad.push(format!(
                            "{pat} ({}).drives[{d}]: {path:?} is not a device path",
                            p.name
                        ));
                    } else if !paths.insert(path) {
                        bad.push(format!(
                            "{pat} ({}).drives[{d}]: {path} is listed twice",
                            p.name
                        ));
                    }
                }
                if p.dtm0 && p.kind == ProcessKind::Confd {
                    bad.push(format!(
                        "{pat} ({}).dtm0: only IO servers and clients run a DTM0 service",
                        p.name
                    ));
                }
            }
        }
        if !self.nodes.is_empty() && confds == 0 {
            bad.push(
                "nodes[*].processes: no process of kind confd anywhere; at least one confd server is required"
                    .to_string(),
            );
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(DescError::Invalid(bad))
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.'))
    {
        return Err(format!(
            "{name:?} contains {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

fn check_address(address: &str) -> Result<Ipv4Addr, String> {
    let a: Ipv4Addr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an IPv4 address (write it as 127.x.y.z)"))?;
    if !a.is_loopback() {
        return Err(format!(
            "{address} is not a loopback address: only 127.0.0.0/8 addresses are allowed in this project"
        ));
    }
    Ok(a)
}

/// A Go duration Consul accepts, restricted to `<digits><unit>` with unit ms, s, m or h.
pub fn check_duration(d: &str) -> Result<(), String> {
    let digits = d.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &d[digits.len()..];
    match (digits.parse::<u64>(), unit) {
        (Ok(0), _) => Err(format!("{d:?} must be longer than zero")),
        (Ok(_), "ms" | "s" | "m" | "h") => Ok(()),
        _ => Err(format!("{d:?} is not a duration like 2s, 500ms, 1m or 1h")),
    }
}

fn check_check(at: &str, c: &CheckSpec, bad: &mut Vec<String>) {
    let wrong_kind =
        |field: &str, kind: &str| format!("{at}.{field}: only allowed with kind {kind}");
    match c.kind {
        CheckKind::Script => {
            if c.ttl.is_some() {
                bad.push(wrong_kind("ttl", "ttl"));
            }
            if c.initial_status.is_some() {
                bad.push(wrong_kind("initial_status", "ttl"));
            }
            if let Some(Err(why)) = c.interval.as_deref().map(check_duration) {
                bad.push(format!("{at}.interval: {why}"));
            }
            if c.hax_bin.as_deref().is_some_and(|b| b.trim().is_empty()) {
                bad.push(format!("{at}.hax_bin: must not be empty"));
            }
        }
        CheckKind::Ttl => {
            if c.interval.is_some() {
                bad.push(wrong_kind("interval", "script"));
            }
            if c.hax_bin.is_some() {
                bad.push(wrong_kind("hax_bin", "script"));
            }
            if let Some(Err(why)) = c.ttl.as_deref().map(check_duration) {
                bad.push(format!("{at}.ttl: {why}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
nodes:
  - name: node-1
    address: 127.0.0.1
    hax: { http_port: 8008, endpoint_port: 22001 }
    processes:
      - { kind: confd, name: confd, endpoint_port: 22002 }
      - { kind: ios, name: ios-1, endpoint_port: 22003 }
";

    /// The problems of `GOOD` with `from` replaced by `to`.
    fn problems(from: &str, to: &str) -> String {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "{from:?} not found");
        match Description::parse(&text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_description_parses_with_defaults() {
        let d = Description::parse(GOOD).unwrap();
        assert_eq!(d.nodes[0].consul_http_port, 8500);
        assert_eq!(d.check.kind, CheckKind::Script);
        assert_eq!(d.nodes[0].processes[1].kind, ProcessKind::Ios);
    }

    #[test]
    fn both_examples_are_valid() {
        for f in ["singlenode.yaml", "threenode.yaml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(f);
            Description::load(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    #[test]
    fn an_unknown_key_is_refused_naming_it_and_its_line() {
        let e = problems(
            "endpoint_port: 22003",
            "endpoint_port: 22003, disk: /dev/sdb",
        );
        assert!(
            e.contains("unknown field `disk`") && e.contains("line 8"),
            "{e}"
        );
        let e = problems("nodes:", "flavour: big\nnodes:");
        assert!(
            e.contains("unknown field `flavour`") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_process_kind_is_refused_listing_the_kinds() {
        let e = problems("kind: ios", "kind: iosrv");
        assert!(
            e.contains("iosrv") && e.contains("confd") && e.contains("line 8"),
            "{e}"
        );
    }

    #[test]
    fn a_port_used_twice_on_the_same_address_is_refused_naming_both_fields() {
        let e = problems("endpoint_port: 22003", "endpoint_port: 22002");
        assert!(
            e.contains("nodes[0] (node-1).processes[1] (ios-1).endpoint_port: port 22002"),
            "{e}"
        );
        assert!(
            e.contains("already used by nodes[0] (node-1).processes[0] (confd).endpoint_port"),
            "{e}"
        );
        let e = problems("http_port: 8008", "http_port: 22001");
        assert!(
            e.contains("hax.endpoint_port: port 22001") && e.contains("hax.http_port"),
            "{e}"
        );
    }

    #[test]
    fn ports_across_nodes_clash_only_on_the_same_address() {
        let second = |addr: &str| {
            format!(
                "{GOOD}  - name: node-2\n    address: {addr}\n    consul_http_port: 8501\n    \
                 hax: {{ http_port: 8009, endpoint_port: 22002 }}\n"
            )
        };
        let e = Description::parse(&second("127.0.0.1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "nodes[1] (node-2).hax.endpoint_port: port 22002 on 127.0.0.1 is already used"
            ),
            "{e}"
        );
        Description::parse(&second("127.0.0.2")).unwrap();
    }

    #[test]
    fn port_zero_is_refused() {
        let e = problems("endpoint_port: 22003", "endpoint_port: 0");
        assert!(
            e.contains("processes[1] (ios-1).endpoint_port: port 0 is not allowed"),
            "{e}"
        );
    }

    #[test]
    fn a_port_out_of_range_is_a_syntax_error_with_its_line() {
        let e = problems("endpoint_port: 22003", "endpoint_port: 70000");
        assert!(e.contains("70000") && e.contains("line 8"), "{e}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let e = problems("name: ios-1", "name: confd");
        assert!(e.contains("processes[1].name: \"confd\" is already the name of nodes[0] (node-1).processes[0]"), "{e}");
        let two = format!("{GOOD}  - name: node-1\n    address: 127.0.0.2\n    hax: {{ http_port: 1, endpoint_port: 2 }}\n");
        let e = Description::parse(&two).unwrap_err().to_string();
        assert!(
            e.contains("nodes[1].name: \"node-1\" is already the name of nodes[0]"),
            "{e}"
        );
        let e = problems("name: ios-1", "name: hax");
        assert!(e.contains("reserved"), "{e}");
        let e = problems("name: node-1", "name: \"node 1\"");
        assert!(e.contains("nodes[0].name") && e.contains("' '"), "{e}");
    }

    #[test]
    fn a_cluster_without_confd_is_refused() {
        let e = problems("kind: confd", "kind: ios");
        assert!(e.contains("no process of kind confd"), "{e}");
    }

    #[test]
    fn no_nodes_is_refused() {
        let e = Description::parse("nodes: []").unwrap_err().to_string();
        assert!(e.contains("nodes: at least one node is required"), "{e}");
        let e = Description::parse("check: { kind: ttl }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `nodes`"), "{e}");
    }

    #[test]
    fn only_loopback_addresses_are_allowed() {
        let e = problems("address: 127.0.0.1", "address: 10.0.0.7");
        assert!(
            e.contains("nodes[0] (node-1).address: 10.0.0.7 is not a loopback address"),
            "{e}"
        );
        let e = problems("address: 127.0.0.1", "address: localhost");
        assert!(e.contains("\"localhost\" is not an IPv4 address"), "{e}");
    }

    #[test]
    fn check_options_must_fit_the_kind() {
        let e = problems("nodes:", "check: { kind: ttl, interval: 2s }\nnodes:");
        assert!(
            e.contains("check.interval: only allowed with kind script"),
            "{e}"
        );
        let e = problems("nodes:", "check: { kind: script, interval: soon }\nnodes:");
        assert!(
            e.contains("check.interval: \"soon\" is not a duration"),
            "{e}"
        );
        let e = problems(
            "    processes:",
            "    check: { kind: ttl, ttl: 0s }\n    processes:",
        );
        assert!(
            e.contains("nodes[0] (node-1).check.ttl: \"0s\" must be longer than zero"),
            "{e}"
        );
        let d = Description::parse(&GOOD.replacen(
            "nodes:",
            "check: { kind: ttl, initial_status: passing }\nnodes:",
            1,
        ))
        .unwrap();
        assert_eq!(d.check_of(0).initial_status, Some(InitialStatus::Passing));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = GOOD
            .replacen("127.0.0.1", "192.168.1.1", 1)
            .replacen("22003", "0", 1);
        let e = Description::parse(&text).unwrap_err();
        match e {
            DescError::Invalid(v) => assert_eq!(v.len(), 2, "{v:?}"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn load_names_the_file() {
        let e = Description::load("/nonexistent/cluster.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/cluster.yaml"), "{e}");
    }
}
