//! kube-controller-manager, kube-scheduler and kwok with fake Nodes: enough of
//! a cluster for Deployments to schedule, become available and roll out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeStatus, ServiceAccount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ObjectMeta, PostParams};

use crate::control_plane::{PkiFiles, UserAuth, free_ports, kubeconfig_yaml, wait_for_port};
use crate::{ControlPlane, Error, Options};

/// The annotation (key, value) by which kwok picks the Nodes it manages: a
/// Node created with it becomes Ready like the harness's own fake Nodes.
pub const FAKE_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// The Stage files from tools/kwok, embedded so the harness does not depend
/// on where the repository is at run time.
const STAGES: &[(&str, &str)] = &[
    (
        "node-initialize.yaml",
        include_str!("../../kwok/node-initialize.yaml"),
    ),
    (
        "node-heartbeat-with-lease.yaml",
        include_str!("../../kwok/node-heartbeat-with-lease.yaml"),
    ),
    ("pod-ready.yaml", include_str!("../../kwok/pod-ready.yaml")),
    (
        "pod-complete.yaml",
        include_str!("../../kwok/pod-complete.yaml"),
    ),
    (
        "pod-delete.yaml",
        include_str!("../../kwok/pod-delete.yaml"),
    ),
];

pub(crate) async fn start(
    control_plane: &mut ControlPlane,
    pki: &crate::certs::Pki,
    files: &PkiFiles,
    options: &Options,
) -> Result<(), Error> {
    let server = control_plane.server_url().to_owned();
    let work = control_plane.dir().to_path_buf();
    let logs = work.join("logs");
    let write = |name: &str, contents: &str| -> Result<std::path::PathBuf, Error> {
        let path = work.join(name);
        std::fs::write(&path, contents).map_err(Error::io("write", &path))?;
        Ok(path)
    };

    // Each component gets the identity the default RBAC policy grants its
    // permissions to, so missing permissions show up as they would in a cluster.
    let kcm_kubeconfig = write(
        "kube-controller-manager.kubeconfig",
        &kubeconfig_yaml(
            &server,
            &pki.ca.cert_pem,
            "system:kube-controller-manager",
            &UserAuth::Certificate(&pki.controller_manager),
        ),
    )?;
    let scheduler_kubeconfig = write(
        "kube-scheduler.kubeconfig",
        &kubeconfig_yaml(
            &server,
            &pki.ca.cert_pem,
            "system:kube-scheduler",
            &UserAuth::Certificate(&pki.scheduler),
        ),
    )?;
    let kwok_dir = work.join("kwok");
    std::fs::create_dir_all(&kwok_dir).map_err(Error::io("create directory", &kwok_dir))?;
    let mut stage_args = Vec::new();
    for (name, contents) in STAGES {
        let path = write(&format!("kwok/{name}"), contents)?;
        stage_args.push(format!("--config={}", path.display()));
    }

    let [kcm_port, scheduler_port, kwok_port] = free_ports()?;
    let timeout = options.startup_timeout;

    let kcm_kubeconfig = kcm_kubeconfig.display().to_string();
    let kcm_args = vec![
        format!("--kubeconfig={kcm_kubeconfig}"),
        // Without these two it cannot authenticate requests to its own
        // /healthz and /metrics and logs warnings about it.
        format!("--authentication-kubeconfig={kcm_kubeconfig}"),
        format!("--authorization-kubeconfig={kcm_kubeconfig}"),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={kcm_port}"),
        format!(
            "--cert-dir={}",
            work.join("kube-controller-manager").display()
        ),
        "--leader-elect=false".to_owned(),
        "--use-service-account-credentials=true".to_owned(),
        format!(
            "--service-account-private-key-file={}",
            files.sa_private.display()
        ),
        format!("--root-ca-file={}", files.ca_cert.display()),
        // The CSR signer would otherwise look for /etc/kubernetes/ca/ca.pem.
        format!("--cluster-signing-cert-file={}", files.ca_cert.display()),
        format!("--cluster-signing-key-file={}", files.ca_key.display()),
        "--cluster-name=weblab-testenv".to_owned(),
    ];
    control_plane.spawn("kube-controller-manager", &kcm_args, &[], &logs)?;

    let scheduler_kubeconfig = scheduler_kubeconfig.display().to_string();
    let scheduler_args = vec![
        format!("--kubeconfig={scheduler_kubeconfig}"),
        format!("--authentication-kubeconfig={scheduler_kubeconfig}"),
        format!("--authorization-kubeconfig={scheduler_kubeconfig}"),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={scheduler_port}"),
        format!("--cert-dir={}", work.join("kube-scheduler").display()),
        "--leader-elect=false".to_owned(),
    ];
    control_plane.spawn("kube-scheduler", &scheduler_args, &[], &logs)?;

    let (key, value) = FAKE_NODE_ANNOTATION;
    let mut kwok_args = vec![
        format!(
            "--kubeconfig={}",
            control_plane.admin_kubeconfig().display()
        ),
        "--manage-all-nodes=false".to_owned(),
        format!("--manage-nodes-with-annotation-selector={key}={value}"),
        // Liveness through Node Leases, which the node lifecycle controller
        // prefers over status heartbeats; see node-heartbeat-with-lease.yaml.
        "--node-lease-duration-seconds=40".to_owned(),
        format!("--server-address=127.0.0.1:{kwok_port}"),
        // Fake addresses from the loopback range: should anything dial a
        // Pod or Node address, it reaches this machine and nothing else.
        "--cidr=127.100.0.1/16".to_owned(),
        "--node-ip=127.0.0.1".to_owned(),
    ];
    kwok_args.extend(stage_args);
    // kwok also loads ~/.kwok/kwok.yaml when it exists; a private HOME keeps
    // a developer's own kwok setup out of the tests.
    control_plane.spawn("kwok", &kwok_args, &[("HOME", &kwok_dir)], &logs)?;

    for (name, port) in [
        ("kube-controller-manager", kcm_port),
        ("kube-scheduler", scheduler_port),
        ("kwok", kwok_port),
    ] {
        let process = control_plane
            .process(name)
            .expect("the workload components were just started");
        wait_for_port(process, port, timeout).await?;
    }

    let client = control_plane.client().await?;
    create_fake_nodes(&client, options.fake_nodes).await?;
    wait_for_cluster(control_plane, &client, options.fake_nodes, timeout).await
}

async fn create_fake_nodes(client: &kube::Client, count: usize) -> Result<(), Error> {
    let nodes = kube::Api::<Node>::all(client.clone());
    let quantity = |s: &str| Quantity(s.to_owned());
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_owned(), quantity("32")),
        ("memory".to_owned(), quantity("256Gi")),
        ("pods".to_owned(), quantity("110")),
    ]
    .into();
    for index in 0..count {
        let name = format!("kwok-node-{index}");
        let (key, value) = FAKE_NODE_ANNOTATION;
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                annotations: Some([(key.to_owned(), value.to_owned())].into()),
                labels: Some(
                    [
                        ("type", "kwok"),
                        ("kubernetes.io/hostname", name.as_str()),
                        ("kubernetes.io/os", "linux"),
                        ("kubernetes.io/arch", "amd64"),
                        ("topology.kubernetes.io/zone", "testenv"),
                    ]
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            // A kubelet registers its Node with capacity; the scheduler needs it.
            status: Some(NodeStatus {
                allocatable: Some(resources.clone()),
                capacity: Some(resources.clone()),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        nodes
            .create(&PostParams::default(), &node)
            .await
            .map_err(Error::kube(format!("create fake node {name}")))?;
    }
    Ok(())
}

/// Waits until every fake Node is Ready without taints (kwok initialised it
/// and the node lifecycle controller lifted the not-ready taints) and the
/// `default` ServiceAccount exists (kube-controller-manager runs its
/// controllers; Pods cannot be admitted without that account).
async fn wait_for_cluster(
    control_plane: &ControlPlane,
    client: &kube::Client,
    fake_nodes: usize,
    timeout: Duration,
) -> Result<(), Error> {
    let nodes = kube::Api::<Node>::all(client.clone());
    let accounts = kube::Api::<ServiceAccount>::namespaced(client.clone(), "default");
    let deadline = Instant::now() + timeout;
    loop {
        control_plane.check_running()?;
        let (waiting_for, culprit, last_error) = match nodes.list(&Default::default()).await {
            Err(err) => ("fake nodes", "kwok", err.to_string()),
            Ok(list) => {
                let ready = list.items.iter().filter(|n| is_ready_untainted(n)).count();
                if ready < fake_nodes {
                    (
                        "fake nodes",
                        "kwok",
                        format!("{ready} of {fake_nodes} nodes Ready without taints"),
                    )
                } else {
                    match accounts.get_opt("default").await {
                        Ok(Some(_)) => return Ok(()),
                        Ok(None) => (
                            "default service account",
                            "kube-controller-manager",
                            "not created yet".to_owned(),
                        ),
                        Err(err) => (
                            "default service account",
                            "kube-controller-manager",
                            err.to_string(),
                        ),
                    }
                }
            }
        };
        if Instant::now() >= deadline {
            return Err(control_plane.timeout_error(waiting_for, timeout, last_error, culprit));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is_ready_untainted(node: &Node) -> bool {
    let untainted = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .is_none_or(Vec::is_empty);
    let ready = node
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    untainted && ready
}
