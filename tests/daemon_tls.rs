//! hax talking HTTPS to a Consul agent whose certificate is signed by a CA given to hax.
mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

/// Makes a CA and a server certificate with Consul's own `consul tls` commands in `dir`.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    for args in [
        &["tls", "ca", "create"][..],
        &["tls", "cert", "create", "-server", "-dc", "dc1"],
    ] {
        let out = Command::new(consul_bin())
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "consul {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (
        dir.join("consul-agent-ca.pem"),
        dir.join("dc1-server-consul-0.pem"),
        dir.join("dc1-server-consul-0-key.pem"),
    )
}

#[test]
fn over_https_hax_trusts_only_the_given_ca() {
    let certs = std::env::temp_dir().join(format!("hax-tls-{}", std::process::id()));
    let (ca, cert, key) = make_certs(&certs.join("good"));
    let (other_ca, _, _) = make_certs(&certs.join("other"));
    let https = free_port();
    let http_port = free_port();
    let mut cfg = watch_config(http_port);
    cfg["ports"] = json!({"https": https});
    cfg["tls"] = json!({"defaults": {"ca_file": ca, "cert_file": cert, "key_file": key, "verify_incoming": false}});
    let agent = ConsulAgent::dev_with_json(&cfg);
    let ports = ClusterPorts::allocate();
    register_cluster(agent.client(), agent.node_name(), &ports);
    let url = format!("https://127.0.0.1:{https}");

    let untrusted = HaxProc::spawn(
        &url,
        agent.node_name(),
        free_port(),
        free_port(),
        agent.dir(),
        &["--ca-file", other_ca.to_str().unwrap()],
    );
    assert!(
        untrusted.wait_log("waiting for", Duration::from_secs(20)),
        "{}",
        untrusted.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !untrusted.is_ready(),
        "a certificate from another CA must be refused"
    );
    drop(untrusted);

    let hax = HaxProc::spawn(
        &url,
        agent.node_name(),
        http_port,
        ports.hax,
        agent.dir(),
        &["--ca-file", ca.to_str().unwrap()],
    );
    hax.assert_ready(Duration::from_secs(30));
    assert!(hax.log_text().contains(&format!("using Consul at {url}")));

    let no_ca = Command::new(env!("CARGO_BIN_EXE_hax"))
        .args(["--consul", &url])
        .output()
        .unwrap();
    assert_eq!(
        no_ca.status.code(),
        Some(64),
        "https without a CA file is a configuration error"
    );
    let _ = std::fs::remove_dir_all(&certs);
}
