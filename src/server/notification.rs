//! The Alertmanager webhook notification (payload version 4), as
//! Alertmanager sends it: the wire format, and the checks serde cannot make.
//! What it means for an alarm is the alarm controller's business.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The only payload version this receiver understands.
pub const PAYLOAD_VERSION: &str = "4";
/// Longest fingerprint accepted (Alertmanager's are 16 hex digits).
const MAX_FINGERPRINT: usize = 64;

/// A webhook notification, as Alertmanager sends it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The payload version; must be [`PAYLOAD_VERSION`].
    pub version: String,
    /// `firing` or `resolved`, for the group as a whole.
    pub status: AlertStatus,
    /// The group's identity (always sent by Alertmanager).
    #[serde(default)]
    pub group_key: String,
    /// How many of the group's alerts Alertmanager left out (`max_alerts`).
    #[serde(default)]
    pub truncated_alerts: u32,
    /// The labels every alert of the group has, the truncated ones too.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// The alerts of the group.
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// The alert's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it started firing.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// Alertmanager's identity of the alert.
    pub fingerprint: String,
}

/// Whether an alert fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertStatus {
    /// It fires.
    Firing,
    /// It stopped.
    Resolved,
}

impl Notification {
    /// Checks what serde cannot: the version and the fingerprints. The
    /// number of alerts is bounded by the body size only: refusing a large
    /// group would lose its evidence.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != PAYLOAD_VERSION {
            return Err(format!(
                "unsupported payload version {:?}; this receiver reads version {PAYLOAD_VERSION}",
                self.version
            ));
        }
        if let Some(alert) = self
            .alerts
            .iter()
            .find(|a| a.fingerprint.is_empty() || a.fingerprint.len() > MAX_FINGERPRINT)
        {
            return Err(format!(
                "alert fingerprint {:?} must have 1 to {MAX_FINGERPRINT} characters",
                alert.fingerprint
            ));
        }
        Ok(())
    }
}
