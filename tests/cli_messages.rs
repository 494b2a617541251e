//! What the `hax` binary says about bad arguments, bad configuration and a missing consul
//! binary (no Consul agent needed).
use std::process::{Command, Output};

fn hax(args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hax"));
    cmd.args(args).env("HAX_LOG", "error");
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run hax");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().unwrap_or(-1), text)
}

#[test]
fn hax_check_of_a_service_or_node_fid_names_the_fid_type_it_wants() {
    for (fid, what) in [
        ("0x7300000000000001:0xd", "service"),
        ("0x6e00000000000001:0x2", "node"),
    ] {
        let (code, text) = hax(&["--consul", "127.0.0.1:1", "check", fid]);
        assert_eq!(code, 64, "{text}");
        assert!(
            text.contains("hax: bad argument")
                && text.contains(&format!("is a {what} fid"))
                && text.contains("process fid (type 0x72 'r'"),
            "{text}"
        );
        assert!(!text.contains("no processes/"), "{text}");
    }
}

#[test]
fn bad_arguments_and_bad_configuration_are_told_apart_and_both_exit_64() {
    let (code, text) = hax(&["q", "eq", "X", "not json"]);
    assert_eq!(code, 64, "{text}");
    assert!(text.starts_with("hax: bad argument: hax q:"), "{text}");
    let (code, text) = hax(&["--rc-batch", "0", "leader"]);
    assert_eq!(code, 64, "{text}");
    assert!(
        text.starts_with("hax: bad configuration: --rc-batch"),
        "{text}"
    );
}

#[test]
fn a_local_agent_without_any_consul_binary_says_where_to_get_one() {
    let dir = std::env::temp_dir().join(format!("hax-no-consul.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let home = dir.display().to_string();
    let description = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/singlenode.yaml");
    let agent_dir = dir.join("agent").display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hax"));
    cmd.args(["bootstrap", description, "--local-agent-dir", &agent_dir])
        .env_remove("HAX_CONSUL_BIN")
        .env_remove("CONSUL_CACHE")
        .env("HOME", &home)
        .env("PATH", &home);
    let out = cmd.output().expect("run hax");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{text}");
    assert!(
        text.contains("HAX_CONSUL_BIN") && text.contains("scripts/install-consul"),
        "{text}"
    );
    assert!(!text.contains("No such file"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
