//! The audit stream in the API server: append-only JSON Lines in ConfigMap
//! segments (`keymint-audit-0000000001`, `...02`, ...) in keymint's
//! namespace. The pure part — entries, chaining, verification — is `audit`.
//!
//! One appender task owns the writes. Reconciles hand it drafts and wait
//! until their batch is durable; a batch costs one ConfigMap write. Every
//! write is a compare-and-swap on the head segment's resourceVersion, and a
//! full segment is sealed (another CAS) before the next one is created, so
//! two writers — a second replica, an operator that has not noticed it lost
//! its lease — can never fork the chain: one of them always re-reads.
//!
//! Exactly once: each draft carries its ApiKey's UID and transition number.
//! Drafts already in the stream (found in the head segment at write time,
//! or in the index built from the stream's tail at start-up) are dropped,
//! so a transition retried after a crash is recorded once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::apikey::secret::{LABEL_MANAGED_BY, MANAGER};
use crate::audit::{self, Draft, Entry, Head};
use crate::configmap::{CasError, compare_and_swap};

pub const LABEL_AUDIT: &str = "keymint.dev/audit";
pub const SEGMENT_PREFIX: &str = "keymint-audit-";
/// The data key of a segment's entries.
pub const DATA_ENTRIES: &str = "entries";
/// Set on a full segment before its successor is created.
const ANNOTATION_SEALED: &str = "keymint.dev/sealed";
/// On each segment: the chain position it continues from, so an empty
/// segment still knows what its first entry links to.
const ANNOTATION_PREV_SEQ: &str = "keymint.dev/prev-seq";
const ANNOTATION_PREV_HASH: &str = "keymint.dev/prev-hash";
/// Requests taken into one batch (each request may hold a few drafts).
const MAX_BATCH: usize = 256;
/// How long a batch waits for company during a burst.
const BATCH_LINGER: Duration = Duration::from_millis(10);
/// Write conflicts retried within one batch before the batch fails.
const CAS_ATTEMPTS: usize = 16;
/// How far back before the newest entry the start-up index reaches. A
/// transition is appended right after the status write that made it, or
/// retried within the reconcile backoff (minutes); anything older than the
/// window is certainly in the stream already.
const TAIL_WINDOW: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Debug)]
pub enum Retention {
    /// Keep at most this many segments.
    Segments(usize),
    /// Drop segments whose newest entry is older than this.
    Age(Duration),
}

impl std::str::FromStr for Retention {
    type Err = String;
    /// `100` (segments) or a duration such as `90d`.
    fn from_str(s: &str) -> Result<Retention, String> {
        if let Ok(n) = s.parse::<usize>() {
            return if n >= 2 {
                Ok(Retention::Segments(n))
            } else {
                Err("keep at least 2 segments".into())
            };
        }
        crate::duration::parse_duration(s)
            .map(Retention::Age)
            .map_err(|e| format!("{e}; or a number of segments such as 100"))
    }
}

#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub namespace: String,
    pub segment_bytes: usize,
    pub retention: Retention,
    pub instance: String,
    /// Counts appended entries (keymint_audit_appends_total).
    pub appends: prometheus_client::metrics::counter::Counter<u64, std::sync::atomic::AtomicU64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit stream write failed: {0}")]
    Write(String),
    #[error("audit segment {segment} is unreadable ({reason}); run `keymint audit verify`")]
    Corrupt { segment: String, reason: String },
    #[error("the audit appender has stopped")]
    Stopped,
}

struct Request {
    drafts: Vec<Draft>,
    /// Per draft: whether this append wrote it (false: already recorded).
    done: oneshot::Sender<Result<Vec<bool>, AuditError>>,
}

/// The dedup keys a write appended.
type Appended = std::collections::HashSet<(String, u64)>;

/// What the stream is known to contain: the highest transition number
/// recorded per ApiKey UID, for entries since `covered_from`.
#[derive(Default)]
struct Index {
    recorded: HashMap<String, u64>,
    covered_from: Option<Timestamp>,
}

impl Index {
    fn add(&mut self, entry: &Entry) {
        let n = self.recorded.entry(entry.uid.clone()).or_insert(0);
        *n = (*n).max(entry.transition);
    }
}

/// The handle reconciles use.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Request>,
    index: Arc<Mutex<Index>>,
    pub instance: String,
}

impl AuditLog {
    /// Reads the stream's tail (to know what is already recorded) and
    /// starts the appender.
    pub async fn open(client: Client, options: AuditOptions) -> Result<AuditLog, AuditError> {
        let api: Api<ConfigMap> = Api::namespaced(client, &options.namespace);
        let names = segment_names(&api).await?;
        let mut index = Index::default();
        let window = jiff::SignedDuration::try_from(TAIL_WINDOW).unwrap_or_default();
        let mut newest: Option<Timestamp> = None;
        let mut oldest_read: Option<(u64, Timestamp)> = None;
        for name in names.iter().rev() {
            let Some(cm) = api.get_opt(name).await.map_err(write_error)? else {
                continue;
            };
            let entries = entries_of(&cm)?;
            for entry in &entries {
                index.add(entry);
            }
            let time = |e: Option<&Entry>| e.and_then(Entry::timestamp);
            newest = newest.or(time(entries.last()));
            if let (Some(first), Some(at)) = (entries.first(), time(entries.first())) {
                oldest_read = Some((first.seq, at));
                if newest.is_some_and(|n| at <= n - window) {
                    break;
                }
            }
        }
        // Entry times are when a reconcile began, and appends land in the
        // order reconciles finish, so "older than the first entry read" does
        // not mean "recorded". Only transitions older than the index reaches
        // by a whole TAIL_WINDOW are taken as recorded; having read the
        // stream back to entry 1, nothing is.
        index.covered_from = match oldest_read {
            Some((1, _)) | None => None,
            Some((_, at)) => Some(at - window),
        };
        info!(
            segments = names.len(),
            indexed_keys = index.recorded.len(),
            "audit stream opened"
        );
        let index = Arc::new(Mutex::new(index));
        let (tx, rx) = mpsc::channel(4096);
        let head_name = names.last().cloned().unwrap_or_else(|| segment_name(1));
        let appender = Appender {
            api,
            options: options.clone(),
            index: index.clone(),
            head_name,
            written: None,
        };
        tokio::spawn(appender.run(rx));
        Ok(AuditLog {
            tx,
            index,
            instance: options.instance,
        })
    }

    /// Whether transition `transition` of ApiKey `uid`, made at `at`, is in
    /// the stream. Transitions older than the indexed tail are.
    pub fn is_recorded(&self, uid: &str, transition: u64, at: Timestamp) -> bool {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if index.recorded.get(uid).is_some_and(|&n| n >= transition) {
            return true;
        }
        index.covered_from.is_some_and(|from| at < from)
    }

    /// Appends `drafts` (in order) and returns once they are durable: for
    /// each draft, whether it was written now (false: the stream already
    /// had it — appended by an earlier attempt or another instance).
    pub async fn append(&self, drafts: Vec<Draft>) -> Result<Vec<bool>, AuditError> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request { drafts, done })
            .await
            .map_err(|_| AuditError::Stopped)?;
        wait.await.map_err(|_| AuditError::Stopped)?
    }
}

struct Appender {
    api: Api<ConfigMap>,
    options: AuditOptions,
    index: Arc<Mutex<Index>>,
    head_name: String,
    /// The head segment as this appender last wrote it. The next write
    /// starts from it instead of reading the segment back: if anyone else
    /// wrote in between, the compare-and-swap fails and the head is read.
    written: Option<Segment>,
}

/// The head segment, as read or as last written.
struct Segment {
    name: String,
    /// None: it does not exist yet.
    resource_version: Option<String>,
    content: String,
    /// What the segment's first entry links to (its annotations).
    prev: Head,
    /// What the next entry links to.
    head: Head,
    /// The dedup keys of its entries. A set: with thousands of entries in a
    /// segment, a linear search per draft was the operator's hottest code in
    /// the 10k benchmark.
    recorded: Appended,
}

impl Appender {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut busy = false;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            // In a burst (the last batch had company) wait a moment for more
            // requests: every write rewrites the head segment, so fewer,
            // larger batches keep the writes and bytes down. A lone
            // transition in a quiet system is written at once.
            let linger = match busy {
                true => BATCH_LINGER,
                false => Duration::ZERO,
            };
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(request)) => batch.push(request),
                        _ => break,
                    },
                }
            }
            busy = batch.len() > 1;
            let drafts: Vec<Draft> = batch
                .iter()
                .flat_map(|r| r.drafts.iter().cloned())
                .collect();
            let result = self.write(drafts, Rollover::WhenFull).await;
            if let Err(e) = &result {
                warn!(error = %e, "audit append failed; the transitions will be retried");
            }
            for request in batch {
                let outcome = result.as_ref().map_err(Clone::clone).map(|appended| {
                    request
                        .drafts
                        .iter()
                        .map(|d| appended.contains(&(d.uid.clone(), d.transition)))
                        .collect()
                });
                let _ = request.done.send(outcome);
            }
        }
        debug!("audit appender stopped");
    }

    /// Appends `drafts` with one ConfigMap write (two when the head segment
    /// is full: seal it, create the next), retrying lost races.
    async fn write(
        &mut self,
        drafts: Vec<Draft>,
        rollover: Rollover,
    ) -> Result<Appended, AuditError> {
        for _ in 0..CAS_ATTEMPTS {
            let segment = match self.written.take() {
                Some(segment) => segment,
                None => self.read_head().await?,
            };
            let recorded = &segment.recorded;
            let fresh: Vec<&Draft> = {
                let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
                drafts
                    .iter()
                    // "pruned" entries have no uid: their key is the
                    // last pruned seq, so a retried pruning is dropped too.
                    .filter(|d| {
                        !recorded.contains(&(d.uid.clone(), d.transition))
                            && index.recorded.get(&d.uid).is_none_or(|&n| n < d.transition)
                    })
                    .collect()
            };
            if fresh.is_empty() {
                self.written = Some(segment);
                return Ok(Appended::new());
            }
            let mut head = segment.head.clone();
            let mut entries = Vec::with_capacity(fresh.len());
            for draft in fresh {
                let (entry, next) = audit::chain(&head, draft);
                entries.push(entry);
                head = next;
            }

            let full = rollover == Rollover::WhenFull
                && !segment.content.is_empty()
                && audit::size_after(&segment.content, &entries) > self.options.segment_bytes;
            let outcome = if full {
                self.roll_over(&segment, &entries).await
            } else {
                let content = audit::append_lines(&segment.content, &entries);
                self.put(&segment, &content, None)
                    .await
                    .map(|resource_version| Segment {
                        resource_version,
                        content,
                        head: head.clone(),
                        ..segment
                    })
            };
            match outcome {
                Ok(mut written) => {
                    written
                        .recorded
                        .extend(entries.iter().map(Entry::dedup_key));
                    self.written = Some(written);
                    self.options.appends.inc_by(entries.len() as u64);
                    {
                        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
                        for entry in &entries {
                            index.add(entry);
                        }
                    }
                    if full {
                        self.prune().await;
                    }
                    return Ok(entries.iter().map(Entry::dedup_key).collect());
                }
                Err(PutError::Race) => continue,
                Err(PutError::Failed(e)) => return Err(AuditError::Write(e)),
            }
        }
        Err(AuditError::Write("too many concurrent writers".into()))
    }

    /// Reads the head segment, following seals forward.
    async fn read_head(&mut self) -> Result<Segment, AuditError> {
        let mut chain_from = Head::genesis();
        loop {
            let Some(cm) = self
                .api
                .get_opt(&self.head_name)
                .await
                .map_err(write_error)?
            else {
                return Ok(Segment {
                    name: self.head_name.clone(),
                    resource_version: None,
                    content: String::new(),
                    prev: chain_from.clone(),
                    head: chain_from,
                    recorded: Appended::new(),
                });
            };
            let content = cm
                .data
                .as_ref()
                .and_then(|d| d.get(DATA_ENTRIES))
                .cloned()
                .unwrap_or_default();
            let entries = audit::parse_segment(&content).map_err(|e| AuditError::Corrupt {
                segment: self.head_name.clone(),
                reason: e.to_string(),
            })?;
            // Whatever another instance appended since this one last wrote
            // is in the segments read here: index it, so that it is never
            // appended twice.
            {
                let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
                for entry in &entries {
                    index.add(entry);
                }
            }
            let prev = match entries.first() {
                Some(first) => Head {
                    seq: first.seq.saturating_sub(1),
                    hash: first.prev.clone(),
                },
                None => prev_head(&cm).unwrap_or(chain_from),
            };
            let head = entries.last().map_or_else(|| prev.clone(), Head::of);
            if cm.annotations().contains_key(ANNOTATION_SEALED) {
                chain_from = head;
                self.head_name = next_segment_name(&self.head_name);
                continue;
            }
            return Ok(Segment {
                name: self.head_name.clone(),
                resource_version: cm.resource_version(),
                content,
                prev,
                head,
                recorded: entries.iter().map(Entry::dedup_key).collect(),
            });
        }
    }

    /// Seals the full head segment, then starts the next with `entries`;
    /// returns the next segment as written (without `entries`' dedup keys).
    async fn roll_over(
        &mut self,
        segment: &Segment,
        entries: &[Entry],
    ) -> Result<Segment, PutError> {
        self.put(segment, &segment.content, Some(true)).await?;
        let next = Segment {
            name: next_segment_name(&segment.name),
            resource_version: None,
            content: audit::append_lines("", entries),
            prev: segment.head.clone(),
            head: entries
                .last()
                .map_or_else(|| segment.head.clone(), Head::of),
            recorded: Appended::new(),
        };
        self.head_name = next.name.clone();
        let resource_version = self.put(&next, &next.content, None).await?;
        Ok(Segment {
            resource_version,
            ..next
        })
    }

    /// Creates or replaces (against the version it was read or written at) a
    /// segment; returns the new version.
    async fn put(
        &self,
        segment: &Segment,
        content: &str,
        seal: Option<bool>,
    ) -> Result<Option<String>, PutError> {
        let mut annotations = BTreeMap::from([
            (
                ANNOTATION_PREV_SEQ.to_string(),
                segment.prev.seq.to_string(),
            ),
            (ANNOTATION_PREV_HASH.to_string(), segment.prev.hash.clone()),
        ]);
        if seal == Some(true) {
            annotations.insert(ANNOTATION_SEALED.to_string(), "true".to_string());
        }
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(segment.name.clone()),
                resource_version: segment.resource_version.clone(),
                labels: Some(BTreeMap::from([
                    (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
                    (LABEL_AUDIT.to_string(), "segment".to_string()),
                ])),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                DATA_ENTRIES.to_string(),
                content.to_string(),
            )])),
            ..ConfigMap::default()
        };
        match compare_and_swap(&self.api, &cm).await {
            Ok(version) => Ok(version),
            Err(CasError::Conflict(_)) => Err(PutError::Race),
            Err(CasError::Api(e)) => {
                Err(PutError::Failed(format!("segment {}: {e}", segment.name)))
            }
        }
    }

    /// Applies retention after a rollover: records what goes (a "pruned"
    /// entry that vouches for the new oldest segment), then deletes.
    async fn prune(&mut self) {
        let Ok(names) = segment_names(&self.api).await else {
            return;
        };
        let mut doomed: Vec<String> = Vec::new();
        match self.options.retention {
            Retention::Segments(keep) => {
                if names.len() > keep {
                    doomed = names[..names.len() - keep].to_vec();
                }
            }
            Retention::Age(age) => {
                let cutoff =
                    Timestamp::now() - jiff::SignedDuration::try_from(age).unwrap_or_default();
                // Never the head: it is still being written.
                for name in names.iter().take(names.len().saturating_sub(1)) {
                    let newest = match self.api.get_opt(name).await {
                        Ok(Some(cm)) => entries_of(&cm)
                            .ok()
                            .and_then(|e| e.last().and_then(|l| l.time.parse::<Timestamp>().ok())),
                        _ => None,
                    };
                    if newest.is_some_and(|t| t < cutoff) {
                        doomed.push(name.clone());
                    } else {
                        break;
                    }
                }
            }
        }
        let Some(last_doomed) = doomed.last() else {
            return;
        };
        let through = match self.api.get_opt(last_doomed).await {
            Ok(Some(cm)) => match entries_of(&cm) {
                Ok(entries) => entries.last().map(Head::of).or_else(|| prev_head(&cm)),
                Err(_) => None,
            },
            _ => None,
        };
        let Some(through) = through else {
            return;
        };
        let draft = audit::pruned_draft(
            Timestamp::now(),
            &self.options.instance,
            &through,
            doomed.len(),
        );
        // Into the current head even if that passes the segment size by one
        // small entry: rolling over here would start yet another segment
        // before the old ones are gone.
        if let Err(e) = Box::pin(self.write(vec![draft], Rollover::Never))
            .await
            .map(drop)
        {
            warn!(error = %e, "could not record pruning; keeping the segments");
            return;
        }
        for name in &doomed {
            if let Err(e) = self.api.delete(name, &DeleteParams::default()).await {
                warn!(error = %e, segment = %name, "could not delete a pruned audit segment");
            }
        }
        info!(
            segments = doomed.len(),
            "audit segments pruned by retention"
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rollover {
    /// Seal the head and start the next segment when the drafts do not fit.
    WhenFull,
    /// Append to the head regardless (for the one small `pruned` entry).
    Never,
}

enum PutError {
    /// Another writer got there first: read again and retry.
    Race,
    /// The write failed: give up this batch (its reconciles retry).
    Failed(String),
}

fn prev_head(cm: &ConfigMap) -> Option<Head> {
    let annotations = cm.annotations();
    Some(Head {
        seq: annotations.get(ANNOTATION_PREV_SEQ)?.parse().ok()?,
        hash: annotations.get(ANNOTATION_PREV_HASH)?.clone(),
    })
}

pub fn segment_name(n: u64) -> String {
    format!("{SEGMENT_PREFIX}{n:010}")
}

fn next_segment_name(name: &str) -> String {
    let n: u64 = name
        .strip_prefix(SEGMENT_PREFIX)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    segment_name(n + 1)
}

/// Segment names, oldest first.
pub async fn segment_names(api: &Api<ConfigMap>) -> Result<Vec<String>, AuditError> {
    let list = api
        .list_metadata(&ListParams::default().labels(&format!("{LABEL_AUDIT}=segment")))
        .await
        .map_err(write_error)?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .map(|m| m.name_any())
        .filter(|n| n.starts_with(SEGMENT_PREFIX))
        .collect();
    names.sort();
    Ok(names)
}

/// The entries of a segment ConfigMap.
pub fn entries_of(cm: &ConfigMap) -> Result<Vec<Entry>, AuditError> {
    let content = cm
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_ENTRIES))
        .map_or("", String::as_str);
    audit::parse_segment(content).map_err(|e| AuditError::Corrupt {
        segment: cm.name_any(),
        reason: e.to_string(),
    })
}

fn write_error(e: kube::Error) -> AuditError {
    AuditError::Write(e.to_string())
}
