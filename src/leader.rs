//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it:
//! the holder renews the lease; a candidate takes it over once it has seen
//! the same record unchanged for a whole lease duration (measured on its own
//! clock, so clock skew between replicas does not matter); conflicts are
//! settled by the API server's optimistic concurrency on `resourceVersion`.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// How a replica takes part in the election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease lasts without renewal before others may take it.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// How often candidates retry and the holder renews.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Settings with client-go's usual timings (15s, 10s, 2s).
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        LeaseSettings {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

/// The last record a candidate saw, and when it first saw it.
struct Observed {
    resource_version: Option<String>,
    since: Instant,
}

impl LeaderElector {
    /// An elector for the Lease named in `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.settings.name)
    }

    /// Waits until this replica holds the lease. Returns `false` when
    /// `shutdown` fires first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Result<bool> {
        let mut observed: Option<Observed> = None;
        loop {
            match self.try_acquire(&mut observed).await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease_name(), identity = %self.settings.identity, "acquired leader lease");
                    return Ok(true);
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, lease = %self.lease_name(), "leader election attempt failed")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                () = sleep(self.settings.retry_period) => {}
            }
        }
    }

    async fn try_acquire(&self, observed: &mut Option<Observed>) -> Result<bool> {
        let now = MicroTime(jiff::Timestamp::now());
        let Some(current) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(Error::Kube)?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(Error::Kube(error)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let mine = holder == self.settings.identity;
        let version = current.metadata.resource_version.clone();
        let free = holder.is_empty() || mine;
        if !free {
            // Only a record left unchanged for a full lease duration, as seen
            // by this replica, counts as expired.
            let duration = spec
                .lease_duration_seconds
                .and_then(|secs| u64::try_from(secs).ok())
                .map_or(self.settings.lease_duration, Duration::from_secs);
            let seen = observed.get_or_insert(Observed {
                resource_version: version.clone(),
                since: Instant::now(),
            });
            if seen.resource_version != version {
                *seen = Observed {
                    resource_version: version,
                    since: Instant::now(),
                };
                return Ok(false);
            }
            if seen.since.elapsed() < duration {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired_at = if mine {
            spec.acquire_time.unwrap_or_else(|| now.clone())
        } else {
            now.clone()
        };
        let mut next = current;
        next.spec = Some(self.held_spec(acquired_at, now, transitions));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(Error::Kube(error)),
        }
    }

    fn held_spec(
        &self,
        acquire_time: MicroTime,
        renew_time: MicroTime,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            // Whole seconds on the wire: round up, so that a sub-second setting never
            // records a zero-length lease that others may take at once.
            lease_duration_seconds: i32::try_from(
                self.settings.lease_duration.as_millis().div_ceil(1000),
            )
            .ok(),
            acquire_time: Some(acquire_time),
            renew_time: Some(renew_time),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Renews the lease until `shutdown` fires (returns `Ok`) or renewal
    /// fails for longer than the renew deadline (returns [`Error::LeaseLost`]).
    pub async fn hold(&self, shutdown: &CancellationToken) -> Result<()> {
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = sleep(self.settings.retry_period) => {}
            }
            match self.renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => {
                    return Err(Error::LeaseLost {
                        lease: self.lease_name(),
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, lease = %self.lease_name(), "cannot renew leader lease")
                }
            }
            if last_renewal.elapsed() > self.settings.renew_deadline {
                return Err(Error::LeaseLost {
                    lease: self.lease_name(),
                });
            }
        }
    }

    /// Renews the lease; `false` when another replica holds it now.
    async fn renew(&self) -> Result<bool> {
        let mut lease = self
            .api
            .get(&self.settings.name)
            .await
            .map_err(Error::Kube)?;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(false);
        }
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(Error::Kube(error)),
        }
    }

    /// Gives the lease up so that another replica takes over at once instead
    /// of after a lease duration (a rolling update hands over in about a
    /// second).
    pub async fn release(&self) -> Result<()> {
        let mut lease = self
            .api
            .get(&self.settings.name)
            .await
            .map_err(Error::Kube)?;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
            .map_err(Error::Kube)?;
        tracing::info!(lease = %self.lease_name(), "released leader lease");
        Ok(())
    }
}
