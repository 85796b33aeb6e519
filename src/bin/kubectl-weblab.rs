//! `kubectl-weblab`: a kubectl plugin for weblab dials. Installed on the PATH
//! it runs as `kubectl weblab ...`; it reads dials, asks for manual actions
//! through the `weblab.dev/action` annotation, and computes assignments
//! locally exactly as the operator's assignment API does.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use weblab_operator::{
    api::{WeblabDial, alarm::AlarmState},
    assignment::{AssignmentReason, BUCKETS, DialRules, RealmLayout, bucket},
    controllers::weblab_dial::plan::ACTION_ANNOTATION,
};

const ABOUT: &str = "Inspect and steer weblab dials (WeblabDial resources).";

const LONG_ABOUT: &str = "Inspect and steer weblab dials (WeblabDial resources).

A dial moves its effective allocation towards spec.allocation step by step;
the operator records every change in status and rolls back on its own when an
attached alarm fires. This plugin shows that state and asks the operator for
manual actions. It never edits a dial's spec: actions are requests in the
weblab.dev/action annotation, each carried out once.";

const EXAMPLES: &str = "Examples:
  kubectl weblab status -A                     every dial, its phase, what each realm serves
  kubectl weblab -n team-a history checkout    every allocation change, oldest first
  kubectl weblab -n team-a promote checkout    skip the rest of the current bake
  kubectl weblab -n team-a abort checkout --wait
  kubectl weblab -n team-a assign checkout customer-42 --realm NA";

/// Inspect and steer weblab dials.
#[derive(Parser)]
#[command(
    name = "kubectl-weblab",
    bin_name = "kubectl weblab",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES
)]
struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,

    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A table of dials: phase, effective allocation per realm, attached alarms.
    Status {
        /// Only this dial.
        dial: Option<String>,
        /// Dials in every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Every allocation change of a dial (the last 50), oldest first.
    History {
        /// The dial.
        dial: String,
    },
    /// Hold the dial: no move towards risk until `resume` (moves towards
    /// safety still happen).
    Pause(ActionArgs),
    /// Undo a pause; also lets a pause step go on.
    Resume(ActionArgs),
    /// Skip the rest of the current stage's bake and its pause.
    Promote(ActionArgs),
    /// Send every realm to the rollback allocation and stay there.
    Abort(ActionArgs),
    /// Leave a rollback or an abort and progress again (refused while a
    /// rollback alarm still fires).
    Retry(ActionArgs),
    /// Which treatment a unit gets, and why, computed from the dial's status
    /// exactly as the operator's assignment API computes it.
    Assign {
        /// The dial.
        dial: String,
        /// The unit: a customer, device or session id.
        unit: String,
        /// The realm (needed when the dial has several).
        #[arg(long)]
        realm: Option<String>,
        /// A segment the unit belongs to (repeat), for segment overrides.
        #[arg(long = "segment")]
        segments: Vec<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Args)]
struct ActionArgs {
    /// The dial.
    dial: String,
    /// Wait until the operator has carried the action out.
    #[arg(long)]
    wait: bool,
    /// How long `--wait` waits, e.g. 30s or 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|error| format!("{text:?} is not a duration like 30s: {error}"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?} must not be negative"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command and returns what to print.
async fn run(cli: Cli) -> anyhow::Result<String> {
    let config = config(&cli).await?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("cannot build a Kubernetes client")?;
    let namespaced: Api<WeblabDial> = Api::namespaced(client.clone(), &namespace);
    match cli.command {
        Command::Status {
            dial,
            all_namespaces,
        } => {
            let dials = match (&dial, all_namespaces) {
                (Some(name), _) => vec![get(&namespaced, name, &namespace).await?],
                (None, true) => list(&Api::all(client)).await?,
                (None, false) => list(&namespaced).await?,
            };
            if dials.is_empty() {
                return Ok(if all_namespaces {
                    "No WeblabDials found.\n".to_owned()
                } else {
                    format!("No WeblabDials in namespace {namespace}.\n")
                });
            }
            Ok(status_table(&dials, all_namespaces))
        }
        Command::History { dial } => {
            let dial = get(&namespaced, &dial, &namespace).await?;
            Ok(history_table(&dial))
        }
        Command::Pause(args) => act(&namespaced, &namespace, "pause", args).await,
        Command::Resume(args) => act(&namespaced, &namespace, "resume", args).await,
        Command::Promote(args) => act(&namespaced, &namespace, "promote", args).await,
        Command::Abort(args) => act(&namespaced, &namespace, "abort", args).await,
        Command::Retry(args) => act(&namespaced, &namespace, "retry", args).await,
        Command::Assign {
            dial,
            unit,
            realm,
            segments,
            output,
        } => {
            let dial = get(&namespaced, &dial, &namespace).await?;
            let answer = assign(&dial, &unit, realm.as_deref(), &segments)?;
            Ok(match output {
                Output::Text => answer.explain(),
                Output::Json => format!("{}\n", answer.json()),
            })
        }
    }
}

async fn config(cli: &Cli) -> anyhow::Result<Config> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    Ok(match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("cannot use kubeconfig {}", path.display()))?
        }
        None => Config::from_kubeconfig(&options)
            .await
            .context("cannot load a kubeconfig (set KUBECONFIG or --kubeconfig)")?,
    })
}

async fn get(api: &Api<WeblabDial>, name: &str, namespace: &str) -> anyhow::Result<WeblabDial> {
    match api.get_opt(name).await {
        Ok(Some(dial)) => Ok(dial),
        Ok(None) => bail!(
            "weblabdial {name:?} not found in namespace {namespace} (list them with `kubectl weblab status -n {namespace}`)"
        ),
        Err(error) => {
            Err(error).with_context(|| format!("cannot read weblabdial {namespace}/{name}"))
        }
    }
}

async fn list(api: &Api<WeblabDial>) -> anyhow::Result<Vec<WeblabDial>> {
    let mut dials = api
        .list(&ListParams::default())
        .await
        .context("cannot list weblabdials")?
        .items;
    dials.sort_by_key(|dial| (dial.namespace(), dial.name_any()));
    Ok(dials)
}

/// Columns aligned on the widest cell, two spaces apart, like kubectl.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 2;
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

fn status_table(dials: &[WeblabDial], with_namespace: bool) -> String {
    let mut header = vec!["NAME", "WEBLAB", "PHASE", "SERVED", "ALARMS"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = dials
        .iter()
        .map(|dial| {
            let status = dial.status.clone().unwrap_or_default();
            let mut phase = status
                .phase
                .map_or_else(|| "-".to_owned(), |phase| format!("{phase:?}"));
            if status.paused {
                phase.push_str(" (paused)");
            }
            // Realms in spec order; one not served yet says so.
            let served: Vec<String> = dial
                .spec
                .realms
                .iter()
                .map(
                    |realm| match status.realms.iter().find(|r| r.realm == *realm) {
                        Some(entry) if entry.rolled_back => {
                            format!("{realm}={} (rollback)", entry.allocation)
                        }
                        Some(entry) => format!("{realm}={}", entry.allocation),
                        None => format!("{realm}=-"),
                    },
                )
                .collect();
            let alarms: Vec<String> = status
                .alarms
                .iter()
                .map(|alarm| format!("{}={}", alarm.name, alarm_state(alarm.state)))
                .collect();
            let mut row = vec![
                dial.name_any(),
                dial.spec.weblab.clone(),
                phase,
                served.join(", "),
                if alarms.is_empty() {
                    "-".to_owned()
                } else {
                    alarms.join(", ")
                },
            ];
            if with_namespace {
                row.insert(0, dial.namespace().unwrap_or_default());
            }
            row
        })
        .collect();
    table(&header, &rows)
}

fn alarm_state(state: AlarmState) -> &'static str {
    match state {
        AlarmState::Ok => "OK",
        AlarmState::Alarm => "ALARM",
        AlarmState::InsufficientData => "INSUFFICIENT_DATA",
    }
}

fn history_table(dial: &WeblabDial) -> String {
    let history = dial
        .status
        .as_ref()
        .map(|status| status.history.as_slice())
        .unwrap_or_default();
    if history.is_empty() {
        return format!(
            "weblabdial/{} has no allocation changes yet.\n",
            dial.name_any()
        );
    }
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|change| {
            vec![
                change.at.0.to_string(),
                change.realm.clone(),
                change
                    .from
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                change.to.to_string(),
                format!("{:?}", change.reason),
                change.generation.to_string(),
                change.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "AT",
            "REALM",
            "FROM",
            "TO",
            "REASON",
            "GENERATION",
            "MESSAGE",
        ],
        &rows,
    )
}

/// Writes `<action> <now> via kubectl-weblab` into the action annotation:
/// distinct every time, so the operator carries it out once.
async fn act(
    api: &Api<WeblabDial>,
    namespace: &str,
    action: &str,
    args: ActionArgs,
) -> anyhow::Result<String> {
    // Fail on a missing dial with the same message as the other commands,
    // instead of a bare 404 from the patch.
    get(api, &args.dial, namespace).await?;
    let request = format!("{action} {} via kubectl-weblab", jiff::Timestamp::now());
    let patch = serde_json::json!({"metadata": {"annotations": {ACTION_ANNOTATION: request}}});
    api.patch(&args.dial, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("cannot annotate weblabdial {namespace}/{}", args.dial))?;
    let mut out = format!("weblabdial/{} asked to {action} ({request:?})\n", args.dial);
    if !args.wait {
        return Ok(out);
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let dial = get(api, &args.dial, namespace).await?;
        let status = dial.status.unwrap_or_default();
        if status.last_action.as_ref().map(|a| a.request.as_str()) == Some(request.as_str()) {
            let phase = status
                .phase
                .map_or_else(|| "-".to_owned(), |phase| format!("{phase:?}"));
            let _ = writeln!(
                out,
                "weblabdial/{} carried it out; phase {phase}",
                args.dial
            );
            return Ok(out);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the operator did not carry out {action} on {namespace}/{} within {:?}: is it running and watching {namespace}? (`kubectl describe weblabdial {}` shows its events)",
                args.dial,
                args.timeout,
                args.dial
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A unit's treatment and the facts behind it.
struct Answer {
    namespace: String,
    name: String,
    weblab: String,
    unit: String,
    realm: String,
    treatment: String,
    reason: AssignmentReason,
    bucket: u32,
    served: Option<String>,
    generation: i64,
}

/// The same computation as the operator's assignment API: the spec's rules
/// (salt, control, overrides) over the realm's layout from the status.
fn assign(
    dial: &WeblabDial,
    unit: &str,
    realm: Option<&str>,
    segments: &[String],
) -> anyhow::Result<Answer> {
    let name = dial.name_any();
    let rules = DialRules::from_spec(&dial.spec)
        .with_context(|| format!("weblabdial {name} lists no treatments"))?;
    let realm = match (realm, dial.spec.realms.as_slice()) {
        (Some(wanted), realms) if realms.iter().any(|r| r == wanted) => wanted.to_owned(),
        (Some(wanted), realms) => bail!(
            "weblabdial {name} has no realm {wanted:?}; its realms: {}",
            realms.join(", ")
        ),
        (None, [only]) => only.clone(),
        (None, realms) => bail!(
            "weblabdial {name} has several realms; pick one with --realm ({})",
            realms.join(", ")
        ),
    };
    let entry = dial
        .status
        .as_ref()
        .and_then(|status| status.realms.iter().find(|r| r.realm == realm));
    // An unreadable layout serves control, as the operator does.
    let layout = entry.and_then(|entry| RealmLayout::from_status(entry).ok().flatten());
    let assignment = rules.assign(layout.as_ref(), unit, segments);
    Ok(Answer {
        namespace: dial.namespace().unwrap_or_default(),
        weblab: dial.spec.weblab.clone(),
        unit: unit.to_owned(),
        treatment: assignment.treatment.to_owned(),
        reason: assignment.reason,
        bucket: bucket(rules.salt(), unit),
        served: entry.map(|entry| entry.allocation.to_string()),
        generation: dial.metadata.generation.unwrap_or_default(),
        realm,
        name,
    })
}

impl Answer {
    /// The wire name of the reason, as the native API spells it.
    fn reason_label(&self) -> &'static str {
        match self.reason {
            AssignmentReason::Override => "override",
            AssignmentReason::Allocation => "allocation",
            AssignmentReason::Rollback => "rollback",
            AssignmentReason::Default => "default",
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "weblab": self.weblab,
            "namespace": self.namespace,
            "name": self.name,
            "unit": self.unit,
            "realm": self.realm,
            "treatment": self.treatment,
            "reason": self.reason_label(),
            "generation": self.generation,
        })
    }

    fn explain(&self) -> String {
        let served = self.served.as_deref().unwrap_or("nothing yet");
        let why = match self.reason {
            AssignmentReason::Override => format!(
                "an override in spec.overrides pins {} (or one of its segments) to {}",
                self.unit, self.treatment
            ),
            AssignmentReason::Allocation => format!(
                "its bucket {} of {BUCKETS} lies in {}'s share of what {} serves: {served}",
                self.bucket, self.treatment, self.realm
            ),
            AssignmentReason::Rollback => format!(
                "{} serves its rollback allocation ({served}) and bucket {} of {BUCKETS} lies in {}'s share",
                self.realm, self.bucket, self.treatment
            ),
            AssignmentReason::Default => format!(
                "nothing is dialed in {} yet, so the control treatment is served",
                self.realm
            ),
        };
        format!(
            "{} gets {} in {} of weblab {} ({}/{}): {}\n",
            self.unit, self.treatment, self.realm, self.weblab, self.namespace, self.name, why
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let text = table(
            &["NAME", "PHASE"],
            &[
                vec!["checkout-redesign".to_owned(), "Dialed".to_owned()],
                vec!["x".to_owned(), "Baking".to_owned()],
            ],
        );
        assert_eq!(
            text,
            "NAME               PHASE\ncheckout-redesign  Dialed\nx                  Baking\n"
        );
    }

    #[test]
    fn durations_parse_in_the_friendly_format() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
