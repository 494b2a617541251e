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
pub mod systemd;

pub use agent::{start_local_agent, AgentError, LocalAgent};
pub use apply::{bootstrap, BootstrapError, BootstrapReport, Diff, Outcome};
pub use description::{CheckKind, DescError, Description, ProcessKind};
pub use entrypoint::{get_entrypoint, EntrypointError};
pub use plan::{agent_config_json, plan, Plan};

use std::ffi::OsString;
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

/// The Consul versions `scripts/install-consul` builds (its `CANDIDATES`), in its order.
const INSTALLED_CONSUL_VERSIONS: [&str; 2] = ["1.16.4", "1.16.3"];

/// The consul binary for a local agent: `$HAX_CONSUL_BIN`, else the binary
/// `scripts/install-consul` cached (`$CONSUL_CACHE`, default `~/.cache/hax`, then
/// `consul-v<version>/consul`), else `consul` on the PATH; else an error saying how to get one.
pub fn consul_bin() -> Result<PathBuf, String> {
    find_consul(|name| std::env::var_os(name))
}

/// [`consul_bin`] with the environment given.
fn find_consul(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, String> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(p) = var("HAX_CONSUL_BIN").map(PathBuf::from) {
        if p.is_file() {
            return Ok(p);
        }
        return Err(format!(
            "HAX_CONSUL_BIN={} is not a file (scripts/install-consul prints the path to use)",
            p.display()
        ));
    }
    let cache = var("CONSUL_CACHE")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/hax")));
    let cached = cache.into_iter().flat_map(|c| {
        INSTALLED_CONSUL_VERSIONS
            .iter()
            .map(move |v| c.join(format!("consul-v{v}/consul")))
    });
    let on_path = var("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("consul"));
    cached.chain(on_path).find(|p| p.is_file()).ok_or_else(|| {
        "no consul binary: set HAX_CONSUL_BIN to one, or run scripts/install-consul (it builds \
         Consul once, caches it where hax finds it and prints its path), or put consul on the \
         PATH"
            .to_string()
    })
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
        let bin = match consul_bin() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("bootstrap: cannot start a local Consul agent: {e}");
                return exit::UNAVAILABLE;
            }
        };
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

/// `hax bootstrap <description> --systemd-dir <dir> [--node <name>]`: writes the systemd
/// units of one node into `dir` (see [`systemd`]) and prints where each file goes. Writes
/// nothing into Consul. Exit codes: 64 for a bad description or node, 70 when a file cannot
/// be written.
pub fn cmd_systemd_units(
    description: &Path,
    dir: &Path,
    node: Option<&str>,
    hax_bin: &Path,
    consul_bin: &Path,
    shutdown_ms: u64,
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
    let w = match systemd::write_units(&plan, node, dir, hax_bin, consul_bin, shutdown_ms) {
        Ok(w) => w,
        Err(
            e @ (systemd::UnitsError::WhichNode { .. } | systemd::UnitsError::NoSuchNode { .. }),
        ) => {
            eprintln!("bootstrap: {}: {e}", description.display());
            return exit::INVALID;
        }
        Err(e) => {
            eprintln!("bootstrap: {e}");
            return exit::FAILED;
        }
    };
    println!(
        "bootstrap: systemd units of node {} written into {}; install them on that node as:",
        w.node,
        dir.display()
    );
    for (path, to) in &w.files {
        println!("  {:<40} -> {to}", path.display());
    }
    println!("  (watch-secret and consul-watches.json: mode 0600, owner root)");
    println!("then: systemctl daemon-reload; systemctl enable --now consul.service;");
    println!(
        "      hax bootstrap {} --consul <the node's agent> (once, from any node); systemctl enable --now hax.service",
        description.display()
    );
    for b in &w.check_bins {
        println!(
            "note: the description's script checks run {b}, not {}: set check.hax_bin",
            hax_bin.display()
        );
    }
    exit::OK
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a Path)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_os_str().to_owned())
        }
    }

    #[test]
    fn the_consul_binary_is_found_in_the_install_consul_cache_then_on_the_path() {
        let dir = std::env::temp_dir().join(format!("hax-find-consul.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (home, path) = (dir.join("home"), dir.join("bin"));
        let cached = home.join(".cache/hax/consul-v1.16.3/consul");
        std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(&cached, "").unwrap();
        std::fs::write(path.join("consul"), "").unwrap();

        let both = [("HOME", home.as_path()), ("PATH", path.as_path())];
        assert_eq!(find_consul(env(&both)).unwrap(), cached);
        let other_cache = [("CONSUL_CACHE", dir.as_path()), ("PATH", path.as_path())];
        assert_eq!(find_consul(env(&other_cache)).unwrap(), path.join("consul"));
        let given = [
            ("HAX_CONSUL_BIN", cached.as_path()),
            ("PATH", path.as_path()),
        ];
        assert_eq!(find_consul(env(&given)).unwrap(), cached);

        let e = find_consul(env(&[("HOME", dir.as_path())])).unwrap_err();
        assert!(
            e.contains("HAX_CONSUL_BIN") && e.contains("scripts/install-consul"),
            "{e}"
        );
        let missing = dir.join("nothing");
        let e = find_consul(env(&[("HAX_CONSUL_BIN", missing.as_path())])).unwrap_err();
        assert!(e.contains("is not a file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
