//! Cluster bootstrap: from a YAML cluster description (`description`) to a plan of fids, KV
//! entries, service registrations and watch configuration (`plan`, pure), written into Consul
//! idempotently (`apply`), with a local one-server agent for single-node use (`agent`) and
//! `get-entrypoint` (`entrypoint`). `cmd_bootstrap` / `cmd_get_entrypoint` are the commands of
//! the `hax` binary. The format is described in `docs/cluster-description.md`.
pub mod agent;
pub mod apply;
pub mod description;
pub mod entrypoint;
pub mod plan;

pub use agent::{start_local_agent, AgentError, LocalAgent};
pub use apply::{bootstrap, BootstrapError, BootstrapReport, Diff, Outcome};
pub use description::{CheckKind, DescError, Description, ProcessKind};
pub use entrypoint::{get_entrypoint, EntrypointError};
pub use plan::{agent_config_json, plan, Plan};

use std::path::{Path, PathBuf};

/// Exit codes of the commands.
pub mod exit {
    pub const OK: i32 = 0;
    /// Consul holds a different cluster and `--apply` was not given (or: no entrypoint yet).
    pub const REFUSED: i32 = 1;
    /// The description is invalid.
    pub const INVALID: i32 = 64;
    /// Consul (or a node's agent) is unreachable, or the local agent did not start.
    pub const UNAVAILABLE: i32 = 69;
    /// Consul refused a request (ACL, script checks disabled, wrong agent for a node, ...).
    pub const FAILED: i32 = 70;
}

/// Fills in the running binary as the script checks' `hax_bin` when it is a hax binary and
/// the description names none.
fn default_hax_bin(d: &mut Description) {
    let Some(exe) = std::env::current_exe().ok().filter(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "hax" || n.starts_with("hax-") || n.starts_with("hax."))
    }) else {
        return;
    };
    let exe = exe.display().to_string();
    let checks =
        std::iter::once(&mut d.check).chain(d.nodes.iter_mut().filter_map(|n| n.check.as_mut()));
    for c in checks.filter(|c| c.kind == CheckKind::Script && c.hax_bin.is_none()) {
        c.hax_bin = Some(exe.clone());
    }
}

/// The consul binary for a local agent: `$HAX_CONSUL_BIN` (the path `scripts/install-consul`
/// prints), else `consul` on the PATH.
fn consul_bin() -> PathBuf {
    std::env::var_os("HAX_CONSUL_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "consul".into())
}

/// `hax bootstrap <description> [--apply] [--local-agent-dir <dir>]`: writes the cluster into
/// Consul at `consul` (or into a local agent started first in `local_agent_dir`) and prints a
/// report. Exit codes: see [`exit`].
pub fn cmd_bootstrap(
    description: &Path,
    consul: &str,
    token: Option<&str>,
    apply: bool,
    local_agent_dir: Option<&Path>,
) -> i32 {
    let mut d = match Description::load(description) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bootstrap: {e}");
            return exit::INVALID;
        }
    };
    default_hax_bin(&mut d);
    let plan = plan(&d);
    let mut url = consul.to_string();
    if let Some(dir) = local_agent_dir {
        let bin = consul_bin();
        match start_local_agent(&plan, dir, &bin) {
            Ok(a) => {
                let pid = a.pid.map_or("unknown".to_string(), |p| p.to_string());
                let how = if a.started {
                    "started"
                } else {
                    "already running"
                };
                println!(
                    "bootstrap: local Consul agent of node {} {how} (pid {pid}) at {}",
                    a.node, a.http_url
                );
                println!(
                    "  configuration {}, log {}",
                    a.config.display(),
                    a.log.display()
                );
                println!(
                    "  watches send X-Hax-Secret: start hax with --watch-secret-file {}",
                    agent::watch_secret_path(dir).display()
                );
                url = a.http_url;
            }
            Err(e @ AgentError::NotSingleNode(_)) => {
                eprintln!("bootstrap: {}: {e}", description.display());
                return exit::INVALID;
            }
            Err(e) => {
                eprintln!(
                    "bootstrap: the local Consul agent ({}) did not start: {e}",
                    bin.display()
                );
                return exit::UNAVAILABLE;
            }
        }
    }
    match actix::System::new().block_on(bootstrap(&plan, &url, token, apply)) {
        Ok(report) => {
            print!("{}", report.render());
            if report.outcome == Outcome::Refused {
                exit::REFUSED
            } else {
                exit::OK
            }
        }
        Err(e) => {
            eprintln!("bootstrap: {e}");
            if e.is_unreachable() {
                exit::UNAVAILABLE
            } else {
                exit::FAILED
            }
        }
    }
}

/// `hax get-entrypoint`: prints the entrypoint hax would give now as YAML (exit 0), or why
/// there is none yet (exit 1).
pub fn cmd_get_entrypoint(consul: &str, token: Option<&str>) -> i32 {
    match actix::System::new().block_on(get_entrypoint(consul, token)) {
        Ok(yaml) => {
            print!("{yaml}");
            exit::OK
        }
        Err(e @ EntrypointError::NotYet(_)) => {
            eprintln!("get-entrypoint: {e}");
            exit::REFUSED
        }
        Err(EntrypointError::Consul(e)) => {
            eprintln!("get-entrypoint: {e}");
            if matches!(e, crate::consul::ConsulError::Unreachable { .. }) {
                exit::UNAVAILABLE
            } else {
                exit::FAILED
            }
        }
    }
}
