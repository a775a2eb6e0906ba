//! The `sbc` appliance binary: reads the config, starts the shells, drains on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use sbc_core::config;
use sbc_core::shell::Sbc;

const USAGE: &str = "usage: sbc --config FILE\n       sbc check-config FILE\n";

/// Exit codes: distinct so init systems and scripts can tell why the SBC stopped.
const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;
const EXIT_BIND: u8 = 71;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["check-config", file] => check_config(PathBuf::from(file)),
        ["--config", file] | ["-c", file] => run(PathBuf::from(file)),
        ["--version"] => {
            println!("sbc {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["--help"] | ["-h"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn load(file: &Path) -> Result<config::Config, ExitCode> {
    config::load(file).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!("{}: {} error(s)", file.display(), errors.len());
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(file: PathBuf) -> ExitCode {
    match load(&file) {
        Ok(c) => {
            println!(
                "{}: ok ({} listeners, {} trunks, {} routes)",
                file.display(),
                c.listeners.len(),
                c.trunks.len(),
                c.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(file: PathBuf) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rtc-dtls warns about every TLS extension it does not implement, some 18
                // lines per Chrome handshake; its errors still show. RUST_LOG overrides both.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rtc_dtls=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match load(&file) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.shards.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sbc: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        if let Some(addr) = config.metrics {
            // Installed before the shells start: their counter handles bind to this recorder.
            let exporter = metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                .install();
            if let Err(e) = exporter {
                eprintln!("sbc: cannot serve metrics on {addr}: {e}");
                return ExitCode::from(EXIT_BIND);
            }
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
        }
        let sbc = match Sbc::start(Arc::clone(&config)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sbc: {e}");
                // A certificate that does not load is a configuration problem, not the OS's.
                let tls = matches!(e, sbc_core::shell::StartError::Tls(_));
                return ExitCode::from(if tls { EXIT_CONFIG } else { EXIT_BIND });
            }
        };
        tracing::info!(config = %file.display(), shards = config.shards, "sbc started");
        wait_for_signal().await;
        tracing::info!(calls = sbc.active_calls(), grace = ?config.drain_grace, "draining");
        sbc.drain().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the process can only be killed; run until then.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
