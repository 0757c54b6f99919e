//! The `meridian` binary: parses the command line, layers the configuration, builds the tokio
//! runtime the configuration asks for, runs the node until SIGINT/SIGTERM.

use anyhow::Context;
use clap::{Arg, ArgAction, ArgMatches, Command};
use meridian::config::{params::PARAMS, Config};
use std::path::PathBuf;

/// Every parameter becomes a `--name value` flag.
fn param_args() -> Vec<Arg> {
    PARAMS
        .iter()
        .map(|p| {
            Arg::new(p.name)
                .long(p.name)
                .value_name("VALUE")
                .help(format!(
                    "{} [default: {:?}]{}",
                    p.help,
                    p.default,
                    if p.mutable { "" } else { " (fixed at start)" }
                ))
                .action(ArgAction::Set)
        })
        .collect()
}

fn cli() -> Command {
    let serve = Command::new("serve")
        .about("Run a node (the default when no subcommand is given)")
        .arg(
            Arg::new("config")
                .long("config")
                .short('c')
                .value_name("FILE")
                .help("TOML file with parameters (redis.conf names)"),
        )
        .args(param_args());
    Command::new("meridian")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Active-active multi-region cache speaking the Redis protocol (CRDT values, hybrid logical clocks)")
        .long_about(
            "Active-active multi-region cache speaking the Redis protocol.\n\n\
             Parameters come from, in increasing priority: embedded defaults, --config FILE (TOML), \
             environment variables MERIDIAN_<NAME> (dashes as underscores, e.g. MERIDIAN_PROTO_MAX_BULK_LEN), \
             and --<name> <value> flags. Names follow redis.conf; CONFIG GET/SET reads and changes them at runtime.\n\n\
             Logging: RUST_LOG (e.g. RUST_LOG=meridian=debug).",
        )
        .arg(Arg::new("config").long("config").short('c').value_name("FILE").help("TOML file with parameters (redis.conf names)"))
        .args(param_args())
        .subcommand(serve)
        .subcommand(
            Command::new("certs")
                .about("Create a deployment CA (or reuse the one in --out) and a node certificate for the mesh's mutual TLS")
                .arg(Arg::new("out").long("out").value_name("DIR").required(true).help("Directory for ca.pem, ca.key, node.pem, node.key (use it as cluster-tls-dir)"))
                .arg(Arg::new("names").long("names").value_name("NAMES").default_value("127.0.0.1,localhost").help("Comma-separated IPs and DNS names the node certificate is valid for")),
        )
        .subcommand(
            Command::new("demo")
                .about("Start a local topology on loopback, one process per node; prints one line per node, then `ready`; Ctrl-C stops it")
                .arg(Arg::new("regions").long("regions").value_name("R").default_value("1").value_parser(clap::value_parser!(usize)))
                .arg(Arg::new("nodes").long("nodes").value_name("N").default_value("3").value_parser(clap::value_parser!(usize)).help("Nodes per region"))
                .arg(Arg::new("replicas").long("replicas").value_name("K").default_value("0").value_parser(clap::value_parser!(usize)).help("Replicas per primary"))
                .arg(Arg::new("base-port").long("base-port").value_name("P").default_value("7000").value_parser(clap::value_parser!(u16)).help("First RESP port (region r uses P + 100·r; mesh ports are +10000)"))
                .arg(Arg::new("node-args").last(true).num_args(0..).help("Extra flags for every node, after --")),
        )
        .subcommand(
            // Used by the compose demo (regions/) where tc netem is unavailable; not a product
            // feature, so hidden from --help.
            Command::new("wan-relay")
                .hide(true)
                .about("UDP relay adding a fixed one-way delay: stands for the WAN in front of a region (regions/ compose demo)")
                .arg(Arg::new("bind").long("bind").value_name("IP").default_value("0.0.0.0"))
                .arg(Arg::new("route").long("route").value_name("PORT=IP:PORT").action(ArgAction::Append).required(true).help("Forward datagrams arriving on PORT to IP:PORT (repeatable)"))
                .arg(Arg::new("delay-ms").long("delay-ms").value_name("MS").default_value("40").value_parser(clap::value_parser!(u64)).help("One-way delay added to every packet, each direction")),
        )
}

/// `meridian certs` and `meridian demo`; `None` when the command line asks to serve.
fn run_tool(matches: &ArgMatches) -> Option<anyhow::Result<()>> {
    match matches.subcommand() {
        Some(("certs", m)) => {
            let out = PathBuf::from(m.get_one::<String>("out").expect("required"));
            let names: Vec<String> = m
                .get_one::<String>("names")
                .expect("defaulted")
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            Some(
                meridian::admin::certs(&out, &names)
                    .map(|()| {
                        println!(
                            "wrote {}/{{ca.pem,ca.key,node.pem,node.key}}",
                            out.display()
                        )
                    })
                    .context("meridian certs"),
            )
        }
        Some(("demo", m)) => {
            let opts = meridian::admin::demo::DemoOptions {
                regions: *m.get_one::<usize>("regions").expect("defaulted"),
                nodes: *m.get_one::<usize>("nodes").expect("defaulted"),
                replicas: *m.get_one::<usize>("replicas").expect("defaulted"),
                base_port: *m.get_one::<u16>("base-port").expect("defaulted"),
                node_args: m
                    .get_many::<String>("node-args")
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default(),
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return Some(Err(e.into())),
            };
            Some(
                rt.block_on(meridian::admin::demo::run(opts, wait_for_signal()))
                    .context("meridian demo"),
            )
        }
        Some(("wan-relay", m)) => Some(wan_relay(m)),
        _ => None,
    }
}

/// `meridian wan-relay`: logs to stderr (RUST_LOG, default info) and runs until SIGTERM.
fn wan_relay(m: &ArgMatches) -> anyhow::Result<()> {
    use meridian::admin::wan_relay::{self, RelayOptions, Route};
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let bind = m
        .get_one::<String>("bind")
        .expect("defaulted")
        .parse()
        .context("--bind is not an IP address")?;
    let routes = m
        .get_many::<String>("route")
        .into_iter()
        .flatten()
        .map(|r| r.parse::<Route>())
        .collect::<Result<Vec<_>, _>>()?;
    let delay = std::time::Duration::from_millis(*m.get_one::<u64>("delay-ms").expect("defaulted"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(wan_relay::run(
        RelayOptions {
            bind,
            routes,
            delay,
        },
        wait_for_signal(),
    ))
    .context("meridian wan-relay")
}

fn overrides(m: &ArgMatches) -> Vec<(String, String)> {
    PARAMS
        .iter()
        .filter_map(|p| {
            m.get_one::<String>(p.name)
                .map(|v| (p.name.to_string(), v.clone()))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let matches = cli().get_matches();
    if let Some(done) = run_tool(&matches) {
        return done;
    }
    let m = matches.subcommand_matches("serve").unwrap_or(&matches);
    let file = m.get_one::<String>("config").map(PathBuf::from);
    let config =
        Config::layered(file.as_deref(), true, &overrides(m)).context("invalid configuration")?;
    let s = config.settings();

    let default_level = match config
        .get_matching(|n| n == "loglevel")
        .first()
        .map(|(_, v)| v.as_str())
    {
        Some("debug") => "debug",
        Some("verbose") => "info",
        Some("warning") => "warn",
        Some("nothing") => "error",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .init();

    // io-threads 0 = one worker per core we may run on (taskset is respected); 1 = a
    // single-threaded runtime, the fastest shape on one core.
    let threads = match s.io_threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let running = meridian::server::spawn(config).await?;
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        running.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
