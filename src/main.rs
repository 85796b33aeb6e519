//! The `weblab-operator` binary: parses flags and hands over to the library.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};
use weblab_operator::{api, leader::LeaseSettings, operator, server::alertmanager::TokenSecret};

/// Weblab dials, alarm-driven rollbacks, merge-train pauses and change
/// windows as Kubernetes resources.
#[derive(Parser)]
#[command(name = "weblab-operator", version)]
struct Cli {
    /// Log format.
    #[arg(long, env = "WEBLAB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers and the HTTP server.
    Run(Box<RunArgs>),
    /// Print every CustomResourceDefinition as multi-document YAML.
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file; default: in-cluster configuration, then $KUBECONFIG,
    /// then ~/.kube/config.
    #[arg(long, env = "WEBLAB_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Kubeconfig context; default: the current context.
    #[arg(long, env = "WEBLAB_CONTEXT")]
    context: Option<String>,

    /// Namespace to watch (repeat, or comma-separate); default: all.
    #[arg(long = "namespace", env = "WEBLAB_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,

    /// Address of the HTTP server (metrics, health, assignments, webhooks).
    #[arg(long, env = "WEBLAB_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Elect a leader through a Lease so that only one replica writes.
    #[arg(long, env = "WEBLAB_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,

    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(long, env = "WEBLAB_LEASE_NAME", default_value = "weblab-operator")]
    lease_name: String,

    /// This replica's identity in the election; default: the host name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// The Secret holding the Alertmanager webhook's bearer token, as
    /// <namespace>/<name>; without it every notification is refused.
    #[arg(long, env = "WEBLAB_WEBHOOK_TOKEN_SECRET", value_parser = parse_secret_name)]
    webhook_token_secret: Option<(String, String)>,

    /// The key of the webhook token in that Secret.
    #[arg(long, env = "WEBLAB_WEBHOOK_TOKEN_KEY", default_value = "token")]
    webhook_token_key: String,

    /// How long a lease lasts without renewal before another replica takes
    /// over (the longest failover after a crash), e.g. `15s`.
    #[arg(long, env = "WEBLAB_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,

    /// How long the leader keeps failing to renew before it stops writing;
    /// shorter than the lease duration.
    #[arg(long, env = "WEBLAB_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,

    /// How often the leader renews and candidates retry; shorter than the
    /// renew deadline.
    #[arg(long, env = "WEBLAB_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
}

fn parse_secret_name(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{text:?} is not <namespace>/<name>")),
    }
}

/// Parses `15s`, `500ms`, `1m30s` (jiff's friendly format) into a positive duration.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|error| format!("{text:?} is not a duration like 15s or 500ms: {error}"))?;
    Duration::try_from(signed)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("{text:?} must be positive"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let outcome = match cli.command {
        Command::Crd => print_crds(),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(run(*args))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            // Colour only on a terminal: escape codes garble a log file.
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
    }
}

fn print_crds() -> anyhow::Result<()> {
    print!("{}", api::crds_yaml()?);
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = client(&args).await?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("weblab-operator-{}", std::process::id()));
    if args.retry_period >= args.renew_deadline || args.renew_deadline >= args.lease_duration {
        anyhow::bail!(
            "lease timings must satisfy --retry-period < --renew-deadline < --lease-duration (got {:?}, {:?}, {:?})",
            args.retry_period,
            args.renew_deadline,
            args.lease_duration
        );
    }
    let leader_election = args.leader_election.then(|| LeaseSettings {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
        ..LeaseSettings::new(
            args.lease_namespace.clone(),
            args.lease_name.clone(),
            identity.clone(),
        )
    });
    let settings = operator::Settings {
        listen: args.listen,
        namespaces: args.namespaces,
        identity,
        leader_election,
        webhook_token: args
            .webhook_token_secret
            .map(|(namespace, name)| TokenSecret {
                namespace,
                name,
                key: args.webhook_token_key,
            }),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    operator::run(client, settings, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn client(args: &RunArgs) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if args.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot listen for signals; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
    shutdown.cancel();
}
