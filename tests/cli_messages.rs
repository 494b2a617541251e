//! What the `hax` binary says about bad arguments and bad configuration (no Consul agent
//! needed).
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
