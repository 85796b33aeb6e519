//! Which alarms attach to a change: the one rule every owner (dial,
//! Rollback, MergeTrainPause), every alarm-to-owner mapping and the served
//! view use.
//!
//! An `AlarmSelection` attaches the alarms it names and those its selector
//! matches, in the owner's namespace. The API server rejects selectors that
//! do not parse (CEL on the selector); one stored before that rule attaches
//! nothing through its selector (the names still attach), and the owner
//! reports it among what is missing.

use std::sync::Arc;

use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use crate::api::{alarm::Alarm, common::AlarmSelection};

/// Whether `selection` attaches `alarm` (whose namespace the caller has
/// matched to the owner's).
pub fn attaches(selection: &AlarmSelection, alarm: &Alarm) -> bool {
    selection
        .selects(&alarm.name_any(), alarm.labels())
        .unwrap_or(false)
}

/// The alarms in `namespace` that `selection` attaches, sorted by name.
/// Named alarms that do not exist, and a selector that does not parse
/// (`what` names it in the sentence), are added to `missing` once each.
pub fn attached(
    selection: &AlarmSelection,
    what: &str,
    namespace: &str,
    store: &Store<Alarm>,
    missing: &mut Vec<String>,
) -> Vec<Arc<Alarm>> {
    let mut notes: Vec<String> = selection
        .names
        .iter()
        .filter(|name| store.get(&ObjectRef::new(name).within(namespace)).is_none())
        .map(|name| format!("Alarm {name:?} not found"))
        .collect();
    if let Some(error) = selection.selector_error() {
        notes.push(format!("{what} is invalid: {error}"));
    }
    for note in notes {
        if !missing.contains(&note) {
            missing.push(note);
        }
    }
    let mut alarms: Vec<Arc<Alarm>> = store
        .state()
        .into_iter()
        .filter(|alarm| alarm.namespace().as_deref() == Some(namespace))
        .filter(|alarm| attaches(selection, alarm))
        .collect();
    alarms.sort_by_key(|alarm| alarm.name_any());
    alarms
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn alarm(namespace: &str, name: &str, team: &str) -> Alarm {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1", "kind": "Alarm",
            "metadata": {"namespace": namespace, "name": name, "labels": {"team": team}},
            "spec": {"severity": "Sev2",
                     "alertmanager": {"matchers": [{"name": "alertname", "value": "E"}]}},
        }))
        .expect("a valid Alarm")
    }

    fn store(alarms: Vec<Alarm>) -> Store<Alarm> {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for alarm in alarms {
            writer.apply_watcher_event(&watcher::Event::InitApply(alarm));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        store
    }

    fn selection(names: &[&str], operator: &str, values: Option<Vec<String>>) -> AlarmSelection {
        AlarmSelection {
            names: names.iter().map(|n| n.to_string()).collect(),
            selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "team".into(),
                    operator: operator.into(),
                    values,
                }]),
                match_labels: None,
            }),
        }
    }

    #[test]
    fn names_and_selector_attach_the_union_in_the_owners_namespace_sorted() {
        let store = store(vec![
            alarm("a", "zeta", "web"),
            alarm("a", "beta", "db"),
            alarm("a", "alpha", "web"),
            alarm("b", "alpha", "web"),
        ]);
        let selection = selection(&["beta", "gone"], "In", Some(vec!["web".into()]));
        let mut missing = Vec::new();
        let names: Vec<String> =
            attached(&selection, "the alarm selector", "a", &store, &mut missing)
                .iter()
                .map(|a| a.name_any())
                .collect();
        assert_eq!(names, ["alpha", "beta", "zeta"]);
        assert_eq!(missing, ["Alarm \"gone\" not found"]);
        // Reported once, however many selections share the list.
        attached(&selection, "the alarm selector", "a", &store, &mut missing);
        assert_eq!(missing.len(), 1);
    }

    #[test]
    fn a_selector_that_does_not_parse_attaches_nothing_but_the_names_and_is_reported() {
        let store = store(vec![alarm("a", "named", "web"), alarm("a", "other", "web")]);
        // `In` without values: stored before the API server's rule, perhaps.
        let selection = selection(&["named"], "In", None);
        let mut missing = Vec::new();
        let attached = attached(
            &selection,
            "the resumeWhen alarm selector",
            "a",
            &store,
            &mut missing,
        );
        assert_eq!(attached.len(), 1);
        assert_eq!(attached[0].name_any(), "named");
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0].starts_with("the resumeWhen alarm selector is invalid: "),
            "{missing:?}"
        );
        // Every user of the rule agrees: the mapping, the view, the owner.
        assert!(!attaches(&selection, &alarm("a", "other", "web")));
        assert!(attaches(&selection, &alarm("a", "named", "db")));
    }
}
