//! The `hax` daemon and its commands; see `hax --help`.
use clap::Parser;
use hax::config::{Cli, Command};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(64);
        }
        Err(e) => {
            let _ = e.print();
            std::process::exit(0);
        }
    };
    // The daemon takes its stop signals with sigwait: block them before any thread exists
    // (see hax::signals). Commands keep the default handling (Ctrl-C ends them).
    if cli.command.is_none() {
        if let Err(e) = hax::signals::block() {
            eprintln!("hax: cannot block the stop signals: {e}");
            std::process::exit(70);
        }
    }
    env_logger::Builder::new()
        // actix's server start lines are noise to an operator (HAX_LOG can ask for them).
        .filter_module("actix_server", log::LevelFilter::Warn)
        .parse_filters(&cli.log)
        .format_timestamp_millis()
        .init();
    if let Err(msg) = cli.validate() {
        eprintln!("hax: bad configuration: {msg}");
        std::process::exit(64);
    }
    if let Err(msg) = cli.validate_arguments() {
        eprintln!("hax: bad argument: {msg}");
        std::process::exit(64);
    }
    let code = match &cli.command {
        None => hax::daemon::run(cli.clone()),
        Some(Command::Bootstrap {
            description,
            systemd_dir: Some(dir),
            hax_bin,
            consul_bin,
            ..
        }) => hax::cluster::cmd_systemd_units(
            description,
            dir,
            cli.node.as_deref(),
            hax_bin
                .as_deref()
                .unwrap_or(hax::cluster::systemd::DEFAULT_HAX_BIN.as_ref()),
            consul_bin
                .as_deref()
                .unwrap_or(hax::cluster::systemd::DEFAULT_CONSUL_BIN.as_ref()),
            cli.shutdown_ms,
        ),
        Some(Command::Bootstrap {
            description,
            apply,
            local_agent_dir,
            ..
        }) => hax::cluster::cmd_bootstrap(
            description,
            &cli.consul,
            cli.token.as_deref(),
            *apply,
            local_agent_dir.as_deref(),
        ),
        Some(Command::GetEntrypoint) => {
            hax::cluster::cmd_get_entrypoint(&cli.consul, cli.token.as_deref())
        }
        Some(Command::Leader) => {
            let cfg = cli.consul_config();
            match actix::System::new().block_on(async move { hax::check::leader(&cfg).await }) {
                Ok(line) => {
                    println!("{line}");
                    0
                }
                Err(reason) => {
                    eprintln!("hax leader: {reason}");
                    1
                }
            }
        }
        Some(Command::Q {
            queue,
            message_type,
            payload,
        }) => {
            let cfg = cli.consul_config();
            hax::rc::cmd_q(&cfg, *queue, message_type, payload)
        }
        Some(Command::Status { json }) => {
            let url = format!("http://{}:{}", cli.http_addr, cli.http_port);
            hax::status::command::cmd_status(&cli.consul_config(), &url, *json)
        }
        Some(Command::Check { process }) => {
            let fid = hax::config::check_process_fid(process).expect("validated");
            let cfg = cli.consul_config();
            match actix::System::new().block_on(async move { hax::check::check(&cfg, fid).await }) {
                Ok(line) => {
                    println!("{line}");
                    0
                }
                Err(reason) => {
                    println!("{reason}");
                    2
                }
            }
        }
    };
    std::process::exit(code);
}
