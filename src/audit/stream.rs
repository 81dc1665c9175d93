//! The audit stream in the API server: append-only JSON Lines in ConfigMap
//! segments in keymint's namespace (`store`). The pure parts — entries,
//! chaining, segment content, the index, retention — live in their own
//! modules; this one owns the writing.
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
//! or in the index built at start-up) are dropped, so a transition retried
//! after a crash is recorded once. Start-up reads only the segments the
//! head's watermark points to (`watermark`: typically the head alone), so
//! it does not grow with the stream; every write carries the watermark the
//! outbox of transitions not yet recorded allows.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::audit::index::{Index, Tail};
use crate::audit::metrics::AuditMetrics;
use crate::audit::retention::{self, Choice, Retention};
use crate::audit::segment::{append_lines, overflows};
use crate::audit::store::{self, Marks, PutError, Segments, newest_of};
use crate::audit::watermark::{self, Listed, Outbox, Start};
use crate::audit::{AuditError, AuditKey, Draft, Entry, Head, chain_all_sealed, pruned_draft};

pub use crate::audit::store::{DATA_ENTRIES, LABEL_AUDIT, SEGMENT_PREFIX};

/// Requests taken into one batch (each request may hold a few drafts).
const MAX_BATCH: usize = 256;
/// How long a batch waits for company during a burst.
const BATCH_LINGER: Duration = Duration::from_millis(10);
/// Write conflicts retried within one batch before the batch fails.
const CAS_ATTEMPTS: usize = 16;
/// How far back before the newest entry the start-up index reaches in a
/// stream without a watermark (written by an older keymint), and before the
/// watermark for unmarked segments. A transition is appended right after
/// the status write that made it, or retried within the reconcile backoff
/// (minutes); anything older than the window is in the stream already.
const TAIL_WINDOW: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub namespace: String,
    pub segment_bytes: usize,
    pub retention: Retention,
    pub instance: String,
    /// Counts appended entries (keymint_audit_appends_total).
    pub appends: prometheus_client::metrics::counter::Counter<u64, std::sync::atomic::AtomicU64>,
    /// Segments read at start-up (keymint_audit_segments_read_at_open).
    pub segments_read: prometheus_client::metrics::gauge::Gauge,
    /// Size, bound, prunes, entries per namespace.
    pub metrics: AuditMetrics,
    /// Seals prunings and the stream's first entry (`seal`).
    pub key: Arc<AuditKey>,
}

struct Request {
    drafts: Vec<Draft>,
    /// Per draft: whether this append wrote it (false: already recorded).
    done: oneshot::Sender<Result<Vec<bool>, AuditError>>,
}

/// The dedup keys a write appended.
type Appended = HashSet<(String, u64)>;

/// The handle reconciles use.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Request>,
    index: Arc<Mutex<Index>>,
    outbox: Arc<Mutex<Outbox>>,
    pub instance: String,
}

impl AuditLog {
    /// Reads what start-up needs to know is recorded (the segments the
    /// head's watermark points to, or the tail) and starts the appender.
    pub async fn open(client: Client, options: AuditOptions) -> Result<AuditLog, AuditError> {
        let segments = Segments::new(client, &options.namespace);
        let listed = segments.list().await?;
        let (index, read) = read_start(&segments, &listed).await?;
        info!(
            segments = listed.len(),
            segments_read = read,
            indexed_keys = index.keys(),
            watermark = index.covered_from().map(|t| t.to_string()),
            "audit stream opened"
        );
        options
            .segments_read
            .set(i64::try_from(read).unwrap_or(i64::MAX));
        let max = options.retention.max_segments;
        options.metrics.set_size(listed.len(), max);
        let hold = watermark::HOLD;
        let outbox = Outbox::new(index.covered_from(), Timestamp::now(), hold);
        let outbox = Arc::new(Mutex::new(outbox));
        let index = Arc::new(Mutex::new(index));
        let (tx, rx) = mpsc::channel(4096);
        let appender = Appender {
            head_name: listed
                .last()
                .map_or_else(|| store::segment_name(1), |s| s.name.clone()),
            segments,
            options: options.clone(),
            index: index.clone(),
            outbox: outbox.clone(),
            written: None,
        };
        tokio::spawn(appender.run(rx));
        Ok(AuditLog {
            tx,
            index,
            outbox,
            instance: options.instance,
        })
    }

    /// Registers transition `transition` of ApiKey `uid`, made at `at`,
    /// before the status write that makes it (or the append that records
    /// it): until an append settles it, no write vouches for it.
    pub fn expect(&self, uid: &str, transition: u64, at: Timestamp) {
        lock(&self.outbox).expect(uid, transition, at);
    }

    /// Transition `transition` of ApiKey `uid` was found in the stream.
    pub fn settle(&self, uid: &str, transition: u64) {
        lock(&self.outbox).settle(uid, transition);
    }

    /// Whether transition `transition` of ApiKey `uid`, made at `at`, is in
    /// the stream. Transitions older than the indexed tail are.
    pub fn is_recorded(&self, uid: &str, transition: u64, at: Timestamp) -> bool {
        lock(&self.index).is_recorded(uid, transition, at)
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
            .send(Request {
                drafts: drafts.clone(),
                done,
            })
            .await
            .map_err(|_| AuditError::Stopped)?;
        let written = wait.await.map_err(|_| AuditError::Stopped)??;
        // Written now or found there: either way in the stream.
        let mut outbox = lock(&self.outbox);
        for draft in &drafts {
            outbox.settle(&draft.uid, draft.transition);
        }
        Ok(written)
    }
}

/// The start-up index and how many segments it took to build.
async fn read_start(segments: &Segments, listed: &[Listed]) -> Result<(Index, usize), AuditError> {
    match watermark::plan(listed) {
        Start::Tail => {
            let names: Vec<String> = listed.iter().map(|s| s.name.clone()).collect();
            read_tail(segments, &names).await
        }
        Start::Watermark {
            from,
            read,
            unmarked,
        } => read_watermarked(segments, from, &read, &unmarked).await,
    }
}

/// The index of what the stream holds, read from its newest segment back
/// as far as [`TAIL_WINDOW`] reaches (a stream without a watermark).
async fn read_tail(segments: &Segments, names: &[String]) -> Result<(Index, usize), AuditError> {
    let mut tail = Tail::new(TAIL_WINDOW);
    let mut read = 0;
    for name in names.iter().rev() {
        let Some(cm) = segments.get_opt(name).await? else {
            continue;
        };
        read += 1;
        if !tail.add_older(&segments.entries_of(&cm)?) {
            break;
        }
    }
    Ok((tail.index(), read))
}

/// The index of what the stream holds from `from` (the head's watermark):
/// the segments `read`, then the `unmarked` ones (newest first) by the
/// window rule.
async fn read_watermarked(
    segments: &Segments,
    from: Timestamp,
    read: &[String],
    unmarked: &[String],
) -> Result<(Index, usize), AuditError> {
    let mut index = Index::covering(from);
    let mut count = 0;
    for name in read {
        if let Some(cm) = segments.get_opt(name).await? {
            index.add_all(&segments.entries_of(&cm)?);
            count += 1;
        }
    }
    let window = SignedDuration::try_from(TAIL_WINDOW).unwrap_or_default();
    for name in unmarked {
        let Some(cm) = segments.get_opt(name).await? else {
            continue;
        };
        let entries = segments.entries_of(&cm)?;
        index.add_all(&entries);
        count += 1;
        if watermark::reaches_back(&entries, from, window) {
            break;
        }
    }
    Ok((index, count))
}

fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

struct Appender {
    segments: Segments,
    options: AuditOptions,
    index: Arc<Mutex<Index>>,
    /// What this process has not yet seen recorded: each write's watermark.
    outbox: Arc<Mutex<Outbox>>,
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
    /// The time of its newest entry.
    newest: Option<Timestamp>,
    /// The dedup keys of its entries. A set: with thousands of entries in a
    /// segment, a linear search per draft was the operator's hottest code in
    /// the 10k benchmark.
    recorded: Appended,
}

impl Segment {
    /// A segment that does not exist yet, continuing the chain from `prev`.
    fn new(name: String, prev: Head) -> Segment {
        Segment {
            name,
            resource_version: None,
            content: String::new(),
            head: prev.clone(),
            prev,
            newest: None,
            recorded: Appended::new(),
        }
    }

    /// This segment's ConfigMap, holding `content`, carrying `watermark`.
    fn configmap(&self, content: &str, sealed: bool, watermark: Option<Timestamp>) -> ConfigMap {
        let version = self.resource_version.clone();
        let marks = Marks {
            newest: self.newest,
            watermark,
        };
        store::configmap(&self.name, version, &self.prev, content, sealed, marks)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rollover {
    /// Seal the head and start the next segment when the drafts do not fit.
    WhenFull,
    /// Append to the head regardless (for the one small `pruned` entry).
    Never,
}

impl Appender {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut busy = false;
        while let Some(first) = rx.recv().await {
            let batch = collect(&mut rx, first, busy).await;
            busy = batch.len() > 1;
            let drafts: Vec<Draft> = batch
                .iter()
                .flat_map(|r| r.drafts.iter().cloned())
                .collect();
            let result = self.write(drafts, Rollover::WhenFull).await;
            if let Err(e) = &result {
                warn!(error = %e, "audit append failed; the transitions will be retried");
            }
            answer(batch, &result);
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
            let fresh = self.fresh(&segment, &drafts);
            if fresh.is_empty() {
                self.written = Some(segment);
                return Ok(Appended::new());
            }
            // Sealed: prunings, and entry 1 (keymint started the stream).
            let (entries, head) = chain_all_sealed(&segment.head, fresh, &self.options.key);
            let full = rollover == Rollover::WhenFull
                && overflows(&segment.content, &entries, self.options.segment_bytes);
            let outcome = match full {
                true => self.roll_over(&segment, &entries).await,
                false => self.append_to(segment, &entries, head).await,
            };
            match outcome {
                Ok(written) => return Ok(self.landed(written, &entries, full).await),
                Err(PutError::Race) => continue,
                Err(PutError::Failed(e)) => return Err(e),
            }
        }
        Err(AuditError::Contention {
            namespace: self.segments.namespace().to_string(),
            segment: self.head_name.clone(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// The drafts neither `segment` nor the index holds yet. "pruned"
    /// entries have no uid: their key is the last pruned seq, so a retried
    /// pruning is dropped too.
    fn fresh<'d>(&self, segment: &Segment, drafts: &'d [Draft]) -> Vec<&'d Draft> {
        let index = lock(&self.index);
        drafts
            .iter()
            .filter(|d| {
                !segment.recorded.contains(&d.dedup_key()) && !index.holds(&d.uid, d.transition)
            })
            .collect()
    }

    /// After a write landed: keeps the segment as written, counts and
    /// indexes the entries, and applies retention after a rollover.
    async fn landed(
        &mut self,
        mut written: Segment,
        entries: &[Entry],
        rolled_over: bool,
    ) -> Appended {
        written
            .recorded
            .extend(entries.iter().map(Entry::dedup_key));
        self.written = Some(written);
        self.options.appends.inc_by(entries.len() as u64);
        for entry in entries {
            self.options.metrics.count_entry(&entry.namespace);
        }
        lock(&self.index).add_all(entries);
        if rolled_over {
            self.prune().await;
        }
        entries.iter().map(Entry::dedup_key).collect()
    }

    /// Reads the head segment, following seals forward.
    async fn read_head(&mut self) -> Result<Segment, AuditError> {
        let mut chain_from = Head::genesis();
        loop {
            let Some(cm) = self.segments.get_opt(&self.head_name).await? else {
                return Ok(Segment::new(self.head_name.clone(), chain_from));
            };
            let entries = self.segments.entries_of(&cm)?;
            // Whatever another instance appended since this one last wrote
            // is in the segments read here: index it, so that it is never
            // appended twice.
            lock(&self.index).add_all(&entries);
            let prev = store::prev_of(&cm, &entries).unwrap_or(chain_from);
            let head = store::head_of(&cm, &entries).unwrap_or_else(|| prev.clone());
            if store::is_sealed(&cm) {
                chain_from = head;
                self.head_name = store::next_segment_name(&self.head_name);
                continue;
            }
            return Ok(Segment {
                name: self.head_name.clone(),
                resource_version: cm.resource_version(),
                content: store::content_of(&cm).to_string(),
                prev,
                head,
                newest: newest_of(&entries),
                recorded: entries.iter().map(Entry::dedup_key).collect(),
            });
        }
    }

    /// Appends `entries` (which end at `head`) to `segment`; returns it as
    /// written (without `entries`' dedup keys).
    async fn append_to(
        &self,
        segment: Segment,
        entries: &[Entry],
        head: Head,
    ) -> Result<Segment, PutError> {
        let content = append_lines(&segment.content, entries);
        let segment = Segment {
            newest: segment.newest.max(newest_of(entries)),
            ..segment
        };
        let resource_version = self
            .segments
            .put(&segment.configmap(&content, false, self.watermark()))
            .await?;
        Ok(Segment {
            resource_version,
            content,
            head,
            ..segment
        })
    }

    /// The watermark a write made now carries.
    fn watermark(&self) -> Option<Timestamp> {
        lock(&self.outbox).watermark(Timestamp::now())
    }

    /// Seals the full head segment, then starts the next with `entries`;
    /// returns the next segment as written (without `entries`' dedup keys).
    async fn roll_over(
        &mut self,
        segment: &Segment,
        entries: &[Entry],
    ) -> Result<Segment, PutError> {
        let sealed = segment.configmap(&segment.content, true, self.watermark());
        self.segments.put(&sealed).await?;
        let mut next = Segment::new(
            store::next_segment_name(&segment.name),
            segment.head.clone(),
        );
        next.content = append_lines("", entries);
        next.newest = newest_of(entries);
        next.head = entries
            .last()
            .map_or_else(|| segment.head.clone(), Head::of);
        self.head_name = next.name.clone();
        next.resource_version = self
            .segments
            .put(&next.configmap(&next.content, false, self.watermark()))
            .await?;
        Ok(next)
    }

    /// Applies retention after a rollover: records what goes (a "pruned"
    /// entry that vouches for the new oldest segment), then deletes.
    async fn prune(&mut self) {
        let Ok(names) = self.segments.names().await else {
            return;
        };
        let (by_age, by_size) = self.choose(&names).await;
        let doomed = &names[..by_age + by_size];
        let pruned = match doomed.last() {
            None => false,
            Some(last) => match self.ends_at(last).await {
                Some(through) => self.vouch(&through, doomed.len()).await,
                None => false,
            },
        };
        if pruned {
            self.delete(doomed).await;
            self.options.metrics.count_pruned("age", by_age);
            self.options.metrics.count_pruned("size", by_size);
        }
        let kept = names.len() - if pruned { doomed.len() } else { 0 };
        let max = self.options.retention.max_segments;
        self.options.metrics.set_size(kept, max);
        if self.options.retention.over_bound(kept) {
            warn!(
                segments = kept,
                max_segments = max,
                "the audit stream is over its size bound; nothing younger than --audit-retention-floor is pruned, and writing goes on"
            );
        }
    }

    /// How many of the oldest segments retention removes (past the age,
    /// then for the size bound), reading the segments it asks about.
    async fn choose(&self, names: &[String]) -> (usize, usize) {
        let retention = &self.options.retention;
        let now = Timestamp::now();
        let mut newest = Vec::new();
        let mut choice = retention::choose(retention, names.len(), &newest, now);
        while let (Choice::ReadNext, Some(name)) = (choice, names.get(newest.len())) {
            newest.push(self.newest_time(name).await);
            choice = retention::choose(retention, names.len(), &newest, now);
        }
        match choice {
            Choice::Remove { by_age, by_size } if by_age + by_size <= names.len() => {
                (by_age, by_size)
            }
            _ => (0, 0),
        }
    }

    /// The time of segment `name`'s newest entry (None: gone, empty or
    /// unreadable).
    async fn newest_time(&self, name: &str) -> Option<Timestamp> {
        let cm = self.segments.get_opt(name).await.ok().flatten()?;
        // The newest, not the last: an entry's time is its transition's,
        // and a retried transition is appended after younger ones.
        newest_of(&self.segments.entries_of(&cm).ok()?)
    }

    /// What the entry after segment `name` links to (None: gone or
    /// unreadable).
    async fn ends_at(&self, name: &str) -> Option<Head> {
        let cm = self.segments.get_opt(name).await.ok().flatten()?;
        store::head_of(&cm, &self.segments.entries_of(&cm).ok()?)
    }

    /// Appends the "pruned" entry for `segments` segments ending with the
    /// entry `through`; returns whether it is in the stream.
    async fn vouch(&mut self, through: &Head, segments: usize) -> bool {
        let draft = pruned_draft(Timestamp::now(), &self.options.instance, through, segments);
        // Into the current head even if that passes the segment size by one
        // small entry: rolling over here would start yet another segment
        // before the old ones are gone.
        match Box::pin(self.write(vec![draft], Rollover::Never)).await {
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e, "could not record pruning; keeping the segments");
                false
            }
        }
    }

    async fn delete(&self, doomed: &[String]) {
        for name in doomed {
            if let Err(e) = self.segments.delete(name).await {
                warn!(error = %e, segment = %name, "could not delete a pruned audit segment");
            }
        }
        info!(
            segments = doomed.len(),
            "audit segments pruned by retention"
        );
    }
}

/// One batch: `first` and the requests already waiting, up to
/// [`MAX_BATCH`]. In a burst (the last batch had company) it waits a moment
/// for more: every write rewrites the head segment, so fewer, larger
/// batches keep the writes and bytes down. A lone transition in a quiet
/// system is written at once.
async fn collect(rx: &mut mpsc::Receiver<Request>, first: Request, busy: bool) -> Vec<Request> {
    let mut batch = vec![first];
    let linger = match busy {
        true => BATCH_LINGER,
        false => Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < MAX_BATCH {
        let next = match rx.try_recv() {
            Ok(request) => Some(request),
            Err(_) => tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten(),
        };
        let Some(request) = next else {
            break;
        };
        batch.push(request);
    }
    batch
}

/// Tells each request of a batch what became of its drafts.
fn answer(batch: Vec<Request>, result: &Result<Appended, AuditError>) {
    for request in batch {
        let outcome = result.as_ref().map_err(Clone::clone).map(|appended| {
            request
                .drafts
                .iter()
                .map(|d| appended.contains(&d.dedup_key()))
                .collect()
        });
        let _ = request.done.send(outcome);
    }
}
