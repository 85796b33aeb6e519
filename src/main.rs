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
use weblab_operator::{
    api,
    api_client::{self, WriteLimits},
    controllers::notifier,
    leader::LeaseSettings,
    metrics::Metrics,
    operator,
    server::{
        alertmanager::{TokenSecret, WebhookOptions},
        listener::Limits,
    },
};

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

    /// Let the kubeconfigs of Rollback waves (tenants' Secrets) run exec
    /// plugins inside the operator: any command, with the operator's
    /// ServiceAccount and network. Off by default; files (token, certificate
    /// and key paths) and proxies stay refused.
    #[arg(long, env = "WEBLAB_INSECURE_KUBECONFIG_EXEC", default_value_t = false)]
    insecure_kubeconfig_exec: bool,

    /// How long the webhook may take to record a notification on every
    /// matching alarm before it answers 503 (Alertmanager then retries).
    #[arg(long, env = "WEBLAB_WEBHOOK_RECORD_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    webhook_record_timeout: Duration,

    /// When set, an Alertmanager alarm only matches alerts whose label of
    /// this name (e.g. `namespace`) equals the Alarm's namespace; unset,
    /// alarms match alerts from anywhere.
    #[arg(long, env = "WEBLAB_ALERTMANAGER_NAMESPACE_LABEL", value_parser = parse_label_name)]
    alertmanager_namespace_label: Option<String>,

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

    /// A URL prefix through which calls to URLs that resources name
    /// (Prometheus, GitLab, webhooks) may reach loopback, link-local and
    /// metadata addresses, which are refused otherwise (repeat, or
    /// comma-separate), e.g. `http://prometheus.monitoring.svc:9090/`.
    /// End it with `/` or `:` so that it cannot match a longer host name.
    #[arg(
        long = "allow-outbound-url-prefix",
        env = "WEBLAB_ALLOW_OUTBOUND_URL_PREFIXES",
        value_delimiter = ',',
        value_parser = parse_url_prefix
    )]
    allow_outbound_url_prefixes: Vec<String>,

    /// Serve OFREP at the root (`/ofrep/v1/...`) from this one namespace, for
    /// providers that cannot be given a path; default: the root mount is off
    /// and OFREP is served at `/namespaces/<namespace>/ofrep/v1/...` only.
    #[arg(long, env = "WEBLAB_OFREP_ROOT_NAMESPACE")]
    ofrep_root_namespace: Option<String>,

    /// Refuse assignment, OFREP and gate requests for namespaces that hold no
    /// `weblab-api-token` Secret; default: only namespaces that hold one
    /// require its bearer token.
    #[arg(long, env = "WEBLAB_REQUIRE_API_TOKEN", default_value_t = false)]
    require_api_token: bool,

    /// How long a request head may take from its first byte.
    #[arg(long, env = "WEBLAB_HTTP_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    http_header_read_timeout: Duration,

    /// How long a request may take from its head to its response, body read
    /// included; longer ones get 503.
    #[arg(long, env = "WEBLAB_HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    http_request_timeout: Duration,

    /// How long a keep-alive connection may wait for its next request.
    #[arg(long, env = "WEBLAB_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    http_idle_timeout: Duration,

    /// Open HTTP connections at most; more are answered 503 and closed.
    #[arg(long, env = "WEBLAB_HTTP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    http_max_connections: u32,

    /// Requests answered at once at most; more get 503 at once.
    #[arg(long, env = "WEBLAB_HTTP_MAX_CONCURRENT_REQUESTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    http_max_concurrent_requests: u32,

    /// Writes to the Kubernetes API per second, sustained (status applies,
    /// patches, events); more wait their turn. Lease renewals are not
    /// counted; an alarm's state is counted but never waits.
    #[arg(long, env = "WEBLAB_API_WRITES_PER_SECOND", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    api_writes_per_second: u32,

    /// Writes to the Kubernetes API at once after a quiet time, before
    /// `--api-writes-per-second` paces them.
    #[arg(long, env = "WEBLAB_API_WRITE_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    api_write_burst: u32,

    /// The PagerDuty Events API that notifiers' PagerDuty sinks call, e.g.
    /// `https://events.eu.pagerduty.com` for the EU service region.
    #[arg(long, env = "WEBLAB_PAGERDUTY_EVENTS_URL", default_value = notifier::PAGERDUTY_EVENTS_URL, value_parser = parse_events_url)]
    pagerduty_events_url: reqwest::Url,
}

/// An `http://` or `https://` prefix with at least a host, its scheme and
/// host in lower case as URLs are compared once parsed.
fn parse_url_prefix(text: &str) -> Result<String, String> {
    let (scheme, rest) = text
        .split_once("://")
        .filter(|(scheme, _)| matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https"))
        .ok_or_else(|| format!("{text:?} does not start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with([':', '/']) {
        return Err(format!("{text:?} names no host"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok(format!(
        "{}://{}{path}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    ))
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

/// Accepts a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`), so that a
/// typo such as `namespace=` fails the start instead of matching nothing.
fn parse_label_name(text: &str) -> Result<String, String> {
    let mut chars = text.chars();
    let valid = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a label name: letters, digits and underscores, not starting with a digit"
        ))
    }
}

/// Parses `15s`, `500ms`, `1m30s` (jiff's friendly format) into a positive duration.
fn parse_events_url(text: &str) -> Result<reqwest::Url, String> {
    weblab_operator::outbound::parse_base(text).map_err(|error| error.to_string())
}

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
    let metrics = Metrics::new()?;
    let client = client(&args, &metrics).await?;
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
        pagerduty_events_url: args.pagerduty_events_url,
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
        allow_outbound_url_prefixes: args.allow_outbound_url_prefixes,
        insecure_kubeconfig_exec: args.insecure_kubeconfig_exec,
        webhook: WebhookOptions {
            record_timeout: args.webhook_record_timeout,
            namespace_label: args.alertmanager_namespace_label,
        },
        ofrep_root_namespace: args.ofrep_root_namespace,
        require_api_token: args.require_api_token,
        limits: Limits {
            header_read_timeout: args.http_header_read_timeout,
            request_timeout: args.http_request_timeout,
            idle_timeout: args.http_idle_timeout,
            max_connections: args.http_max_connections as usize,
            max_concurrent_requests: args.http_max_concurrent_requests as usize,
        },
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    operator::run(client, metrics, settings, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn client(args: &RunArgs, metrics: &Metrics) -> anyhow::Result<Client> {
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
    let limits = WriteLimits {
        per_second: args.api_writes_per_second,
        burst: args.api_write_burst,
    };
    Ok(api_client::client(config, limits, metrics)?)
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

#[cfg(test)]
mod tests {
    use super::parse_url_prefix;

    #[test]
    fn url_prefixes_name_a_host_and_compare_as_parsed() {
        assert_eq!(
            parse_url_prefix("HTTP://Prometheus.Monitoring.svc:9090/API/").as_deref(),
            Ok("http://prometheus.monitoring.svc:9090/API/")
        );
        assert_eq!(
            parse_url_prefix("http://127.0.0.1:").as_deref(),
            Ok("http://127.0.0.1:")
        );
        for bad in [
            "ftp://host/",
            "127.0.0.1",
            "http://",
            "http://:80/",
            "https:///x",
        ] {
            assert!(parse_url_prefix(bad).is_err(), "{bad}");
        }
    }
}
