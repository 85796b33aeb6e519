//! `weblab-testenv up --dir DIR`: runs a local control plane until SIGTERM or
//! SIGINT, for demos and manual testing (`make demo` runs it in the background).
//!
//! `DIR/kubeconfig` and `DIR/pid` are written, and the kubeconfig path printed
//! on stdout, only once the control plane is ready and the `--crds` are
//! established, so scripts can wait for any of them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use testenv::{ControlPlane, Options};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    version,
    about = "A local Kubernetes control plane for weblab-operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Start a control plane and keep it running until SIGTERM or SIGINT.
    Up {
        /// Directory for the kubeconfig, pid file, certificates, logs and etcd
        /// data; DIR/kubeconfig and DIR/pid appear once the control plane is ready.
        #[arg(long)]
        dir: PathBuf,
        /// Also run kube-controller-manager, kube-scheduler and kwok with fake Nodes.
        #[arg(long)]
        workloads: bool,
        /// Number of fake Nodes (with --workloads).
        #[arg(long, default_value_t = 2)]
        fake_nodes: usize,
        /// Apply the CRDs in this file or directory once the API server is ready.
        #[arg(long)]
        crds: Option<PathBuf>,
        /// Serve the API on this port (default: a free port).
        #[arg(long)]
        port: Option<u16>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube logs every failed request at ERROR, and readiness
                // polling fails on purpose until the API server is up.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off")),
        )
        .with_writer(std::io::stderr)
        // `make demo` sends the log to a file: no colour codes there.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Commands::Up {
        dir,
        workloads,
        fake_nodes,
        crds,
        port,
    } = Cli::parse().command;
    match up(dir, workloads, fake_nodes, crds, port).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weblab-testenv: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn up(
    dir: PathBuf,
    workloads: bool,
    fake_nodes: usize,
    crds: Option<PathBuf>,
    port: Option<u16>,
) -> Result<(), testenv::Error> {
    // Installed before starting, so a signal during startup is not lost.
    let io_error = |source| testenv::Error::Io {
        action: "install signal handler",
        path: PathBuf::new(),
        source,
    };
    let mut terminate = signal(SignalKind::terminate()).map_err(io_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(io_error)?;

    let mut options = Options::default()
        .dir(&dir)
        .workloads(workloads)
        .fake_nodes(fake_nodes);
    if let Some(port) = port {
        options = options.apiserver_port(port);
    }
    if let Some(crds) = crds {
        options = options.crds(crds);
    }
    let control_plane = tokio::select! {
        started = ControlPlane::start(options) => started?,
        _ = terminate.recv() => return Ok(()),
        _ = interrupt.recv() => return Ok(()),
    };

    let pid_file = control_plane.dir().join("pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|source| {
        testenv::Error::Io {
            action: "write",
            path: pid_file.clone(),
            source,
        }
    })?;
    println!("{}", control_plane.kubeconfig_path().display());
    tracing::info!(
        kubeconfig = %control_plane.kubeconfig_path().display(),
        server = control_plane.server_url(),
        "control plane running; stop with SIGTERM or Ctrl-C"
    );

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!("stopping");
    control_plane.stop();
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("stopped");
    Ok(())
}
