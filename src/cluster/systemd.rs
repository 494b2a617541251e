//! systemd units for one node of a cluster description: `hax bootstrap <description>
//! --systemd-dir DIR [--node NAME]`. The unit texts are the templates in `examples/systemd/`
//! (compiled in), with `@NAME@` placeholders filled from the node's plan.
//!
//! Files written into DIR, and where they go on the node:
//!
//! | file | install as |
//! |---|---|
//! | `hax.service` | `/etc/systemd/system/hax.service` (`Type=notify`, sandboxed) |
//! | `consul.service` | `/etc/systemd/system/consul.service` (the node's Consul agent) |
//! | `hax.env` | `/etc/default/hax` (hax's flags as environment variables) |
//! | `consul-watches.json` | `/etc/hax/consul-watches.json` (the agent configuration hax needs) |
//! | `watch-secret` | `/etc/hax/watch-secret` (the secret the watches send, hax checks) |
use super::agent::{watch_secret, write_private};
use super::plan::{agent_config_json, with_watch_secret, CheckPlan, Plan};
use std::fs;
use std::path::{Path, PathBuf};

const HAX_SERVICE: &str = include_str!("../../examples/systemd/hax.service.in");
const CONSUL_SERVICE: &str = include_str!("../../examples/systemd/consul.service.in");
const HAX_ENV: &str = include_str!("../../examples/systemd/hax.env.in");

/// Where the units expect the binaries when no path is given.
pub const DEFAULT_HAX_BIN: &str = "/usr/local/bin/hax";
pub const DEFAULT_CONSUL_BIN: &str = "/usr/local/bin/consul";

/// How long systemd waits for hax to stop, in seconds: hax's own bound on its shutdown
/// (`--shutdown-ms`, which the unit passes) plus 2 s, rounded up.
pub fn stop_timeout_s(shutdown_ms: u64) -> u64 {
    (shutdown_ms + 2000).div_ceil(1000)
}

/// One file to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitFile {
    pub name: &'static str,
    pub text: String,
    /// Readable by its owner only (it holds the watch secret).
    pub private: bool,
    /// Where it is installed on the node.
    pub install_as: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    #[error("the description has nodes {names}: say which with --node")]
    WhichNode { names: String },
    #[error("no node {node:?} in the description (its nodes: {names})")]
    NoSuchNode { node: String, names: String },
    #[error("{0}")]
    Io(String),
}

/// The node the units are for: `node`, or the only node of the plan.
fn pick_node<'a>(plan: &'a Plan, node: Option<&str>) -> Result<&'a str, UnitsError> {
    let names = || {
        plan.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match node {
        Some(n) => plan
            .node(n)
            .map(|n| n.name.as_str())
            .ok_or_else(|| UnitsError::NoSuchNode {
                node: n.to_string(),
                names: names(),
            }),
        None if plan.nodes.len() == 1 => Ok(&plan.nodes[0].name),
        None => Err(UnitsError::WhichNode { names: names() }),
    }
}

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("@{k}@"), v);
    }
    s
}

/// The files for node `node` (None: the plan's only node), the watches carrying `secret`.
pub fn render(
    plan: &Plan,
    node: Option<&str>,
    hax_bin: &Path,
    consul_bin: &Path,
    shutdown_ms: u64,
    secret: &str,
) -> Result<Vec<UnitFile>, UnitsError> {
    let name = pick_node(plan, node)?;
    let n = plan.node(name).expect("picked from the plan");
    let vars = [
        ("NODE", n.name.clone()),
        ("ADDRESS", n.address.clone()),
        ("CONSUL_HTTP_PORT", n.consul_http_port.to_string()),
        ("HAX_HTTP_PORT", n.hax_http_port.to_string()),
        (
            "HEALTH_FROM",
            match plan.health_from {
                crate::actors::health_monitor::HealthFrom::Node => "node",
                crate::actors::health_monitor::HealthFrom::Watches => "watches",
            }
            .to_string(),
        ),
        ("HAX_BIN", hax_bin.display().to_string()),
        ("CONSUL_BIN", consul_bin.display().to_string()),
        ("SHUTDOWN_MS", shutdown_ms.to_string()),
        ("STOP_TIMEOUT_S", stop_timeout_s(shutdown_ms).to_string()),
    ];
    let mut watches = agent_config_json(plan, name).expect("the plan's own node");
    with_watch_secret(&mut watches, secret);
    Ok(vec![
        UnitFile {
            name: "hax.service",
            text: fill(HAX_SERVICE, &vars),
            private: false,
            install_as: "/etc/systemd/system/hax.service",
        },
        UnitFile {
            name: "consul.service",
            text: fill(CONSUL_SERVICE, &vars),
            private: false,
            install_as: "/etc/systemd/system/consul.service",
        },
        UnitFile {
            name: "hax.env",
            text: fill(HAX_ENV, &vars),
            private: false,
            install_as: "/etc/default/hax",
        },
        UnitFile {
            name: "consul-watches.json",
            text: serde_json::to_string_pretty(&watches).expect("JSON") + "\n",
            private: true,
            install_as: "/etc/hax/consul-watches.json",
        },
        UnitFile {
            name: "watch-secret",
            text: format!("{secret}\n"),
            private: true,
            install_as: "/etc/hax/watch-secret",
        },
    ])
}

/// What [`write_units`] did.
#[derive(Debug)]
pub struct Written {
    pub node: String,
    pub files: Vec<(PathBuf, &'static str)>,
    /// Script checks of the node's services run another hax binary than the unit's.
    pub check_bins: Vec<String>,
}

/// Writes the files for the node into `dir` (created if needed). The watch secret of an
/// earlier run in `dir` is kept.
pub fn write_units(
    plan: &Plan,
    node: Option<&str>,
    dir: &Path,
    hax_bin: &Path,
    consul_bin: &Path,
    shutdown_ms: u64,
) -> Result<Written, UnitsError> {
    let name = pick_node(plan, node)?.to_string();
    fs::create_dir_all(dir)
        .map_err(|e| UnitsError::Io(format!("create {}: {e}", dir.display())))?;
    let secret = watch_secret(dir).map_err(|e| UnitsError::Io(e.to_string()))?;
    let files = render(plan, Some(&name), hax_bin, consul_bin, shutdown_ms, &secret)?;
    let mut written = Vec::new();
    for f in files {
        let path = dir.join(f.name);
        if f.private {
            write_private(&path, &f.text).map_err(|e| UnitsError::Io(e.to_string()))?;
        } else {
            fs::write(&path, &f.text)
                .map_err(|e| UnitsError::Io(format!("write {}: {e}", path.display())))?;
        }
        written.push((path, f.install_as));
    }
    let unit_bin = hax_bin.display().to_string();
    let mut check_bins: Vec<String> = plan
        .services
        .iter()
        .filter(|s| s.node == name)
        .filter_map(|s| match &s.check {
            CheckPlan::Script { args, .. } => args.first().cloned(),
            _ => None,
        })
        .filter(|b| *b != unit_bin)
        .collect();
    check_bins.sort();
    check_bins.dedup();
    Ok(Written {
        node: name,
        files: written,
        check_bins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{plan, Description};

    fn threenode() -> Plan {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/threenode.yaml");
        plan(&Description::load(&path).unwrap())
    }

    fn files(node: Option<&str>) -> Result<Vec<UnitFile>, UnitsError> {
        let mut p = threenode();
        p.health_from = crate::actors::health_monitor::HealthFrom::Watches;
        render(
            &p,
            node,
            Path::new("/opt/hax/bin/hax"),
            Path::new("/opt/consul/consul"),
            5000,
            "s3cret",
        )
    }

    fn file(fs: &[UnitFile], name: &str) -> String {
        fs.iter().find(|f| f.name == name).unwrap().text.clone()
    }

    #[test]
    fn every_placeholder_is_filled_with_the_nodes_values() {
        let fs = files(Some("node-2")).unwrap();
        for f in &fs {
            let left =
                f.text.split('@').skip(1).step_by(2).find(|w| {
                    !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                });
            assert_eq!(
                left, None,
                "a placeholder is left in {}:\n{}",
                f.name, f.text
            );
        }
        let hax = file(&fs, "hax.service");
        assert!(hax.contains(
            "ExecStart=/opt/hax/bin/hax --shutdown-ms 5000 --watch-secret-file %d/watch-secret"
        ));
        assert!(hax.contains("TimeoutStopSec=7\n"), "{hax}");
        assert!(hax.contains("Type=notify"));
        let consul = file(&fs, "consul.service");
        assert!(consul.contains("ExecStart=/opt/consul/consul agent -node=node-2 -bind=127.0.0.1 -client=127.0.0.1 -http-port=8510 "), "{consul}");
        let env = file(&fs, "hax.env");
        assert!(env.contains("HAX_NODE=node-2\n"));
        assert!(env.contains("CONSUL_HTTP_ADDR=127.0.0.1:8510\n"));
        assert!(env.contains("HAX_HTTP_PORT=8018\n"));
        assert!(env.contains("HAX_HEALTH_FROM=watches\n"));
        let w: serde_json::Value = serde_json::from_str(&file(&fs, "consul-watches.json")).unwrap();
        assert_eq!(w["enable_script_checks"], true);
        let watches = w["watches"].as_array().unwrap();
        assert_eq!(watches.len(), 2, "{w}");
        for x in watches {
            let h = &x["http_handler_config"];
            assert!(h["path"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:8018/watcher/service/"));
            assert_eq!(h["header"]["X-Hax-Secret"][0], "s3cret");
        }
        assert_eq!(file(&fs, "watch-secret"), "s3cret\n");
        assert!(fs.iter().filter(|f| f.private).count() == 2);
    }

    #[test]
    fn several_nodes_need_a_node_name() {
        assert!(matches!(files(None), Err(UnitsError::WhichNode { .. })));
        let e = files(Some("node-9")).unwrap_err().to_string();
        assert!(e.contains("node-1, node-2, node-3"), "{e}");
    }

    #[test]
    fn the_stop_timeout_is_a_little_above_the_shutdown_bound() {
        assert_eq!(stop_timeout_s(5000), 7);
        assert_eq!(stop_timeout_s(4500), 7);
        assert_eq!(stop_timeout_s(crate::config::DEFAULT_SHUTDOWN_MS), 7);
    }
}
