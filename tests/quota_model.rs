//! A randomised model of the quota protocol that runs: the controller's slot
//! requests (`quota::slots`) replayed step by step against a simulated API
//! server, with the real pure rules deciding — `quota::admission::plan`,
//! `Ledger::admit`/`release`, `admission::slot_freed`,
//! `lifecycle::waits_for_slot` and `lifecycle::decide`, and the project
//! grants' `grant::rule::check`.
//!
//! Two keymint processes (a second replica, or one that has not noticed it
//! lost its lease) reconcile keys of one (project, owner) pair concurrently,
//! interleaved one API call at a time. Each has a cache of ApiKeys that lags
//! behind the API server and remembers the ledger it last wrote. Either may
//! crash between any two calls — notably between the ledger write and the
//! Secret create. Users create keys, delete them, and let them expire.
//! keymint's namespace may be deleted and re-created: the ledger is gone,
//! and so are both processes (they ran in it; a terminating namespace
//! admits no new ConfigMap, so no ledger is rebuilt until it is gone), while
//! the ApiKeys and their Secrets remain. A missing ledger is rebuilt from
//! the ApiKeys as the API server has them (`quota::rebuild::ledger`).
//!
//! One key is reconciled in one place at a time, and sees its own latest
//! version (the controller serialises reconciles per key; a stale copy only
//! loses its status write). What the model does not cover: two leaders at
//! once reconciling the *same* key with one of them on a copy from before
//! the key was minted: a known gap, not modelled.
//!
//! The pair's keys live in two namespaces: `ns`, always granted the project,
//! and `other`, whose grant a cluster admin gives and takes away. A key
//! whose namespace is not granted requests no slot (and gives back one it
//! was admitted to), and is not in line for the others' batch admissions.
//!
//! After every step: at no instant do more than `limit` Secrets of the pair
//! exist, and no write admits a key whose namespace was not granted when
//! the write was planned. At quiescence: no granted key waits while a slot
//! is free, no key not granted holds a slot it has not minted with, and
//! every key is minted at most once. Four broken protocols (a write
//! without the compare-and-swap; minting before the ledger write; a batch
//! admission that ignores the grants; a missing ledger read as empty) must
//! be caught.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keymint::apikey::lifecycle::{self, Step};
use keymint::apikey::secret::{Observed, ProvenKey};
use keymint::apikey::{ApiKey, ApiKeySpec, ApiKeyStatus, Phase};
use keymint::grant::Projects;
use keymint::grant::rule;
use keymint::quota::admission::{self, Plan, Waiting};
use keymint::quota::{Admission, Entry, Ledger, Pair, rebuild};

/// What the model's controller may get wrong, to prove the checks bite.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Protocol {
    AsRun,
    /// Writes the ledger without comparing versions.
    BlindWrite,
    /// Mints right after deciding, before the ledger write lands.
    MintBeforeLedgerWrite,
    /// Admits the pair's waiting keys along with another whatever their
    /// namespace is granted.
    AdmitUngranted,
    /// Reads a missing ledger as empty instead of rebuilding it.
    EmptyWhenMissing,
}

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// The API server: ApiKeys by UID, Secrets by ApiKey UID, one ledger
/// (None: its ConfigMap is missing).
#[derive(Clone, Default)]
struct Server {
    keys: BTreeMap<String, ApiKey>,
    secrets: BTreeMap<String, u32>,
    ledger: Option<Ledger>,
    version: u64,
    /// How many keys were ever minted per UID (exactly once: at most 1).
    mints: BTreeMap<String, u32>,
    now_ms: i64,
    /// Each namespace's grant (`other` has none while withdrawn).
    grants: BTreeMap<String, Projects>,
    /// Bumped at every change of a grant.
    grants_changed: u64,
    /// What a write admitted that its plan should not have.
    admitted_ungranted: Vec<String>,
}

/// Where one process is in reconciling one key (one API call per step).
#[derive(Clone, Debug)]
enum Stage {
    Idle,
    /// Read the ledger (or took the remembered one) and decided.
    Decided {
        ledger: Ledger,
        version: u64,
        plan: Plan,
        dropped: bool,
        /// `Server::grants_changed` when planned.
        grants: u64,
    },
    /// The ledger write landed: mint next.
    Admitted,
}

struct Process {
    cache: BTreeMap<String, ApiKey>,
    seen: Option<(Ledger, u64)>,
    work: BTreeMap<String, Stage>,
}

struct Model {
    server: Server,
    processes: Vec<Process>,
    protocol: Protocol,
    limit: usize,
    rng: Rng,
    created: usize,
}

fn api_key(n: usize, created_s: i64, namespace: &str) -> ApiKey {
    let spec: ApiKeySpec =
        serde_json::from_value(serde_json::json!({"project": "p", "owner": "alice"}))
            .expect("spec");
    let mut k = ApiKey::new(&format!("k{n:03}"), spec);
    k.metadata.namespace = Some(namespace.into());
    k.metadata.uid = Some(format!("uid-{n:03}"));
    k.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created_s).expect("time")));
    k
}

fn uid(k: &ApiKey) -> String {
    k.metadata.uid.clone().unwrap_or_default()
}

fn waiting_entry(k: &ApiKey) -> Waiting {
    Waiting {
        created: k
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond()),
        namespace: k.metadata.namespace.clone().unwrap_or_default(),
        name: k.metadata.name.clone().unwrap_or_default(),
        uid: uid(k),
    }
}

fn set_phase(k: &mut ApiKey, phase: Phase, hash: Option<&str>) {
    let status = k.status.get_or_insert_with(ApiKeyStatus::default);
    status.phase = Some(phase);
    if let Some(h) = hash {
        status.key_hash = Some(h.into());
    }
}

impl Model {
    fn new(seed: u64, protocol: Protocol, limit: usize) -> Model {
        let process = || Process {
            cache: BTreeMap::new(),
            seen: None,
            work: BTreeMap::new(),
        };
        let granted = Projects::Only(["p".to_string()].into());
        Model {
            server: Server {
                grants: BTreeMap::from([
                    ("ns".to_string(), granted.clone()),
                    ("other".to_string(), granted),
                ]),
                ..Server::default()
            },
            processes: vec![process(), process()],
            protocol,
            limit,
            rng: Rng(seed.wrapping_mul(2_654_435_761).max(1)),
            created: 0,
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_millisecond(self.server.now_ms).expect("time")
    }

    /// One random event: a user action, a cache catching up, a crash, or
    /// one API call of one process.
    fn step(&mut self) {
        self.server.now_ms += 100;
        match self.rng.below(40) {
            0..=5 => self.create(),
            6 | 7 => self.delete_random(),
            8 | 9 => self.expire_random(),
            10..=15 => self.sync_cache(),
            16 | 17 => self.crash(),
            18 | 19 => self.toggle_grant(),
            20 => self.lose_namespace(),
            _ => self.advance(),
        }
    }

    /// keymint's namespace is deleted and re-created: the ledger is gone
    /// and both processes stopped; ApiKeys and Secrets live elsewhere.
    fn lose_namespace(&mut self) {
        self.server.ledger = None;
        self.server.version += 1;
        for p in &mut self.processes {
            p.seen = None;
            p.work.clear();
        }
    }

    /// The ledger as read from the server: a missing one rebuilt from the
    /// ApiKeys as the server has them (`Slots::rebuild` lists them fresh),
    /// and whether it was rebuilt (then it is written even if nothing is
    /// admitted).
    fn read_ledger(&self) -> (Ledger, bool) {
        match (&self.server.ledger, self.protocol) {
            (Some(ledger), _) => (ledger.clone(), false),
            (None, Protocol::EmptyWhenMissing) => (Ledger::default(), false),
            (None, _) => {
                let pair = Pair {
                    project: "p",
                    owner: "alice",
                };
                (rebuild::ledger(&pair, self.server.keys.values()), true)
            }
        }
    }

    fn create(&mut self) {
        self.created += 1;
        let created_s = 1_000 + self.server.now_ms / 1_000;
        let namespace = ["ns", "other"][self.rng.below(2)];
        let k = api_key(self.created, created_s, namespace);
        self.server.keys.insert(uid(&k), k);
    }

    /// A cluster admin grants `other` the project, or takes it away. Each
    /// process's grants follow at once (they are few and watched; a lag
    /// would only widen the window the per-step check already allows).
    fn toggle_grant(&mut self) {
        let grants = &mut self.server.grants;
        if grants.remove("other").is_none() {
            grants.insert("other".into(), Projects::Only(["p".to_string()].into()));
        }
        self.server.grants_changed += 1;
    }

    /// `Grants::check`: whether the key's namespace may use its project.
    fn granted(&self, k: &ApiKey) -> bool {
        let namespace = k.metadata.namespace.as_deref().unwrap_or_default();
        rule::check(
            namespace,
            self.server.grants.get(namespace),
            &k.spec.project,
        )
        .is_ok()
    }

    /// A key no process is reconciling right now: deletion and expiry are
    /// reconciles of the key itself, and the controller reconciles one key
    /// in one place at a time (see the module docs).
    fn idle_key(&mut self) -> Option<String> {
        let uids: Vec<String> = self.server.keys.keys().cloned().collect();
        let u = uids.get(self.rng.below(uids.len()))?;
        let busy = self.processes.iter().any(|p| p.work.contains_key(u));
        (!busy).then(|| u.clone())
    }

    /// A user deletes a key; its finalizer deletes the Secret first.
    fn delete_random(&mut self) {
        if let Some(u) = &self.idle_key() {
            self.server.secrets.remove(u);
            self.server.keys.remove(u);
        }
    }

    /// A key's expiresAt passes: the Secret goes, then the status says so.
    fn expire_random(&mut self) {
        if let Some(u) = &self.idle_key() {
            self.server.secrets.remove(u);
            if let Some(k) = self.server.keys.get_mut(u) {
                set_phase(k, Phase::Expired, None);
            }
        }
    }

    /// One process's cache catches up with the server.
    fn sync_cache(&mut self) {
        let p = self.rng.below(self.processes.len());
        self.processes[p].cache = self.server.keys.clone();
    }

    /// A process stops and restarts: it forgets everything but the server.
    fn crash(&mut self) {
        let p = self.rng.below(self.processes.len());
        self.processes[p].seen = None;
        self.processes[p].work.clear();
    }

    /// One API call of one process for one key it has cached and no other
    /// process is in the middle of.
    fn advance(&mut self) {
        let p = self.rng.below(self.processes.len());
        let uids: Vec<String> = self.processes[p].cache.keys().cloned().collect();
        let Some(u) = uids.get(self.rng.below(uids.len())).cloned() else {
            return;
        };
        let elsewhere =
            (0..self.processes.len()).any(|q| q != p && self.processes[q].work.contains_key(&u));
        if elsewhere {
            return;
        }
        if let Some(next) = self.call(p, &u) {
            self.processes[p].work.insert(u, next);
        }
    }

    /// The next API call of process `p` for key `u`; the stage after it.
    fn call(&mut self, p: usize, u: &str) -> Option<Stage> {
        let stage = self.processes[p].work.remove(u).unwrap_or(Stage::Idle);
        match stage {
            Stage::Idle => self.begin(p, u),
            Stage::Decided {
                ledger,
                version,
                plan,
                dropped,
                grants,
            } => {
                self.check_admitted_granted(&plan, grants);
                self.write(p, u, ledger, version, plan, dropped)
            }
            Stage::Admitted => {
                self.mint(u);
                None
            }
        }
    }

    /// Reconcile begins: `decide` on the cached key (the Secret as the
    /// server has it), and for a slot request read and plan.
    fn begin(&mut self, p: usize, u: &str) -> Option<Stage> {
        // The key being reconciled is seen as of its latest write: its
        // reconciles take turns, and an older copy would only lose its
        // status write (409) and be reconciled again. Every other key —
        // the line, the entries that may have ended — comes from the
        // possibly stale cache.
        let current = self.server.keys.get(u)?.clone();
        self.processes[p]
            .cache
            .insert(u.to_string(), current.clone());
        let cached = current;
        let observed = match self.server.secrets.contains_key(u) {
            // The model's Secrets are keymint's own: their seals verify.
            true => Observed::Controlled {
                content_hash: Some(format!("h-{u}")),
                proven: Some(ProvenKey {
                    key_id: format!("id-{u}"),
                    key_hash: format!("h-{u}"),
                    created: None,
                }),
                uid: Some(u.to_string()),
            },
            false => Observed::Missing,
        };
        let step = lifecycle::decide(cached.status.as_ref(), None, self.now(), &observed, None);
        match step {
            // Not granted: no slot, and one it was admitted to goes back
            // (`Slots::release`, one read and one write).
            Step::RequestSlot if !self.granted(&cached) => {
                let (mut ledger, _) = self.read_ledger();
                if ledger.release(u) {
                    self.cas(p, ledger, self.server.version);
                }
                self.reject(u);
                None
            }
            Step::RequestSlot => Some(self.read_and_plan(p, &cached)),
            Step::Settled(lifecycle::Outcome::Active { .. }) => {
                self.record_active(u);
                None
            }
            _ => None,
        }
    }

    /// `Slots::attempt`: the ledger as remembered or read, the waiting keys
    /// from the (possibly stale) cache, the plan; a full pair drops ended
    /// entries (cache first, else ask the server) and plans again.
    fn read_and_plan(&mut self, p: usize, me: &ApiKey) -> Stage {
        let (mut ledger, version, rebuilt) = match &self.processes[p].seen {
            Some((ledger, version)) => (ledger.clone(), *version, false),
            None => {
                let (ledger, rebuilt) = self.read_ledger();
                (ledger, self.server.version, rebuilt)
            }
        };
        let now = self.now();
        let waiting: Vec<Waiting> = self.processes[p]
            .cache
            .values()
            .filter(|k| lifecycle::waits_for_slot(k, now))
            .filter(|k| self.protocol == Protocol::AdmitUngranted || self.granted(k))
            .map(waiting_entry)
            .collect();
        let me = waiting_entry(me);
        let mut plan = admission::plan(&ledger, &me, &waiting, self.limit);
        let mut dropped = rebuilt;
        if let Plan::Full { .. } = plan {
            let ended: Vec<String> = ledger
                .iter()
                .filter(|(u, _)| self.has_ended(p, u))
                .map(|(u, _)| u.to_string())
                .collect();
            for u in &ended {
                dropped |= ledger.release(u);
            }
            plan = admission::plan(&ledger, &me, &waiting, self.limit);
        }
        if self.protocol == Protocol::MintBeforeLedgerWrite
            && let Plan::Admit { .. } = plan
        {
            self.mint(&me.uid);
        }
        Stage::Decided {
            ledger,
            version,
            plan,
            dropped,
            grants: self.server.grants_changed,
        }
    }

    /// A write about to admit keys along with another, planned while the
    /// grants were as they are now: every one of them must be granted.
    fn check_admitted_granted(&mut self, plan: &Plan, planned_at: u64) {
        let Plan::Admit { with } = plan else { return };
        if planned_at != self.server.grants_changed {
            return;
        }
        for w in with {
            if let Some(k) = self.server.keys.get(&w.uid)
                && !self.granted(k)
            {
                self.server.admitted_ungranted.push(w.uid.clone());
            }
        }
    }

    fn has_ended(&self, p: usize, u: &str) -> bool {
        match self.processes[p].cache.get(u) {
            Some(k) => admission::slot_freed(k.status.as_ref()),
            // Not cached: confirmed with the server.
            None => !self.server.keys.contains_key(u),
        }
    }

    /// The ledger write (compare-and-swap), then the outcome.
    fn write(
        &mut self,
        p: usize,
        u: &str,
        mut ledger: Ledger,
        version: u64,
        plan: Plan,
        dropped: bool,
    ) -> Option<Stage> {
        let Plan::Admit { with } = &plan else {
            if let Plan::Full { .. } = plan {
                if dropped {
                    self.cas(p, ledger, version);
                }
                self.reject(u);
            }
            return matches!(plan, Plan::AlreadyAdmitted).then_some(Stage::Admitted);
        };
        let entry = |w: &Waiting| Entry {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            admitted_at: 0,
        };
        let me = self.server.keys.get(u).map(waiting_entry)?;
        if let Admission::Full { .. } = ledger.admit(u, entry(&me), self.limit) {
            self.reject(u);
            return None;
        }
        for other in with {
            ledger.admit(&other.uid, entry(other), self.limit);
        }
        match self.cas(p, ledger, version) {
            true => Some(Stage::Admitted),
            false => None, // lost the race: the next reconcile starts over
        }
    }

    /// Writes the ledger if nobody wrote since `version` (or blindly).
    fn cas(&mut self, p: usize, ledger: Ledger, version: u64) -> bool {
        let blind = self.protocol == Protocol::BlindWrite;
        if !blind && version != self.server.version {
            self.processes[p].seen = None;
            return false;
        }
        self.server.version += 1;
        self.server.ledger = Some(ledger.clone());
        self.processes[p].seen = Some((ledger, self.server.version));
        true
    }

    /// Creating the Secret: the commit point (AlreadyExists mints nothing).
    fn mint(&mut self, u: &str) {
        if !self.server.keys.contains_key(u) || self.server.secrets.contains_key(u) {
            return;
        }
        self.server.secrets.insert(u.to_string(), 1);
        *self.server.mints.entry(u.to_string()).or_default() += 1;
        self.record_active(u);
    }

    fn record_active(&mut self, u: &str) {
        if let Some(k) = self.server.keys.get_mut(u)
            && k.status.as_ref().and_then(|s| s.phase) != Some(Phase::Expired)
        {
            set_phase(k, Phase::Active, Some(&format!("h-{u}")));
        }
    }

    fn reject(&mut self, u: &str) {
        if let Some(k) = self.server.keys.get_mut(u)
            && k.status.as_ref().is_none_or(|s| s.key_hash.is_none())
        {
            set_phase(k, Phase::Rejected, None);
        }
    }

    /// At no instant more than `limit` Secrets; never a second mint; no
    /// key admitted along with another while its namespace was not granted.
    fn check(&self) -> Result<(), String> {
        if let Some(u) = self.server.admitted_ungranted.first() {
            return Err(format!(
                "{u} was admitted while its namespace was not granted"
            ));
        }
        let secrets = self.server.secrets.len();
        if secrets > self.limit {
            return Err(format!(
                "{secrets} Secrets exist for a limit of {}",
                self.limit
            ));
        }
        match self.server.mints.iter().find(|(_, n)| **n > 1) {
            Some((u, n)) => Err(format!("{u} minted {n} times")),
            None => Ok(()),
        }
    }

    /// Everyone catches up and reconciles until nothing changes.
    fn settle(&mut self) {
        let mut last = None;
        for _ in 0..50 {
            let phases: Vec<Option<Phase>> = self
                .server
                .keys
                .values()
                .map(|k| k.status.as_ref().and_then(|s| s.phase))
                .collect();
            let state = (self.server.version, self.server.secrets.len(), phases);
            if last.as_ref() == Some(&state) {
                return;
            }
            last = Some(state);
            for p in 0..self.processes.len() {
                self.processes[p].cache = self.server.keys.clone();
                let uids: Vec<String> = self.server.keys.keys().cloned().collect();
                for u in uids {
                    // One key in one place at a time, here too: another
                    // process finishes what it started on its own turn.
                    let elsewhere = (0..self.processes.len())
                        .any(|q| q != p && self.processes[q].work.contains_key(&u));
                    if elsewhere {
                        continue;
                    }
                    for _ in 0..3 {
                        match self.call(p, &u) {
                            Some(next) => self.processes[p].work.insert(u.clone(), next),
                            None => break,
                        };
                    }
                }
            }
        }
    }

    /// No granted key waits while a slot is free (none is told it is in
    /// line behind keys that will never take a slot), and no key whose
    /// namespace is not granted holds a slot without a Secret.
    fn check_settled(&self) -> Result<(), String> {
        let now = self.now();
        for (u, _) in self.server.ledger.iter().flat_map(Ledger::iter) {
            let ungranted = self.server.keys.get(u).is_some_and(|k| !self.granted(k));
            if ungranted && !self.server.secrets.contains_key(u) {
                return Err(format!("{u} holds a slot its namespace is not granted"));
            }
        }
        let waiting = self
            .server
            .keys
            .values()
            .filter(|k| lifecycle::waits_for_slot(k, now) && self.granted(k))
            .count();
        let held = self.server.secrets.len();
        if waiting > 0 && held < self.limit {
            return Err(format!(
                "{waiting} keys wait while {held} of {} slots are held",
                self.limit
            ));
        }
        Ok(())
    }
}

/// Runs one seed; the first broken check, if any.
fn simulate(seed: u64, steps: usize, protocol: Protocol) -> Result<(), String> {
    let mut model = Model::new(seed, protocol, 3);
    for n in 0..steps {
        model.step();
        model
            .check()
            .map_err(|e| format!("seed {seed}, step {n}: {e}"))?;
    }
    model.settle();
    model
        .check()
        .map_err(|e| format!("seed {seed}, settled: {e}"))?;
    model
        .check_settled()
        .map_err(|e| format!("seed {seed}, settled: {e}"))
}

#[test]
fn the_protocol_as_run_never_exceeds_the_limit_nor_strands_a_waiting_key() {
    for seed in 1..=200 {
        if let Err(e) = simulate(seed, 300, Protocol::AsRun) {
            panic!("{e}");
        }
    }
}

#[test]
fn the_model_catches_a_write_without_compare_and_swap() {
    let caught = (1..=300).any(|seed| simulate(seed, 400, Protocol::BlindWrite).is_err());
    assert!(
        caught,
        "a blind ledger write must break the limit in some run"
    );
}

#[test]
fn the_model_catches_minting_before_the_ledger_write() {
    let caught =
        (1..=300).any(|seed| simulate(seed, 400, Protocol::MintBeforeLedgerWrite).is_err());
    assert!(
        caught,
        "minting before the ledger write must break the limit in some run"
    );
}

#[test]
fn the_model_catches_a_missing_ledger_read_as_empty() {
    let caught = (1..=300).any(|seed| simulate(seed, 400, Protocol::EmptyWhenMissing).is_err());
    assert!(
        caught,
        "a ledger lost with the namespace and read as empty must break the limit in some run"
    );
}

#[test]
fn the_model_catches_a_batch_admission_that_ignores_the_grants() {
    let caught = (1..=300).any(|seed| simulate(seed, 400, Protocol::AdmitUngranted).is_err());
    assert!(
        caught,
        "admitting a key whose namespace is not granted must be caught in some run"
    );
}
