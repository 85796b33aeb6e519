//! The dials the assignment endpoints serve: read from the controller's
//! informer caches (no API-server round trip per request) and compiled once
//! per dial change into what the request path needs, so that a request costs
//! a cache lookup, a hash of the unit and a search of the bucket runs.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use kube::runtime::reflector::{ObjectRef, Store};

use crate::{
    api::{Alarm, WeblabDial, weblab_dial::RealmAllocation},
    assignment::{Assignment, AssignmentReason, DialRules, RealmLayout},
    controllers::{
        attach,
        weblab_dial::{plan, reading},
    },
    view::firing::Firing,
};

/// A dial compiled for the request path: the spec's rules (salt, control,
/// override index) and each realm's served bucket layout from the status.
#[derive(Debug)]
pub struct CompiledDial {
    /// The dial's namespace.
    pub namespace: String,
    /// The dial's name: the OFREP flag key.
    pub name: String,
    /// The experiment's id (`spec.weblab`).
    pub weblab: String,
    /// `metadata.generation`: the spec this answer follows.
    pub generation: i64,
    /// `status.observedGeneration`: the spec the served layouts follow.
    pub observed_generation: Option<i64>,
    resource_version: String,
    /// The [`Firing`] epoch this compilation took the alarms from.
    alarm_epoch: u64,
    rules: DialRules,
    /// In `spec.realms` order.
    realms: Vec<CompiledRealm>,
}

/// One realm of a compiled dial.
#[derive(Debug)]
pub struct CompiledRealm {
    /// The realm's name.
    pub name: String,
    /// The served layout; `None` until the controller wrote one (or while the
    /// written one is unreadable), when control is served.
    layout: Option<RealmLayout>,
}

/// Why a dial cannot be compiled. The API server's validation makes both
/// impossible; they are checked so that a dial written around it cannot make
/// the request path panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileError {
    /// `spec.treatments` is empty: there is no control to serve.
    NoTreatments,
    /// `spec.realms` is empty: no request can name a realm.
    NoRealms,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompileError::NoTreatments => "it lists no treatments (spec.treatments)",
            CompileError::NoRealms => "it lists no realms (spec.realms)",
        })
    }
}

/// Why a request's realm does not select one of the dial's realms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RealmError {
    /// The dial has several realms and the request named none.
    Required,
    /// The request named a realm the dial does not list.
    Unknown(String),
}

impl CompiledDial {
    /// Compiles `dial`: the override index and the per-realm layouts are
    /// built here, once per change, never per request.
    #[cfg(test)]
    pub fn compile(dial: &WeblabDial) -> Result<CompiledDial, CompileError> {
        let served = dial.status.as_ref().map_or(&[][..], |s| &s.realms[..]);
        Self::compile_serving(dial, served, 0)
    }

    /// Compiles `dial` to serve `served` rather than its status' realms
    /// (a rollback not yet written), as of the alarm epoch `alarm_epoch`.
    fn compile_serving(
        dial: &WeblabDial,
        served: &[RealmAllocation],
        alarm_epoch: u64,
    ) -> Result<CompiledDial, CompileError> {
        let spec = &dial.spec;
        let rules = DialRules::from_spec(spec).ok_or(CompileError::NoTreatments)?;
        if spec.realms.is_empty() {
            return Err(CompileError::NoRealms);
        }
        let namespace = dial.metadata.namespace.clone().unwrap_or_default();
        let name = dial.metadata.name.clone().unwrap_or_default();
        let realms = spec
            .realms
            .iter()
            .map(|realm| {
                let layout = served
                    .iter()
                    .find(|entry| entry.realm == *realm)
                    .and_then(|entry| match RealmLayout::from_status(entry) {
                        Ok(layout) => layout,
                        Err(error) => {
                            // Logged once per dial change (compilation is
                            // cached); control is the safe answer meanwhile.
                            tracing::warn!(
                                %error, namespace = %namespace, dial = %name, realm = %realm,
                                "the served bucket layout is unreadable; serving control in this realm"
                            );
                            None
                        }
                    });
                CompiledRealm {
                    name: realm.clone(),
                    layout,
                }
            })
            .collect();
        Ok(CompiledDial {
            namespace,
            name,
            weblab: spec.weblab.clone(),
            generation: dial.metadata.generation.unwrap_or_default(),
            observed_generation: dial.status.as_ref().and_then(|s| s.observed_generation),
            resource_version: dial.metadata.resource_version.clone().unwrap_or_default(),
            alarm_epoch,
            rules,
            realms,
        })
    }

    /// The realm a request selects: the named one, or the only one when the
    /// dial has a single realm and the request names none.
    pub fn realm(&self, requested: Option<&str>) -> Result<&CompiledRealm, RealmError> {
        match requested {
            Some(wanted) => self
                .realms
                .iter()
                .find(|realm| realm.name == wanted)
                .ok_or_else(|| RealmError::Unknown(wanted.to_owned())),
            None => match self.realms.as_slice() {
                [only] => Ok(only),
                _ => Err(RealmError::Required),
            },
        }
    }

    /// The dial's realms, comma-separated, for error messages.
    pub fn realm_list(&self) -> String {
        let names: Vec<&str> = self.realms.iter().map(|r| r.name.as_str()).collect();
        names.join(", ")
    }

    /// The treatment of `unit`, which belongs to `segments`, in `realm`.
    /// Allocates nothing.
    pub fn assign<'a>(
        &'a self,
        realm: &'a CompiledRealm,
        unit: &str,
        segments: &[String],
    ) -> Assignment<'a> {
        self.rules.assign(realm.layout.as_ref(), unit, segments)
    }

    /// `namespace/name`, for messages.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The wire name of an assignment reason in the native API.
pub fn reason_label(reason: AssignmentReason) -> &'static str {
    match reason {
        AssignmentReason::Override => "override",
        AssignmentReason::Allocation => "allocation",
        AssignmentReason::Rollback => "rollback",
        AssignmentReason::Default => "default",
    }
}

/// A cached dial and its compiled view (or why it has none).
pub type ServedDial = (Arc<WeblabDial>, Result<Arc<CompiledDial>, CompileError>);

/// The served dials: the informer caches plus the compiled view of each
/// dial, keyed by namespace and name and rebuilt when the cache holds another
/// `resourceVersion`. Entries of deleted dials are dropped when looked up and
/// pruned in bulk, so the map stays near the number of dials that exist.
pub struct DialCatalog {
    stores: Vec<Store<WeblabDial>>,
    /// The alarm caches, and what may fire in them: a dial whose attached
    /// alarm fires is served rolled back at once, as its controller is about
    /// to write it.
    alarms: Vec<Store<Alarm>>,
    firing: Arc<Firing>,
    ready: Arc<AtomicBool>,
    /// namespace -> name -> compiled dial; nested so that a lookup by `&str`
    /// allocates nothing.
    compiled: RwLock<HashMap<String, HashMap<String, Arc<CompiledDial>>>>,
}

impl DialCatalog {
    /// A catalog over the controller's caches; it serves once `ready` is set.
    pub fn new(stores: Vec<Store<WeblabDial>>, ready: Arc<AtomicBool>) -> Self {
        DialCatalog {
            stores,
            alarms: Vec::new(),
            firing: Arc::default(),
            ready,
            compiled: RwLock::default(),
        }
    }

    /// Serves dials rolled back as soon as an attached alarm in `alarms`
    /// fires (by `firing`), rather than after the status write.
    pub fn with_alarms(mut self, alarms: Vec<Store<Alarm>>, firing: Arc<Firing>) -> Self {
        self.alarms = alarms;
        self.firing = firing;
        self
    }

    /// Whether the caches have synced, so that "not found" means not found.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The compiled dial `namespace/name`; `None` when no watched cache
    /// holds it.
    pub fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Result<Arc<CompiledDial>, CompileError>> {
        match self.cached_dial(namespace, name) {
            Some(dial) => Some(self.compiled_for(&dial)),
            None => {
                self.forget(namespace, name);
                None
            }
        }
    }

    /// Every cached dial in `namespace`, sorted by name so that a bulk
    /// answer (and its ETag) does not depend on the caches' iteration order.
    pub fn all(&self, namespace: &str) -> Vec<ServedDial> {
        let mut dials: Vec<Arc<WeblabDial>> = self
            .stores
            .iter()
            .flat_map(|store| {
                store.state_filter(|dial| dial.metadata.namespace.as_deref() == Some(namespace))
            })
            .collect();
        dials.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        dials
            .into_iter()
            .map(|dial| {
                let compiled = self.compiled_for(&dial);
                (dial, compiled)
            })
            .collect()
    }

    fn cached_dial(&self, namespace: &str, name: &str) -> Option<Arc<WeblabDial>> {
        let key = ObjectRef::new(name).within(namespace);
        self.stores.iter().find_map(|store| store.get(&key))
    }

    /// The compiled view of `dial`, compiled now if the cached one is for
    /// another `resourceVersion`.
    fn compiled_for(&self, dial: &WeblabDial) -> Result<Arc<CompiledDial>, CompileError> {
        let epoch = self.firing.epoch();
        let namespace = dial.metadata.namespace.as_deref().unwrap_or_default();
        let name = dial.metadata.name.as_deref().unwrap_or_default();
        let version = dial
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default();
        let hit = self
            .compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .and_then(|names| names.get(name))
            .filter(|compiled| {
                compiled.resource_version == version && compiled.alarm_epoch == epoch
            })
            .cloned();
        if let Some(compiled) = hit {
            return Ok(compiled);
        }
        // Compiled outside the lock: other requests keep being served. Two
        // requests may compile the same change; the last insert wins, and a
        // stale one is replaced by the next request that notices.
        let compiled = Arc::new(match self.rolled_back_now(dial, namespace) {
            Some(realms) => CompiledDial::compile_serving(dial, &realms, epoch)?,
            None => {
                let served = dial.status.as_ref().map_or(&[][..], |s| &s.realms[..]);
                CompiledDial::compile_serving(dial, served, epoch)?
            }
        });
        let mut map = self
            .compiled
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(namespace.to_owned())
            .or_default()
            .insert(name.to_owned(), compiled.clone());
        self.prune(&mut map);
        Ok(compiled)
    }

    /// The realms `dial` serves once the attached alarms that fire now have
    /// rolled it back, when they change what its status says: each
    /// candidate is read fresh from the alarm cache.
    fn rolled_back_now(&self, dial: &WeblabDial, namespace: &str) -> Option<Vec<RealmAllocation>> {
        let readings: Vec<plan::AlarmReading> = self
            .firing
            .in_namespace(namespace)
            .iter()
            .filter_map(|hint| {
                let key = ObjectRef::from(hint.as_ref());
                self.alarms.iter().find_map(|store| store.get(&key))
            })
            .filter(|alarm| attach::attaches(&dial.spec.rollback.alarms, alarm))
            .map(|alarm| reading(&alarm))
            .collect();
        if readings.is_empty() {
            return None;
        }
        let status = dial.status.clone().unwrap_or_default();
        plan::rolled_back_realms(
            &dial.spec,
            dial.metadata.generation.unwrap_or_default(),
            &status,
            &readings,
            jiff::Timestamp::now(),
        )
    }

    /// Drops the compiled entry of a dial that is gone from the caches.
    fn forget(&self, namespace: &str, name: &str) {
        let present = self
            .compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .is_some_and(|names| names.contains_key(name));
        if present {
            let mut map = self
                .compiled
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(names) = map.get_mut(namespace) {
                names.remove(name);
                if names.is_empty() {
                    map.remove(namespace);
                }
            }
        }
    }

    /// Removes entries of deleted dials once they are more than an eighth of
    /// the dials that exist (and more than a few), so that the work is
    /// amortised over the deletions and the map stays bounded by the caches.
    fn prune(&self, map: &mut HashMap<String, HashMap<String, Arc<CompiledDial>>>) {
        let entries: usize = map.values().map(HashMap::len).sum();
        let live: usize = self.stores.iter().map(Store::len).sum();
        if entries <= live + (live / 8).max(16) {
            return;
        }
        for (namespace, names) in map.iter_mut() {
            names.retain(|name, _| self.cached_dial(namespace, name).is_some());
        }
        map.retain(|_, names| !names.is_empty());
    }

    #[cfg(test)]
    pub(crate) fn set_ready_for_test(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    #[cfg(test)]
    fn compiled_entries(&self) -> usize {
        self.compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(HashMap::len)
            .sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use kube::runtime::{reflector, reflector::store::Writer, watcher};

    use super::*;

    /// A dial as the informer would hold it.
    pub(crate) fn dial(
        namespace: &str,
        name: &str,
        version: &str,
        json: serde_json::Value,
    ) -> WeblabDial {
        let mut object = serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1",
            "kind": "WeblabDial",
            "metadata": {
                "namespace": namespace,
                "name": name,
                "resourceVersion": version,
                "generation": 3,
            },
        });
        if let (Some(object), Some(fields)) = (object.as_object_mut(), json.as_object()) {
            for (key, value) in fields {
                object.insert(key.clone(), value.clone());
            }
        }
        serde_json::from_value(object).expect("a valid WeblabDial")
    }

    /// Two realms: NA half and half, EU not laid out yet; `alice` and the
    /// `beta` segment pinned to T1.
    pub(crate) fn two_realm_dial(namespace: &str, name: &str, version: &str) -> WeblabDial {
        dial(
            namespace,
            name,
            version,
            serde_json::json!({
                "spec": {
                    "weblab": "CHECKOUT_1",
                    "treatments": ["C", "T1"],
                    "realms": ["NA", "EU"],
                    "allocation": {"C": 50, "T1": 50},
                    "overrides": [{"treatment": "T1", "units": ["alice"], "segments": ["beta"]}],
                },
                "status": {
                    "observedGeneration": 2,
                    "realms": [{
                        "realm": "NA",
                        "allocation": {"C": 50, "T1": 50},
                        "buckets": [
                            {"treatment": "C", "start": 0, "end": 5000},
                            {"treatment": "T1", "start": 5000, "end": 10000},
                        ],
                    }],
                },
            }),
        )
    }

    /// Serves `router` on a loopback port; the base URL.
    pub(crate) async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("a bound address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{address}")
    }

    pub(crate) fn catalog_with(dials: &[WeblabDial]) -> (DialCatalog, Writer<WeblabDial>) {
        let (store, mut writer) = reflector::store();
        for dial in dials {
            writer.apply_watcher_event(&watcher::Event::Apply(dial.clone()));
        }
        let catalog = DialCatalog::new(vec![store], Arc::new(AtomicBool::new(true)));
        (catalog, writer)
    }

    fn found(lookup: Option<Result<Arc<CompiledDial>, CompileError>>) -> Arc<CompiledDial> {
        lookup
            .expect("the dial is cached")
            .expect("the dial compiles")
    }

    #[test]
    fn realms_are_selected_by_name_or_by_being_the_only_one() {
        let dial = CompiledDial::compile(&two_realm_dial("ns", "d", "1")).expect("compiles");
        assert_eq!(dial.realm(Some("EU")).map(|r| r.name.as_str()), Ok("EU"));
        assert_eq!(dial.realm(None).err(), Some(RealmError::Required));
        assert_eq!(
            dial.realm(Some("FE")).err(),
            Some(RealmError::Unknown("FE".to_owned()))
        );
        assert_eq!(dial.realm_list(), "NA, EU");

        let single = CompiledDial::compile(&dial_with_realms(&["NA"])).expect("compiles");
        assert_eq!(single.realm(None).map(|r| r.name.as_str()), Ok("NA"));
    }

    fn dial_with_realms(realms: &[&str]) -> WeblabDial {
        dial(
            "ns",
            "single",
            "1",
            serde_json::json!({"spec": {
                "weblab": "W", "treatments": ["C"], "realms": realms, "allocation": {"C": 100},
            }}),
        )
    }

    #[test]
    fn a_realm_without_a_layout_serves_control_by_default() {
        let dial = CompiledDial::compile(&two_realm_dial("ns", "d", "1")).expect("compiles");
        let eu = dial.realm(Some("EU")).expect("EU is listed");
        let assignment = dial.assign(eu, "bob", &[]);
        assert_eq!(
            (assignment.treatment, assignment.reason),
            ("C", AssignmentReason::Default)
        );
        // Overrides apply before any layout exists.
        let beta = ["beta".to_owned()];
        assert_eq!(dial.assign(eu, "bob", &beta).treatment, "T1");
        assert_eq!(
            dial.assign(eu, "alice", &[]).reason,
            AssignmentReason::Override
        );
    }

    #[test]
    fn na_serves_its_layout_through_the_bucket() {
        let dial = CompiledDial::compile(&two_realm_dial("ns", "d", "1")).expect("compiles");
        let na = dial.realm(Some("NA")).expect("NA is listed");
        let mut seen = std::collections::BTreeSet::new();
        for unit in 0..200 {
            let assignment = dial.assign(na, &format!("unit-{unit}"), &[]);
            assert_eq!(assignment.reason, AssignmentReason::Allocation);
            let expected =
                if crate::assignment::bucket("CHECKOUT_1", &format!("unit-{unit}")) < 5000 {
                    "C"
                } else {
                    "T1"
                };
            assert_eq!(assignment.treatment, expected);
            seen.insert(assignment.treatment);
        }
        assert_eq!(seen.len(), 2, "both treatments are served");
        assert_eq!(dial.generation, 3);
        assert_eq!(dial.observed_generation, Some(2));
    }

    #[test]
    fn a_firing_attached_alarm_is_served_as_a_rollback_before_the_status_write() {
        let full = serde_json::json!({"realm": "NA", "allocation": {"T1": 100},
            "buckets": [{"treatment": "T1", "start": 0, "end": 10000}]});
        let mut eu = full.clone();
        eu["realm"] = "EU".into();
        let guarded = dial(
            "ns",
            "guarded",
            "1",
            serde_json::json!({
                "spec": {"weblab": "G", "treatments": ["C", "T1"], "realms": ["NA", "EU"],
                         "allocation": {"T1": 100}, "rollback": {"alarms": {"names": ["errors"]}}},
                "status": {"realms": [full, eu]},
            }),
        );
        let (catalog, _dials) = catalog_with(&[guarded]);
        let (alarms, mut alarm_writer) = reflector::store();
        let firing = Arc::new(Firing::default());
        let catalog = catalog.with_alarms(vec![alarms], firing.clone());
        let served = |realm: &str| {
            let dial = found(catalog.get("ns", "guarded"));
            let realm = dial.realm(Some(realm)).expect("listed");
            let assignment = dial.assign(realm, "unit-1", &[]);
            (assignment.treatment.to_owned(), assignment.reason)
        };
        let alarm = |name: &str, state: &str| -> Arc<Alarm> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "weblab.dev/v1alpha1", "kind": "Alarm",
                    "metadata": {"namespace": "ns", "name": name},
                    "spec": {"severity": "Sev2", "realm": "EU",
                             "alertmanager": {"matchers": [{"name": "alertname", "value": "E"}]}},
                    "status": {"state": state},
                }))
                .expect("a valid Alarm"),
            )
        };
        let mut set = |alarm: Arc<Alarm>| {
            alarm_writer.apply_watcher_event(&watcher::Event::Apply(alarm.as_ref().clone()));
            firing.observe(&alarm);
        };
        assert_eq!(
            served("EU"),
            ("T1".to_owned(), AssignmentReason::Allocation)
        );

        // An alarm the dial does not attach changes nothing.
        set(alarm("other", "ALARM"));
        assert_eq!(
            served("EU"),
            ("T1".to_owned(), AssignmentReason::Allocation)
        );

        // The attached alarm, scoped to EU, fires: EU is served rolled back
        // at once, NA is not, though the status still says T1 everywhere.
        set(alarm("errors", "ALARM"));
        assert_eq!(served("EU"), ("C".to_owned(), AssignmentReason::Rollback));
        assert_eq!(
            served("NA"),
            ("T1".to_owned(), AssignmentReason::Allocation)
        );

        // It clears before the controller wrote anything: back to the status.
        set(alarm("errors", "OK"));
        assert_eq!(
            served("EU"),
            ("T1".to_owned(), AssignmentReason::Allocation)
        );
    }

    #[test]
    fn an_unreadable_layout_serves_control() {
        let mut broken = two_realm_dial("ns", "d", "1");
        if let Some(status) = broken.status.as_mut() {
            // Buckets that do not cover the range.
            status.realms[0].buckets.truncate(1);
        }
        let dial = CompiledDial::compile(&broken).expect("compiles");
        let na = dial.realm(Some("NA")).expect("NA is listed");
        assert_eq!(
            dial.assign(na, "bob", &[]).reason,
            AssignmentReason::Default
        );
    }

    #[test]
    fn dials_the_api_server_would_reject_do_not_compile() {
        assert_eq!(
            CompiledDial::compile(&dial_with_realms(&[])).err(),
            Some(CompileError::NoRealms)
        );
        let mut no_treatments = dial_with_realms(&["NA"]);
        no_treatments.spec.treatments.clear();
        assert_eq!(
            CompiledDial::compile(&no_treatments).err(),
            Some(CompileError::NoTreatments)
        );
    }

    #[test]
    fn compilation_is_cached_until_the_resource_version_changes() {
        let (catalog, mut writer) = catalog_with(&[two_realm_dial("ns", "d", "1")]);
        let first = found(catalog.get("ns", "d"));
        let again = found(catalog.get("ns", "d"));
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same compiled dial is reused"
        );

        writer.apply_watcher_event(&watcher::Event::Apply(two_realm_dial("ns", "d", "2")));
        let changed = found(catalog.get("ns", "d"));
        assert!(
            !Arc::ptr_eq(&first, &changed),
            "a new resourceVersion recompiles"
        );
        assert_eq!(changed.resource_version, "2");
        assert_eq!(catalog.compiled_entries(), 1);
    }

    #[test]
    fn deleted_dials_are_not_found_and_leave_the_cache() {
        let (catalog, mut writer) = catalog_with(&[two_realm_dial("ns", "d", "1")]);
        found(catalog.get("ns", "d"));
        assert!(catalog.get("other", "d").is_none());
        writer.apply_watcher_event(&watcher::Event::Delete(two_realm_dial("ns", "d", "1")));
        assert!(catalog.get("ns", "d").is_none());
        assert_eq!(catalog.compiled_entries(), 0);
    }

    #[test]
    fn the_compiled_cache_is_bounded_by_the_dials_that_exist() {
        let dials: Vec<WeblabDial> = (0..100)
            .map(|i| two_realm_dial("ns", &format!("d{i}"), "1"))
            .collect();
        let (catalog, mut writer) = catalog_with(&dials);
        for i in 0..100 {
            found(catalog.get("ns", &format!("d{i}")));
        }
        // Deleted without ever being asked for again, so only pruning can
        // drop them.
        for dial in &dials[..90] {
            writer.apply_watcher_event(&watcher::Event::Delete(dial.clone()));
        }
        writer.apply_watcher_event(&watcher::Event::Apply(two_realm_dial("ns", "new", "1")));
        found(catalog.get("ns", "new"));
        let live = 11;
        assert!(
            catalog.compiled_entries() <= live + 16,
            "{} entries for {live} dials",
            catalog.compiled_entries()
        );
    }

    #[test]
    fn all_lists_dials_sorted_and_filtered_by_namespace() {
        let (catalog, _writer) = catalog_with(&[
            two_realm_dial("team-b", "zeta", "1"),
            two_realm_dial("team-a", "alpha", "1"),
            two_realm_dial("team-b", "alpha", "1"),
        ]);
        let names = |dials: Vec<ServedDial>| {
            dials
                .into_iter()
                .map(|(_, compiled)| compiled.map(|c| c.reference()).unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(catalog.all("team-a")), ["team-a/alpha"]);
        assert_eq!(
            names(catalog.all("team-b")),
            ["team-b/alpha", "team-b/zeta"]
        );
        assert!(catalog.all("nobody").is_empty());
    }

    #[test]
    fn reasons_have_lowercase_wire_names() {
        assert_eq!(reason_label(AssignmentReason::Override), "override");
        assert_eq!(reason_label(AssignmentReason::Allocation), "allocation");
        assert_eq!(reason_label(AssignmentReason::Rollback), "rollback");
        assert_eq!(reason_label(AssignmentReason::Default), "default");
    }
}
