//! `weblab-testenv up --dir DIR`: runs a local control plane until SIGTERM or
//! SIGINT, for demos and manual testing (`make demo` runs it in the background).
//!
//! `DIR/kubeconfig` and `DIR/pid` are written, and the kubeconfig path printed
//! on stdout, only once the control plane is ready and the `--crds` are
//! established, so scripts can wait for any of them.
//!
//! With `--monitoring` it also runs a metrics endpoint, Prometheus scraping it
//! (with the `--rules` given) and Alertmanager notifying
//! `--alertmanager-webhook`; with `--gitlab` a GitLab-shaped contract server,
//! with `--merge-queue` a webhook receiver. All start (and their URLs are
//! written to `DIR/metrics-url`, `DIR/prometheus-url`, `DIR/alertmanager-url`,
//! `DIR/gitlab-url` and `DIR/merge-queue-url`) before the control plane, so
//! they are ready when the kubeconfig appears.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use testenv::{
    Alertmanager, AlertmanagerOptions, ControlPlane, GitLabContract, MetricsEndpoint, Options,
    Prometheus, PrometheusOptions, WebhookRecorder,
};
use tokio::signal::unix::{SignalKind, signal};

/// Files naming the monitoring endpoints, relative to `--dir`.
const URL_FILES: [&str; 5] = [
    "metrics-url",
    "prometheus-url",
    "alertmanager-url",
    "gitlab-url",
    "merge-queue-url",
];

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
        #[command(flatten)]
        monitoring: MonitoringArgs,
        #[command(flatten)]
        contracts: ContractArgs,
    },
}

#[derive(Args)]
struct MonitoringArgs {
    /// Also run a metrics endpoint (set a gauge with
    /// `curl -X PUT --data 0.3 "$(cat DIR/metrics-url)/NAME?label=value"`),
    /// Prometheus scraping it every second with the --rules files, and
    /// Alertmanager; their URLs go to DIR/metrics-url, DIR/prometheus-url and
    /// DIR/alertmanager-url.
    #[arg(long, requires = "alertmanager_webhook")]
    monitoring: bool,
    /// A Prometheus rule file to load (with --monitoring; repeatable).
    #[arg(long, value_name = "PATH", requires = "monitoring")]
    rules: Vec<PathBuf>,
    /// Where Alertmanager sends its notifications (with --monitoring).
    #[arg(long, value_name = "URL", requires = "monitoring")]
    alertmanager_webhook: Option<String>,
    /// A file holding the bearer token Alertmanager sends with them.
    #[arg(long, value_name = "PATH", requires = "monitoring")]
    alertmanager_token_file: Option<PathBuf>,
}

#[derive(Args)]
struct ContractArgs {
    /// Also run a GitLab-shaped contract server holding this project (its full
    /// path, e.g. platform/graphql-api); its URL goes to DIR/gitlab-url.
    #[arg(long, value_name = "PROJECT", requires = "gitlab_token_file")]
    gitlab: Option<String>,
    /// A pipeline schedule of that project, active and owned by the token's
    /// user (repeatable).
    #[arg(long, value_name = "ID", requires = "gitlab")]
    gitlab_schedule: Vec<i64>,
    /// A file holding the token the contract server accepts, as a Maintainer.
    #[arg(long, value_name = "PATH", requires = "gitlab")]
    gitlab_token_file: Option<PathBuf>,
    /// Also run a webhook receiver that answers 200 to every request (a
    /// merge queue for webhook pauses); its URL goes to DIR/merge-queue-url.
    #[arg(long)]
    merge_queue: bool,
}

/// The contract servers, kept alive while the control plane runs.
struct Contracts {
    _gitlab: Option<GitLabContract>,
    _merge_queue: Option<WebhookRecorder>,
}

/// The monitoring parts, kept alive while the control plane runs.
struct Monitoring {
    // Prometheus first: it stops scraping before the endpoint goes away.
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    _metrics: MetricsEndpoint,
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
        monitoring,
        contracts,
    } = Cli::parse().command;
    match up(
        dir, workloads, fake_nodes, crds, port, monitoring, contracts,
    )
    .await
    {
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
    monitoring: MonitoringArgs,
    contracts: ContractArgs,
) -> Result<(), testenv::Error> {
    // Installed before starting, so a signal during startup is not lost.
    let signal_error = |err| io_error("install signal handler", Path::new(""), err);
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;

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
    let started = async {
        remove_url_files(&dir)?;
        let contracts = start_contracts(&dir, contracts)?;
        let monitoring = start_monitoring(&dir, monitoring).await?;
        Ok::<_, testenv::Error>((ControlPlane::start(options).await?, monitoring, contracts))
    };
    let (control_plane, monitoring, contracts) = tokio::select! {
        started = started => started?,
        _ = terminate.recv() => return Ok(()),
        _ = interrupt.recv() => return Ok(()),
    };

    let pid_file = control_plane.dir().join("pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|err| io_error("write", &pid_file, err))?;
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
    if let Some(monitoring) = monitoring {
        let Monitoring {
            mut prometheus,
            alertmanager,
            _metrics,
        } = monitoring;
        prometheus.stop();
        alertmanager.stop();
    }
    drop(contracts);
    for name in URL_FILES {
        let _ = std::fs::remove_file(dir.join(name));
    }
    control_plane.stop();
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("stopped");
    Ok(())
}

/// Removes an earlier run's URL files, so that none names a dead process.
fn remove_url_files(dir: &Path) -> Result<(), testenv::Error> {
    for name in URL_FILES {
        let stale = dir.join(name);
        match std::fs::remove_file(&stale) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error("remove", &stale, err));
            }
            _ => {}
        }
    }
    std::fs::create_dir_all(dir).map_err(|err| io_error("create directory", dir, err))
}

fn write_url(dir: &Path, name: &str, url: &str) -> Result<(), testenv::Error> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{url}\n")).map_err(|err| io_error("write", &path, err))
}

/// Starts the contract servers asked for.
fn start_contracts(dir: &Path, args: ContractArgs) -> Result<Contracts, testenv::Error> {
    let gitlab = match (args.gitlab, args.gitlab_token_file) {
        (Some(project), Some(path)) => {
            let token =
                std::fs::read_to_string(&path).map_err(|err| io_error("read", &path, err))?;
            let gitlab = GitLabContract::serve(&project)?;
            gitlab.add_token(token.trim(), "merge-bot", true);
            for id in args.gitlab_schedule {
                gitlab.add_schedule(id, true, "merge-bot");
            }
            write_url(dir, "gitlab-url", &gitlab.url())?;
            tracing::info!(gitlab = %gitlab.url(), %project, "GitLab contract server running");
            Some(gitlab)
        }
        _ => None,
    };
    let merge_queue = if args.merge_queue {
        let recorder = WebhookRecorder::serve()?;
        write_url(dir, "merge-queue-url", &recorder.url())?;
        tracing::info!(merge_queue = %recorder.url(), "merge-queue webhook receiver running");
        Some(recorder)
    } else {
        None
    };
    Ok(Contracts {
        _gitlab: gitlab,
        _merge_queue: merge_queue,
    })
}

/// Starts the monitoring parts if asked.
async fn start_monitoring(
    dir: &Path,
    args: MonitoringArgs,
) -> Result<Option<Monitoring>, testenv::Error> {
    let (true, Some(webhook)) = (args.monitoring, args.alertmanager_webhook) else {
        return Ok(None);
    };

    let mut alertmanager_options = AlertmanagerOptions::new(webhook);
    if let Some(path) = &args.alertmanager_token_file {
        let token = std::fs::read_to_string(path).map_err(|err| io_error("read", path, err))?;
        alertmanager_options.bearer_token = Some(token.trim().to_owned());
    }
    let alertmanager = Alertmanager::start(dir.join("alertmanager"), alertmanager_options).await?;

    let metrics = MetricsEndpoint::serve()?;
    let mut prometheus_options = PrometheusOptions::default();
    prometheus_options.scrape_targets.push(metrics.address());
    prometheus_options.rule_files.extend(args.rules);
    prometheus_options
        .alertmanagers
        .push(alertmanager.address());
    let prometheus = Prometheus::start(dir.join("prometheus"), prometheus_options).await?;

    for (name, url) in
        URL_FILES
            .into_iter()
            .zip([metrics.url(), prometheus.url(), alertmanager.url()])
    {
        write_url(dir, name, &url)?;
    }
    tracing::info!(
        metrics = %metrics.url(),
        prometheus = %prometheus.url(),
        alertmanager = %alertmanager.url(),
        "monitoring running"
    );
    Ok(Some(Monitoring {
        prometheus,
        alertmanager,
        _metrics: metrics,
    }))
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> testenv::Error {
    testenv::Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
