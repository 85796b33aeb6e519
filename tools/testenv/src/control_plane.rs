//! Starting, using and stopping one control plane.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::certs::Pki;
use crate::process::ManagedProcess;
use crate::tools::Tools;
use crate::workdir::WorkDir;
use crate::{Error, TestNamespace};

/// The service-account issuer and audience, the in-cluster default.
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(200);
/// How long `stop` lets each process shut down before killing it.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How to start a control plane. Build with [`Options::default`] and the
/// builder methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Also run kube-controller-manager, kube-scheduler and kwok with fake
    /// Nodes, so Pods are scheduled and Deployments roll out.
    pub workloads: bool,
    /// How many fake Nodes to create when `workloads` is on.
    pub fake_nodes: usize,
    /// Keep every file (kubeconfig, certificates, logs, etcd data) in this
    /// directory instead of a temporary one removed on drop.
    pub dir: Option<PathBuf>,
    /// Serve the API on this port instead of a free one.
    pub apiserver_port: Option<u16>,
    /// Take the binaries from here instead of `$WEBLAB_TOOLS_BIN` or
    /// `hack/tools.sh bindir`.
    pub tools_dir: Option<PathBuf>,
    /// How long each component may take to become ready.
    pub startup_timeout: Duration,
    /// CRD manifests (files or directories) to apply, and wait for, before
    /// the control plane counts as started.
    pub crds: Vec<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workloads: false,
            fake_nodes: 2,
            dir: None,
            apiserver_port: None,
            tools_dir: None,
            // Generous: two cores shared with cargo building other test binaries.
            startup_timeout: Duration::from_secs(90),
            crds: Vec::new(),
        }
    }
}

impl Options {
    /// Sets [`Options::workloads`].
    #[must_use]
    pub fn workloads(mut self, workloads: bool) -> Self {
        self.workloads = workloads;
        self
    }

    /// Sets [`Options::fake_nodes`].
    #[must_use]
    pub fn fake_nodes(mut self, count: usize) -> Self {
        self.fake_nodes = count;
        self
    }

    /// Sets [`Options::dir`].
    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Sets [`Options::apiserver_port`].
    #[must_use]
    pub fn apiserver_port(mut self, port: u16) -> Self {
        self.apiserver_port = Some(port);
        self
    }

    /// Sets [`Options::tools_dir`].
    #[must_use]
    pub fn tools_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tools_dir = Some(dir.into());
        self
    }

    /// Adds a file or directory of CRDs to [`Options::crds`].
    #[must_use]
    pub fn crds(mut self, path: impl Into<PathBuf>) -> Self {
        self.crds.push(path.into());
        self
    }

    /// Sets [`Options::startup_timeout`].
    #[must_use]
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }
}

/// A running control plane. Dropping it kills its processes and removes its
/// temporary directory.
///
/// It holds no runtime-bound resources, so one instance can serve tests that
/// each run their own tokio runtime: every call to [`ControlPlane::client`]
/// builds a fresh client on the caller's runtime.
#[derive(Debug)]
pub struct ControlPlane {
    // Declared before `work` so the processes are gone before their directory.
    processes: Vec<ManagedProcess>,
    work: WorkDir,
    tools: Tools,
    server: String,
    /// Written when starting; what the components and kubectl use.
    admin_kubeconfig: PathBuf,
    /// The same content, written only once the control plane is ready, so
    /// that whoever waits for the file (`make demo`) finds a working cluster.
    kubeconfig_path: PathBuf,
    kubeconfig_yaml: String,
    ca_pem: String,
    workloads: bool,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver (and the workload components if asked)
    /// and waits until the API server reports ready.
    pub async fn start(options: Options) -> Result<ControlPlane, Error> {
        // A free port can be taken by another process between reserving and
        // binding it; new ports fix that.
        let attempts = if options.apiserver_port.is_some() {
            1
        } else {
            3
        };
        let mut attempt = 1;
        loop {
            match Self::start_once(&options).await {
                Err(err) if err.is_port_clash() && attempt < attempts => {
                    tracing::warn!(%err, attempt, "port clash while starting the control plane, retrying");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(options: &Options) -> Result<ControlPlane, Error> {
        let started = Instant::now();
        let tools = Tools::locate(options.tools_dir.as_deref(), options.workloads)?;
        let work = match &options.dir {
            Some(dir) => WorkDir::kept(dir)?,
            None => WorkDir::temporary()?,
        };
        let pki = Pki::generate()?;
        let files = PkiFiles::write(&work, &pki)?;
        let logs = work.subdir("logs")?;

        let [etcd_client, etcd_peer, free_apiserver] = free_ports()?;
        let apiserver_port = options.apiserver_port.unwrap_or(free_apiserver);
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig_yaml = kubeconfig_yaml(
            &server,
            &pki.ca.cert_pem,
            "weblab-admin",
            &UserAuth::Certificate(&pki.admin),
        );
        let admin_kubeconfig = work.write("pki/admin.kubeconfig", &kubeconfig_yaml)?;
        let kubeconfig_path = work.path().join("kubeconfig");

        let mut control_plane = ControlPlane {
            processes: Vec::new(),
            work,
            tools,
            server,
            admin_kubeconfig,
            kubeconfig_path,
            kubeconfig_yaml,
            ca_pem: pki.ca.cert_pem.clone(),
            workloads: options.workloads,
        };
        // From here on an error drops `control_plane`, which stops whatever
        // was started.

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd_data = control_plane.work.path().join("etcd");
        let etcd_args = vec![
            "--name=testenv".to_owned(),
            format!("--data-dir={}", etcd_data.display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=testenv={peer_url}"),
            "--initial-cluster-state=new".to_owned(),
            // The data is thrown away; fsync only slows tests down.
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let etcd = control_plane.spawn("etcd", &etcd_args, &[], &logs)?;
        wait_for_port(etcd, etcd_client, options.startup_timeout).await?;

        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={apiserver_port}"),
            format!("--cert-dir={}", files.dir.display()),
            format!("--tls-cert-file={}", files.apiserver_cert.display()),
            format!("--tls-private-key-file={}", files.apiserver_key.display()),
            format!("--client-ca-file={}", files.ca_cert.display()),
            "--authorization-mode=Node,RBAC".to_owned(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", files.sa_public.display()),
            format!(
                "--service-account-signing-key-file={}",
                files.sa_private.display()
            ),
            format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            // The front-proxy (request header) setup kubeadm uses. Without it
            // the extension-apiserver-authentication ConfigMap lacks a CA, and
            // kube-controller-manager and kube-scheduler log errors about it.
            format!(
                "--requestheader-client-ca-file={}",
                files.front_proxy_ca_cert.display()
            ),
            "--requestheader-allowed-names=front-proxy-client".to_owned(),
            "--requestheader-username-headers=X-Remote-User".to_owned(),
            "--requestheader-group-headers=X-Remote-Group".to_owned(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_owned(),
            format!(
                "--proxy-client-cert-file={}",
                files.front_proxy_client_cert.display()
            ),
            format!(
                "--proxy-client-key-file={}",
                files.front_proxy_client_key.display()
            ),
            "--allow-privileged=true".to_owned(),
            // The default reconciler publishes the advertise address as the
            // `kubernetes` Service's endpoint and rejects loopback addresses,
            // logging an error every 10 s. Nothing in this cluster dials that
            // Service, so leave it without endpoints.
            "--endpoint-reconciler-type=none".to_owned(),
            "--profiling=false".to_owned(),
        ];
        control_plane.spawn("kube-apiserver", &apiserver_args, &[], &logs)?;
        control_plane.wait_ready(options.startup_timeout).await?;
        tracing::info!(
            server = %control_plane.server,
            elapsed = ?started.elapsed(),
            "kube-apiserver ready"
        );

        if options.workloads {
            crate::workloads::start(&mut control_plane, &pki, &files, options).await?;
            tracing::info!(elapsed = ?started.elapsed(), "workload components ready");
        }
        for crds in &options.crds {
            control_plane.install_crds(crds).await?;
        }
        control_plane.publish_kubeconfig()?;
        Ok(control_plane)
    }

    /// Writes `kubeconfig` atomically, so it never exists half-written.
    fn publish_kubeconfig(&self) -> Result<(), Error> {
        let staging = self.work.write("kubeconfig.tmp", &self.kubeconfig_yaml)?;
        std::fs::rename(&staging, &self.kubeconfig_path)
            .map_err(Error::io("write", &self.kubeconfig_path))
    }

    /// The admin kubeconfig the harness itself uses; exists from the start.
    pub(crate) fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    pub(crate) fn spawn(
        &mut self,
        name: &str,
        args: &[String],
        envs: &[(&str, &Path)],
        logs: &Path,
    ) -> Result<&ManagedProcess, Error> {
        let process = ManagedProcess::spawn(
            name,
            &self.tools.path(name),
            args,
            envs,
            logs.join(format!("{name}.log")),
        )?;
        self.processes.push(process);
        Ok(self.processes.last().expect("a process was just pushed"))
    }

    pub(crate) fn process(&self, name: &str) -> Option<&ManagedProcess> {
        self.processes.iter().find(|p| p.name() == name)
    }

    /// Fails with the tail of its log if any process has exited.
    pub(crate) fn check_running(&self) -> Result<(), Error> {
        self.processes
            .iter()
            .try_for_each(ManagedProcess::check_running)
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let client = self.client().await?;
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("a GET request with an empty body is valid");
            let last_error = match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.timeout_error(
                    "kube-apiserver /readyz",
                    timeout,
                    last_error,
                    "kube-apiserver",
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub(crate) fn timeout_error(
        &self,
        what: &str,
        timeout: Duration,
        last_error: String,
        component: &str,
    ) -> Error {
        let (log, log_tail) = match self.process(component) {
            Some(process) => (process.log().to_path_buf(), process.log_tail()),
            None => (PathBuf::new(), String::new()),
        };
        Error::Timeout {
            what: what.to_owned(),
            timeout,
            last_error,
            log,
            log_tail,
        }
    }

    /// The API server's URL, e.g. `https://127.0.0.1:41234`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// A kubeconfig file (certificates embedded) for the admin user
    /// `weblab-admin` in group `system:masters`. It is written once the
    /// control plane is ready (and [`Options::crds`] are established).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The directory holding the kubeconfig, certificates, logs and etcd data.
    pub fn dir(&self) -> &Path {
        self.work.path()
    }

    /// The PEM of the CA that signed the API server's and clients' certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The tool binaries in use (for `helm`, `kubectl`, ...).
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// Whether the workload components run.
    pub fn has_workloads(&self) -> bool {
        self.workloads
    }

    /// The running processes, in start order.
    pub fn processes(&self) -> &[ManagedProcess] {
        &self.processes
    }

    /// Freezes kube-apiserver until the returned guard is dropped: requests
    /// to it connect but are never answered, as in an API-server or etcd
    /// outage. Other tests sharing this control plane stall too, so a test
    /// that pauses it should start a control plane of its own.
    pub fn pause_apiserver(&self) -> PausedProcess<'_> {
        let process = self
            .processes
            .iter()
            .find(|process| process.name() == "kube-apiserver")
            .expect("every control plane runs kube-apiserver");
        process.pause();
        PausedProcess(process)
    }

    /// A client configuration for the admin user.
    pub async fn config(&self) -> Result<kube::Config, Error> {
        config_from_yaml(&self.kubeconfig_yaml, &self.admin_kubeconfig).await
    }

    /// A new admin client, bound to the caller's tokio runtime.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_from(self.config().await?)
    }

    /// A client that impersonates `user` (and `groups`), to test what RBAC
    /// lets that identity do, e.g. `system:serviceaccount:<ns>:<name>`.
    pub async fn client_impersonating(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<kube::Client, Error> {
        let mut config = self.config().await?;
        config.auth_info.impersonate = Some(user.to_owned());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups =
                Some(groups.iter().map(|g| (*g).to_owned()).collect());
        }
        client_from(config)
    }

    /// A client that authenticates with a bearer token (e.g. a service
    /// account token from a TokenRequest) and no client certificate.
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client, Error> {
        let yaml = kubeconfig_yaml(&self.server, &self.ca_pem, "token", &UserAuth::Token(token));
        client_from(config_from_yaml(&yaml, &self.admin_kubeconfig).await?)
    }

    /// `kubectl --kubeconfig <this control plane>`, ready for more arguments.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.tools.path("kubectl"));
        command.arg("--kubeconfig").arg(&self.admin_kubeconfig);
        command
    }

    /// `helm --kubeconfig <this control plane>` with its cache, config and
    /// data directories inside the control plane's directory, so tests never
    /// touch the user's helm setup.
    pub fn helm(&self) -> Command {
        let mut command = Command::new(self.tools.path("helm"));
        let home = self.work.path().join("helm");
        command
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        command
    }

    /// Applies the CRDs in `path` (a file or a directory of manifests) with
    /// `kubectl apply --server-side` and waits until every CRD is established.
    pub async fn install_crds(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref().to_string_lossy().into_owned();
        self.run_kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &path])
            .await?;
        self.run_kubectl(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd",
            "--all",
        ])
        .await?;
        Ok(())
    }

    /// Runs kubectl with `args` and returns its stdout; fails on a non-zero exit.
    pub async fn run_kubectl(&self, args: &[&str]) -> Result<String, Error> {
        let mut command = tokio::process::Command::from(self.kubectl());
        command.args(args).kill_on_drop(true);
        let output = command.output().await.map_err(|source| Error::Spawn {
            name: "kubectl".to_owned(),
            binary: self.tools.path("kubectl"),
            source,
        })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Kubectl {
                args: args.join(" "),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// Creates a namespace named `<prefix>-<random>` and returns a guard that
    /// deletes it when dropped (best effort, without waiting).
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, Error> {
        let name = TestNamespace::random_name(prefix)?;
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("weblab.dev/test-namespace".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let api = kube::Api::<Namespace>::all(self.client().await?);
        api.create(&PostParams::default(), &namespace)
            .await
            .map_err(Error::kube(format!("create namespace {name}")))?;
        Ok(TestNamespace::new(
            name,
            self.tools.path("kubectl"),
            self.admin_kubeconfig.clone(),
        ))
    }

    /// Stops every process, newest first, each with SIGTERM and a grace
    /// period before SIGKILL, then removes the temporary directory.
    pub fn stop(self) {
        for process in self.processes.iter().rev() {
            tracing::debug!(name = process.name(), "stopping");
            process.stop(STOP_GRACE);
        }
    }
}

/// A process frozen by [`ControlPlane::pause_apiserver`]; resumed on drop,
/// also when the test panics.
#[must_use = "the process resumes when this guard is dropped"]
pub struct PausedProcess<'a>(&'a ManagedProcess);

impl Drop for PausedProcess<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Newest first: the apiserver should not outlive etcd's logs of it,
        // and nothing needs a graceful shutdown here.
        for process in self.processes.iter().rev() {
            process.stop(Duration::ZERO);
        }
    }
}

/// Files written from the PKI, as the components' flags need them.
pub(crate) struct PkiFiles {
    pub(crate) dir: PathBuf,
    pub(crate) ca_cert: PathBuf,
    pub(crate) ca_key: PathBuf,
    pub(crate) apiserver_cert: PathBuf,
    pub(crate) apiserver_key: PathBuf,
    pub(crate) front_proxy_ca_cert: PathBuf,
    pub(crate) front_proxy_client_cert: PathBuf,
    pub(crate) front_proxy_client_key: PathBuf,
    pub(crate) sa_private: PathBuf,
    pub(crate) sa_public: PathBuf,
}

impl PkiFiles {
    fn write(work: &WorkDir, pki: &Pki) -> Result<PkiFiles, Error> {
        let dir = work.subdir("pki")?;
        Ok(PkiFiles {
            ca_cert: work.write("pki/ca.crt", &pki.ca.cert_pem)?,
            ca_key: work.write("pki/ca.key", &pki.ca.key_pem)?,
            apiserver_cert: work.write("pki/apiserver.crt", &pki.apiserver.cert_pem)?,
            apiserver_key: work.write("pki/apiserver.key", &pki.apiserver.key_pem)?,
            front_proxy_ca_cert: work
                .write("pki/front-proxy-ca.crt", &pki.front_proxy_ca.cert_pem)?,
            front_proxy_client_cert: work.write(
                "pki/front-proxy-client.crt",
                &pki.front_proxy_client.cert_pem,
            )?,
            front_proxy_client_key: work.write(
                "pki/front-proxy-client.key",
                &pki.front_proxy_client.key_pem,
            )?,
            sa_private: work.write("pki/sa.key", &pki.service_account_key_pem)?,
            sa_public: work.write("pki/sa.pub", &pki.service_account_public_pem)?,
            dir,
        })
    }
}

/// How a kubeconfig user authenticates.
pub(crate) enum UserAuth<'a> {
    Certificate(&'a crate::certs::CertPair),
    Token(&'a str),
}

/// A single-context kubeconfig with everything embedded, so it can be copied
/// or handed to another process without its files.
pub(crate) fn kubeconfig_yaml(
    server: &str,
    ca_pem: &str,
    user: &str,
    auth: &UserAuth<'_>,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user_fields = match auth {
        UserAuth::Certificate(pair) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&pair.cert_pem),
            b64(&pair.key_pem)
        ),
        // JSON strings are valid YAML scalars and escape whatever the token holds.
        UserAuth::Token(token) => format!("    token: {}\n", serde_json::Value::from(*token)),
    };
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: weblab-testenv\n\
         \x20 cluster:\n\
         \x20   server: {server}\n\
         \x20   certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n\
         \x20 user:\n\
         {user_fields}\
         contexts:\n\
         - name: weblab-testenv\n\
         \x20 context:\n\
         \x20   cluster: weblab-testenv\n\
         \x20   user: {user}\n\
         current-context: weblab-testenv\n",
        ca = b64(ca_pem),
    )
}

async fn config_from_yaml(yaml: &str, path: &Path) -> Result<kube::Config, Error> {
    let kubeconfig_error = |source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(kubeconfig_error)?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(kubeconfig_error)
}

fn client_from(config: kube::Config) -> Result<kube::Client, Error> {
    kube::Client::try_from(config).map_err(Error::kube("build a client"))
}

/// Reserves `N` distinct free loopback ports. All listeners are held until
/// every port is chosen, so the ports differ from each other.
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Port)?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(Error::Port)?.port();
    }
    Ok(ports)
}

/// Waits until something accepts connections on `port`, failing early if
/// `process` exits.
pub(crate) async fn wait_for_port(
    process: &ManagedProcess,
    port: u16,
    timeout: Duration,
) -> Result<(), Error> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        process.check_running()?;
        match TcpStream::connect_timeout(&address, POLL) {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(Error::Timeout {
                    what: format!("{} on port {port}", process.name()),
                    timeout,
                    last_error: err.to_string(),
                    log: process.log().to_path_buf(),
                    log_tail: process.log_tail(),
                });
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}
