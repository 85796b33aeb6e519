//! One control plane per test binary.
//!
//! Starting a control plane takes seconds, so tests share one and isolate
//! themselves with [`ControlPlane::namespace`]. The first caller starts it on
//! its own runtime; that is safe because a [`ControlPlane`] holds no
//! runtime-bound resources (its children are plain `std::process::Child`ren
//! spawned from a dedicated thread, and clients are built per call). Statics
//! are never dropped: the processes die with the test binary (see
//! [`crate::process`]).

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::{ControlPlane, Error, Options};

type Shared = OnceCell<Result<ControlPlane, Arc<Error>>>;

static PLAIN: Shared = OnceCell::const_new();
static WORKLOADS: Shared = OnceCell::const_new();

/// This test binary's control plane with etcd and kube-apiserver only,
/// started on first use. A failed start is remembered, so every test reports
/// it instead of each trying again.
pub async fn shared() -> Result<&'static ControlPlane, Error> {
    get(&PLAIN, Options::default()).await
}

/// This test binary's control plane with the workload components
/// (kube-controller-manager, kube-scheduler, kwok and fake Nodes). It is a
/// different control plane from [`shared`]'s; a test binary should use one of
/// the two.
pub async fn shared_with_workloads() -> Result<&'static ControlPlane, Error> {
    get(&WORKLOADS, Options::default().workloads(true)).await
}

async fn get(cell: &'static Shared, options: Options) -> Result<&'static ControlPlane, Error> {
    cell.get_or_init(|| async { ControlPlane::start(options).await.map_err(Arc::new) })
        .await
        .as_ref()
        .map_err(|err| Error::Shared(Arc::clone(err)))
}
