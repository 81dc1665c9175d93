//! Transition Events off the critical path. A mint is done once its Secret,
//! status and audit entry are written; its Event is for `kubectl describe`
//! and can come a moment later. Reconciles hand Events to a bounded queue
//! that a few publishers drain. While keys wait to be reconciled the
//! publishers hold back — each Event waits up to `HOLD` for the line to
//! empty — so that in a burst the API server's work goes to Secrets and
//! statuses first: an Event is one more write for it, as a Secret create
//! is, and its CPU is the shared ceiling. Under a burst Events arrive later, not never;
//! one that finds the queue full is dropped and counted
//! (`keymint_events_dropped_total`), never silently.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::apikey::ApiKey;
use crate::texts::{Span, Texts, text};

/// Events waiting to be published; beyond this a burst drops (and counts).
/// A held-back publisher sends one every `HOLD`, so a burst of 100,000
/// creates fills any queue: at 50,000 it held 11.6 MiB of Notices (before
/// they were packed) at that burst's peak. client-go's broadcaster queues
/// 1,000; the audit stream, not the Events, is the record of every
/// transition.
const CAPACITY: usize = 10_000;
/// Publishers: fewer than the reconciles, so Events never crowd out mints.
const PUBLISHERS: usize = 2;
/// How long shutdown waits for queued Events.
const FLUSH: Duration = Duration::from_secs(5);
/// Longest an Event is held back for keys waiting to be reconciled: under
/// a burst that never ends, each publisher still sends one this often.
const HOLD: Duration = Duration::from_secs(2);
/// How often a held-back publisher looks at the line again.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// A transition Event as it waits in the queue. kube's `Event` and the
/// `ObjectReference` it is about are built when it is published: together
/// they are ~800 bytes, and a burst holds one per key until its end (up to
/// `CAPACITY`). The note and the ApiKey's namespace, name, UID and resource
/// version lie end to end in one allocation: as five strings they took
/// 330 bytes a Notice at 100,000 keys.
pub struct Notice {
    type_: EventType,
    reason: &'static str,
    action: &'static str,
    /// The ApiKey's namespace, name, UID and resource version, then the
    /// note, joined (`crate::texts`).
    texts: Box<str>,
    regarding: [Span; 4],
    note: Span,
}

impl Notice {
    pub fn new(
        type_: EventType,
        reason: &'static str,
        action: &'static str,
        note: &str,
        api_key: &ApiKey,
    ) -> Notice {
        let meta = &api_key.metadata;
        let mut texts = Texts::default();
        let regarding = [
            &meta.namespace,
            &meta.name,
            &meta.uid,
            &meta.resource_version,
        ]
        .map(|field| texts.add(field.as_deref().unwrap_or_default()));
        let note = texts.add(note);
        Notice {
            type_,
            reason,
            action,
            texts: texts.joined(),
            regarding,
            note,
        }
    }

    fn event(&self) -> Event {
        Event {
            type_: self.type_,
            reason: self.reason.to_string(),
            note: Some(text(&self.texts, self.note).to_string()),
            action: self.action.to_string(),
            secondary: None,
        }
    }

    fn reference(&self) -> ObjectReference {
        let [namespace, name, uid, resource_version] = self.regarding.map(|span| {
            Some(text(&self.texts, span))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        });
        ObjectReference {
            api_version: Some(ApiKey::api_version(&()).into_owned()),
            kind: Some(ApiKey::kind(&()).into_owned()),
            namespace,
            name,
            uid,
            resource_version,
            field_path: None,
        }
    }
}

/// Whether keys are waiting to be reconciled.
pub type Busy = Arc<dyn Fn() -> bool + Send + Sync>;

/// The handle reconciles push Events into.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<Notice>,
    dropped: Counter,
}

/// Waits for the queued Events once every [`EventQueue`] is gone.
pub struct Flush(Vec<JoinHandle<()>>);

impl EventQueue {
    /// Starts the publishers. Each Event goes through a fresh Recorder: the
    /// shared one caches every Event it published for six minutes and scans
    /// that cache on each publish (10,000 entries after 10,000 mints).
    pub fn start(
        client: Client,
        source: Reporter,
        dropped: Counter,
        busy: Busy,
    ) -> (EventQueue, Flush) {
        let (tx, rx) = mpsc::channel::<Notice>(CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        let publishers = (0..PUBLISHERS)
            .map(|_| {
                let (rx, client, source) = (rx.clone(), client.clone(), source.clone());
                tokio::spawn(publish(rx, client, source, busy.clone()))
            })
            .collect();
        (EventQueue { tx, dropped }, Flush(publishers))
    }

    /// Queues an Event; never waits.
    pub fn push(&self, notice: Notice) {
        if self.tx.try_send(notice).is_err() {
            self.dropped.inc();
        }
    }
}

impl Flush {
    /// Publishes what is still queued (for at most a few seconds).
    pub async fn wait(self) {
        let all = futures::future::join_all(self.0);
        if tokio::time::timeout(FLUSH, all).await.is_err() {
            warn!("shutting down with Events still queued");
        }
    }
}

async fn publish(
    rx: Arc<Mutex<mpsc::Receiver<Notice>>>,
    client: Client,
    source: Reporter,
    busy: Busy,
) {
    loop {
        let next = rx.lock().await.recv().await;
        let Some(notice) = next else {
            return;
        };
        hold_back(&busy).await;
        let recorder = Recorder::new(client.clone(), source.clone());
        if let Err(e) = recorder.publish(&notice.event(), &notice.reference()).await {
            warn!(reason = notice.reason, error = %e, "could not publish Event");
        }
    }
}

/// Waits while keys wait to be reconciled, for at most `HOLD`.
async fn hold_back(busy: &Busy) {
    let until = tokio::time::Instant::now() + HOLD;
    while busy() && tokio::time::Instant::now() < until {
        tokio::time::sleep(LOOK_AGAIN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn flag(initially: bool) -> (Arc<AtomicBool>, Busy) {
        let flag = Arc::new(AtomicBool::new(initially));
        let busy = flag.clone();
        (flag, Arc::new(move || busy.load(Ordering::Relaxed)))
    }

    async fn held(busy: &Busy) -> Duration {
        let start = tokio::time::Instant::now();
        hold_back(busy).await;
        start.elapsed()
    }

    #[test]
    fn a_notice_gives_back_its_note_and_the_key_it_is_about() {
        let mut api_key = ApiKey::new(
            "k1",
            serde_json::from_value(serde_json::json!({"project": "p", "owner": "o"}))
                .expect("spec"),
        );
        api_key.metadata.namespace = Some("ns".into());
        api_key.metadata.uid = Some("u-1".into());
        let notice = Notice::new(
            EventType::Normal,
            "Minted",
            "Mint",
            "minted into Secret k1",
            &api_key,
        );
        assert_eq!(
            notice.event().note.as_deref(),
            Some("minted into Secret k1")
        );
        let reference = notice.reference();
        assert_eq!(reference.namespace.as_deref(), Some("ns"));
        assert_eq!(reference.name.as_deref(), Some("k1"));
        assert_eq!(reference.uid.as_deref(), Some("u-1"));
        assert_eq!(reference.resource_version, None);
        assert_eq!(reference.kind.as_deref(), Some("ApiKey"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_controller_publishes_at_once() {
        let (_, busy) = flag(false);
        assert_eq!(held(&busy).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_waits_for_the_line_to_empty() {
        let (line, busy) = flag(true);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            line.store(false, Ordering::Relaxed);
        });
        let waited = held(&busy).await;
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
        assert!(
            waited <= Duration::from_millis(500) + LOOK_AGAIN,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_that_never_ends_still_lets_each_event_out_after_the_hold() {
        let (_, busy) = flag(true);
        let waited = held(&busy).await;
        assert!(
            waited >= HOLD && waited < HOLD + LOOK_AGAIN * 2,
            "{waited:?}"
        );
    }
}
