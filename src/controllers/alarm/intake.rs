//! The Alertmanager webhook's intake: which alarms a notification concerns
//! (their matchers, and the namespace label when one is configured), and
//! the status write of each, queued per alarm in the [`AlertInbox`]. The
//! server receives and answers; this decides.

use std::sync::Arc;

use futures::{FutureExt, future::BoxFuture, future::try_join_all};
use kube::{ResourceExt, runtime::reflector::Store};

use super::{
    alertmanager::{AlarmFilter, Matchers, delivery},
    inbox::AlertInbox,
};
use crate::{
    api::Alarm,
    controllers::Context,
    server::{alertmanager::Intake, notification::Notification},
};

/// Records notifications on the alarms of the watched scopes.
pub struct WebhookIntake {
    inbox: AlertInbox,
    alarms: Vec<Store<Alarm>>,
    namespace_label: Option<String>,
}

impl WebhookIntake {
    /// An intake over `alarms` (one cache per watched scope); each write
    /// is bounded by `write_timeout`. With `namespace_label`, an alert only
    /// concerns alarms in the namespace that label names.
    pub fn new(
        ctx: Arc<Context>,
        alarms: Vec<Store<Alarm>>,
        namespace_label: Option<String>,
        write_timeout: std::time::Duration,
    ) -> Self {
        WebhookIntake {
            inbox: AlertInbox::new(ctx, write_timeout),
            alarms,
            namespace_label,
        }
    }
}

impl Intake for WebhookIntake {
    fn record(&self, notification: &Notification) -> BoxFuture<'static, Result<usize, String>> {
        let namespace_label = self.namespace_label.as_deref();
        let mut writes = Vec::new();
        for alarm in self.alarms.iter().flat_map(Store::state) {
            let Some(source) = &alarm.spec.alertmanager else {
                continue;
            };
            // An alarm whose matchers do not compile is reported by its own
            // reconciliation; it matches nothing here.
            let Ok(matchers) = Matchers::compile(&source.matchers) else {
                continue;
            };
            let namespace = alarm.namespace().unwrap_or_default();
            let filter = AlarmFilter {
                matchers: &matchers,
                namespace_label,
                namespace: &namespace,
            };
            let counted = |key: &str| {
                alarm
                    .status
                    .as_ref()
                    .is_some_and(|status| status.alert_groups.iter().any(|g| g.group_key == key))
            };
            if let Some(delivery) = delivery(notification, &filter, counted) {
                let inbox = self.inbox.clone();
                writes.push(async move { inbox.record(alarm, delivery).await });
            }
        }
        let alarms = writes.len();
        async move {
            try_join_all(writes)
                .await
                .map(|_| alarms)
                .map_err(|error| error.to_string())
        }
        .boxed()
    }
}
