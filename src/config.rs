//! Command-line flags of the `hax` binary, each with an environment fallback.
use clap::{Parser, Subcommand};

/// `--shutdown-ms` when not given (the systemd unit's stop timeout follows it).
pub const DEFAULT_SHUTDOWN_MS: u64 = 5000;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "hax",
    version,
    about = "HA eXchange: bridges Motr processes and Consul"
)]
pub struct Cli {
    /// Consul agent HTTP address (host:port or URL).
    #[arg(
        long,
        env = "CONSUL_HTTP_ADDR",
        default_value = "127.0.0.1:8500",
        global = true
    )]
    pub consul: String,
    /// Consul ACL token (sent as X-Consul-Token).
    #[arg(long, env = "CONSUL_HTTP_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify Consul's HTTPS certificate (with an https:// --consul).
    #[arg(long, env = "CONSUL_CACERT", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// This node's Consul node name (default: ask the local agent). With `bootstrap
    /// --systemd-dir`: the node whose units are written.
    #[arg(long, env = "HAX_NODE", global = true)]
    pub node: Option<String>,
    /// Address the watch endpoint binds to.
    #[arg(long, env = "HAX_HTTP_ADDR", default_value = "127.0.0.1")]
    pub http_addr: String,
    /// Port of the watch endpoint (0: any free port).
    #[arg(long, env = "HAX_HTTP_PORT", default_value_t = 8008)]
    pub http_port: u16,
    /// Log filter (error, warn, info, debug, or env_logger syntax).
    #[arg(long, env = "HAX_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Pause before an EAGAIN entrypoint reply, in milliseconds.
    #[arg(long, env = "HAX_ENTRYPOINT_PAUSE_MS", default_value_t = 1000)]
    pub entrypoint_pause_ms: u64,
    /// How long a send waits for Motr's delivery report, in milliseconds.
    #[arg(long, env = "HAX_DELIVERY_TIMEOUT_MS", default_value_t = 10000)]
    pub delivery_timeout_ms: u64,
    /// Shared secret watch POSTs must carry in the `X-Hax-Secret` header (unset: none
    /// required). Prefer --watch-secret-file: command lines are visible to other users.
    #[arg(long, env = "HAX_WATCH_SECRET", hide_env_values = true)]
    pub watch_secret: Option<String>,
    /// File holding the watch secret (first line).
    #[arg(long, env = "HAX_WATCH_SECRET_FILE")]
    pub watch_secret_file: Option<std::path::PathBuf>,
    /// Largest watch payload accepted, in bytes.
    #[arg(long, env = "HAX_PAYLOAD_LIMIT", default_value_t = 32 * 1024 * 1024)]
    pub payload_limit: usize,
    /// Where Consul health comes from: `node` (this node's own checks, the other nodes'
    /// through `bq/`; O(N) per failure) or `watches` (Consul watches POSTing whole snapshots
    /// to hax; O(N²)). Watch POSTs are taken in either mode. See docs/scaling.md.
    #[arg(long, env = "HAX_HEALTH_FROM", value_enum, default_value = "node")]
    pub health_from: crate::actors::health_monitor::HealthFrom,
    /// The safety net of Consul reads: `node` mode reads the checks that are not passing
    /// every 30 s; `watches` mode repairs lost deliveries with a query over every check.
    #[arg(long, env = "HAX_RECONCILE", default_value_t = true, action = clap::ArgAction::Set)]
    pub reconcile: bool,
    /// Campaign for the RC leader key (off: only follow whoever holds it).
    #[arg(long, env = "HAX_CAMPAIGN", default_value_t = true, action = clap::ArgAction::Set)]
    pub campaign: bool,
    /// Lock delay of the leader session, in seconds (Consul's default is 15).
    #[arg(long, env = "HAX_LEADER_LOCK_DELAY_S", default_value_t = 15)]
    pub leader_lock_delay_s: u64,
    /// TTL of the leader session, in seconds (at least 10).
    #[arg(long, env = "HAX_LEADER_TTL_S", default_value_t = 10)]
    pub leader_ttl_s: u64,
    /// Longest wait of the RC loop between two looks at the leader key, eq/ and timeout/,
    /// in seconds (a due timeout fires at most this late).
    #[arg(long, env = "HAX_RC_POLL_S", default_value_t = 1)]
    pub rc_poll_s: u64,
    /// Most eq/ entries the RC leader handles in one Consul transaction (1 to 20).
    #[arg(long, env = "HAX_RC_BATCH", default_value_t = 16)]
    pub rc_batch: usize,
    /// Local journal file: Motr's process events and STOB errors are confirmed once written
    /// and fdatasync'd there (a fraction of a millisecond), instead of once committed to
    /// Consul, and go on to Consul from there; a restarted hax records again what Consul may
    /// not hold. Keeps Motr's memory and the HA path free of Consul's latency. Unset: confirm
    /// at the Consul commit.
    #[arg(long, env = "HAX_JOURNAL")]
    pub journal: Option<std::path::PathBuf>,
    /// Bound on the shutdown sequence, in milliseconds.
    #[arg(long, env = "HAX_SHUTDOWN_MS", default_value_t = DEFAULT_SHUTDOWN_MS)]
    pub shutdown_ms: u64,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Write a cluster description into Consul (services, configuration tree, watches).
    ///
    /// With --systemd-dir DIR, write nothing into Consul: write the systemd units of one node
    /// of the description (--node NAME, or its only node) into DIR instead: hax.service
    /// (Type=notify, sandboxed, hax's --shutdown-ms, given before `bootstrap`, with a stop
    /// timeout 2 s above it), consul.service
    /// (the node's agent), hax.env (for /etc/default/hax), consul-watches.json (the watches and
    /// script checks hax needs of the agent) and watch-secret (both for /etc/hax/). The command
    /// prints where each file goes. See "Running under systemd" in README.md.
    Bootstrap {
        /// The cluster description (YAML; see docs/cluster-description.md).
        description: std::path::PathBuf,
        /// Apply the differences when Consul already holds another description.
        #[arg(long, conflicts_with = "systemd_dir")]
        apply: bool,
        /// Start a local Consul agent first, with its data in this directory (single node).
        /// The consul binary: $HAX_CONSUL_BIN, else the one scripts/install-consul cached,
        /// else consul on the PATH.
        #[arg(long, conflicts_with = "systemd_dir")]
        local_agent_dir: Option<std::path::PathBuf>,
        /// Write the systemd units of node --node into this directory (not into Consul).
        #[arg(long)]
        systemd_dir: Option<std::path::PathBuf>,
        /// The hax binary the units run (absolute path; default /usr/local/bin/hax).
        #[arg(long, requires = "systemd_dir")]
        hax_bin: Option<std::path::PathBuf>,
        /// The consul binary the units run (absolute path; default /usr/local/bin/consul).
        #[arg(long, requires = "systemd_dir")]
        consul_bin: Option<std::path::PathBuf>,
    },
    /// Print what an entrypoint reply would carry now (principal RM and confds), as YAML.
    GetEntrypoint,
    /// Print the current RC leader (node and session).
    Leader,
    /// Publish one entry to the event queue (eq) or the broadcast queue (bq); prints its key.
    Q {
        /// eq or bq.
        #[arg(value_enum)]
        queue: crate::rc::Queue,
        /// The entry's message_type (e.g. PROCESS-STATE-UPDATE, STOB_IOQ_ERROR).
        message_type: String,
        /// The entry's payload, as JSON.
        payload: String,
    },
    /// Show the cluster as Consul and hax see it: nodes, per process its fid, endpoint,
    /// Consul health, `processes/` state and the HA state hax last told Motr; the RC leader;
    /// the queues. Reads Consul (--consul) and the local hax (--http-addr, --http-port).
    /// Exit 0: every process ONLINE; 1: some process is not; 2: hax could not be asked;
    /// 69: Consul could not be read.
    Status {
        /// Print JSON (for scripts) instead of the human view.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when KV says the process started and its pid is alive here (a Consul check).
    Check {
        /// The process fid (type 0x72 'r', e.g. 0x7200000000000001:0xc, as registered in
        /// Consul's catalog), or its bare decimal key.
        process: String,
    },
}

impl Cli {
    /// How to reach Consul.
    pub fn consul_config(&self) -> crate::consul::ConsulConfig {
        crate::consul::ConsulConfig {
            addr: self.consul.clone(),
            token: self.token.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// The watch secret from the flag or the file.
    pub fn secret(&self) -> Result<Option<String>, String> {
        if let Some(f) = &self.watch_secret_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("--watch-secret-file {}: {e}", f.display()))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            if line.is_empty() {
                return Err(format!("--watch-secret-file {} is empty", f.display()));
            }
            return Ok(Some(line));
        }
        Ok(self.watch_secret.clone().filter(|s| !s.is_empty()))
    }

    /// Checks what clap cannot; the message explains the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.consul.trim().is_empty() {
            return Err("--consul must not be empty".into());
        }
        if self.consul.starts_with("https://") && self.ca_file.is_none() {
            return Err(
                "an https:// --consul needs --ca-file (the CA that signed Consul's certificate)"
                    .into(),
            );
        }
        if let Some(ca) = &self.ca_file {
            crate::consul::tls_config(ca)?;
        }
        if self.http_addr.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "--http-addr {:?} is not an IP address",
                self.http_addr
            ));
        }
        if self.payload_limit < 1024 {
            return Err("--payload-limit must be at least 1024 bytes".into());
        }
        if self.leader_ttl_s < 10 || self.leader_ttl_s > 86400 {
            return Err(
                "--leader-ttl-s must be between 10 and 86400 (Consul's session TTL range)".into(),
            );
        }
        if self.watch_secret.is_some() && self.watch_secret_file.is_some() {
            return Err("give --watch-secret or --watch-secret-file, not both".into());
        }
        if self.rc_poll_s == 0 || self.rc_poll_s > 600 {
            return Err("--rc-poll-s must be between 1 and 600".into());
        }
        if self.rc_batch == 0 || self.rc_batch > 20 {
            return Err(
                "--rc-batch must be between 1 and 20 (64 operations per transaction)".into(),
            );
        }
        Ok(())
    }

    /// Checks the command's own arguments (a bad argument, not a bad configuration; both
    /// exit with 64); the message explains the problem.
    pub fn validate_arguments(&self) -> Result<(), String> {
        match &self.command {
            Some(Command::Q {
                message_type,
                payload,
                ..
            }) => {
                if message_type.trim().is_empty() {
                    return Err("hax q: the message type must not be empty".into());
                }
                serde_json::from_str::<serde_json::Value>(payload)
                    .map_err(|e| format!("hax q: the payload is not JSON: {e}"))?;
            }
            Some(Command::Check { process }) => {
                check_process_fid(process)?;
            }
            Some(Command::Bootstrap {
                hax_bin,
                consul_bin,
                ..
            }) => {
                for (flag, p) in [("--hax-bin", hax_bin), ("--consul-bin", consul_bin)] {
                    if let Some(p) = p.as_ref().filter(|p| !p.is_absolute()) {
                        return Err(format!(
                            "hax bootstrap: {flag} {} is not an absolute path (systemd needs one)",
                            p.display()
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The fid `hax check` takes: a process fid (type 0x72 'r') or a bare process key.
pub fn check_process_fid(arg: &str) -> Result<crate::fid::Fid, String> {
    let fid = crate::fid::Fid::parse_process_id(arg).map_err(|e| format!("hax check: {e}"))?;
    if !fid.is_process() {
        let what = match fid.obj_type() {
            Some(t) => format!("a {} fid", format!("{t:?}").to_lowercase()),
            None => format!("a fid of type 0x{:02x}", fid.type_byte()),
        };
        return Err(format!(
            "hax check: {fid} is {what}; give a process fid (type 0x72 'r', e.g. \
             0x7200000000000001:0xc, as registered in Consul's catalog)"
        ));
    }
    Ok(fid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hax_check_takes_process_fids_and_names_the_type_of_others() {
        assert_eq!(
            check_process_fid("0x7200000000000001:0xc").unwrap(),
            crate::fid::Fid::typed(b'r', 1, 0xc)
        );
        assert_eq!(
            check_process_fid("12").unwrap(),
            crate::fid::Fid::typed(b'r', 1, 12)
        );
        let e = check_process_fid("0x7300000000000001:0xd").unwrap_err();
        assert!(
            e.contains("is a service fid") && e.contains("0x72 'r'"),
            "{e}"
        );
        let e = check_process_fid("0x6e00000000000001:0x2").unwrap_err();
        assert!(e.contains("is a node fid"), "{e}");
        let e = check_process_fid("0x0100000000000001:0x2").unwrap_err();
        assert!(e.contains("a fid of type 0x01"), "{e}");
        assert!(check_process_fid("zz").is_err());
    }
}
