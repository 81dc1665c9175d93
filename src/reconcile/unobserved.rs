//! Deletions keymint did not see: an ApiKey whose finalizer someone else
//! removed (an admin's patch while keymint was stopped, say) is gone without
//! the `deleted` entry its cleanup would have written. Its Secret is deleted
//! by the garbage collector (the Secret's ownerReference names the ApiKey);
//! what is missing is the record.
//!
//! While keymint runs, the watch tells it each deletion with the ApiKey's
//! last state: keymint's own cleanup appended that ApiKey's `deleted` entry
//! (transition number: the last one its status records, plus one) before
//! letting the finalizer go, so a deletion whose number the stream does not
//! hold is one keymint did not see, and gets a `deleted-unobserved` entry
//! under that same number ([`seen_deleted`]): exactly once, whichever
//! writes first.
//!
//! While keymint is stopped nothing tells it. The quota ledgers remember
//! every key that was minted (an entry stays until an admission finds the
//! key ended), so at start-up — as leader, once
//! the caches are synced — keymint looks for ledger entries whose ApiKey is
//! gone. For those, it reads the whole stream (only then: most starts find
//! none): a key whose deletion the stream holds was deleted by keymint;
//! any other gets one `deleted-unobserved` entry with what keymint last
//! recorded about it (key id, project, owner; never the key). Then the
//! entries are released from their ledgers, so the next start finds nothing
//! — and should it stop in between, the stream already holds the entry and
//! it is not written twice.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::ListParams;
use tracing::{info, warn};

use super::Context;
use crate::apikey::ApiKey;
use crate::apikey::lifecycle;
use crate::audit::store::Segments;
use crate::audit::{Action, AuditError, Draft, Entry};
use crate::quota::slots::SlotError;
use crate::quota::store::LABEL_LEDGER;
use crate::quota::{Ledger, Pair};

/// How long to wait before trying again after a failed look.
const RETRY: Duration = Duration::from_secs(30);

/// A key a ledger holds whose ApiKey is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gone {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub project: String,
    pub owner: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UnobservedError {
    #[error("cannot list the quota ledgers in {namespace} to find deletions keymint did not see: {}", crate::api_error::describe(.source))]
    ListLedgers {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The `deleted-unobserved` entries to append: one for each gone key whose
/// deletion `stream` does not hold, numbered after the last transition the
/// stream recorded for it, with the key id it last recorded. Pure.
pub fn drafts(gone: &[Gone], stream: &[Entry], now: Timestamp, instance: &str) -> Vec<Draft> {
    let mut last: HashMap<&str, &Entry> = HashMap::new();
    let mut deleted: Vec<&str> = Vec::new();
    for entry in stream {
        if matches!(entry.action, Action::Deleted | Action::DeletedUnobserved) {
            deleted.push(&entry.uid);
        }
        let newer = last
            .get(entry.uid.as_str())
            .is_none_or(|seen| seen.transition <= entry.transition);
        if newer {
            last.insert(&entry.uid, entry);
        }
    }
    gone.iter()
        .filter(|g| !deleted.contains(&g.uid.as_str()))
        .map(|g| {
            let known = last.get(g.uid.as_str());
            let key_id = known.and_then(|e| e.key_id.clone());
            let last_words = match known {
                Some(e) => format!("last recorded: {} (transition {})", e.action, e.transition),
                None => "nothing recorded about it in the stream".to_string(),
            };
            Draft {
                time: now,
                action: Action::DeletedUnobserved,
                namespace: g.namespace.clone(),
                name: g.name.clone(),
                uid: g.uid.clone(),
                transition: known.map_or(1, |e| e.transition.saturating_add(1)),
                project: g.project.clone(),
                owner: g.owner.clone(),
                message: format!(
                    "ApiKey deleted without keymint's cleanup (its finalizer was removed by someone \
                     else); key {}; {last_words}; its Secret is deleted by the garbage collector",
                    key_id.as_deref().unwrap_or("(none)"),
                ),
                key_id,
                reason: "DeletedUnobserved".to_string(),
                instance: instance.to_string(),
                pruned_through: None,
            }
        })
        .collect()
}

/// The `deleted-unobserved` entry of an ApiKey the watch says is gone, if
/// the stream does not hold its deletion (`recorded`: whether it holds the
/// deletion's number). Pure.
pub fn seen_deleted_draft(
    api_key: &ApiKey,
    recorded: bool,
    now: Timestamp,
    instance: &str,
) -> Option<Draft> {
    if recorded {
        return None;
    }
    let status = api_key.status.as_ref();
    let key_id = status.and_then(|s| s.key_id.clone());
    let phase = status
        .and_then(|s| s.phase)
        .map_or_else(|| "none".to_string(), |p| format!("{p:?}"));
    Some(Draft {
        time: now,
        action: Action::DeletedUnobserved,
        namespace: api_key.namespace().unwrap_or_default(),
        name: api_key.name_any(),
        uid: api_key.uid().unwrap_or_default(),
        transition: deletion_number(api_key),
        project: api_key.spec.project.clone(),
        owner: api_key.spec.owner.clone(),
        message: format!(
            "ApiKey deleted without keymint's cleanup (its finalizer was removed by someone else); \
             key {}; last phase {phase}; its Secret is deleted by the garbage collector",
            key_id.as_deref().unwrap_or("(none)"),
        ),
        key_id,
        reason: "DeletedUnobserved".to_string(),
        instance: instance.to_string(),
        pruned_through: None,
    })
}

/// The transition number an ApiKey's deletion is recorded under: the last
/// one its status records, plus one (as the cleanup numbers it).
fn deletion_number(api_key: &ApiKey) -> u64 {
    lifecycle::last_transition_number(api_key.status.as_ref()).saturating_add(1)
}

/// Records the deletion of `api_key` (its last state, from the watch) if
/// keymint did not see it. Failures are logged: the start-up look finds a
/// minted key's deletion again.
pub async fn seen_deleted(ctx: &Context, api_key: &ApiKey) {
    let uid = api_key.uid().unwrap_or_default();
    let number = deletion_number(api_key);
    let now = Timestamp::now();
    // Asked as of the deletion (its deletionTimestamp): a deletion older
    // than what the stream's index covers counts as recorded.
    let at = api_key
        .metadata
        .deletion_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let recorded = ctx.reporter.audit.is_recorded(&uid, number, at);
    let instance = &ctx.reporter.audit.instance;
    let Some(draft) = seen_deleted_draft(api_key, recorded, now, instance) else {
        return;
    };
    warn!(apikey = %api_key.name_any(), key_id = draft.key_id.as_deref(), "{}", draft.message);
    ctx.reporter.audit.expect(&uid, number, now);
    match ctx.reporter.audit.append(vec![draft]).await {
        Ok(appended) => {
            let new = appended.into_iter().filter(|new| *new).count();
            ctx.reporter.metrics.deletions_unobserved.inc_by(new as u64);
        }
        Err(e) => {
            warn!(apikey = %api_key.name_any(), error = %e, "cannot record a deletion keymint did not see");
        }
    }
    ctx.reporter.audit.settle(&uid, number);
}

/// Records the deletions keymint did not see, retrying until it has looked
/// once without failing.
pub async fn record(ctx: &Context, segments: Segments) {
    loop {
        match look(ctx, &segments).await {
            Ok(recorded) => {
                info!(recorded, "looked for deletions keymint did not see");
                return;
            }
            Err(e) => {
                warn!(error = %e, "looking for deletions keymint did not see; trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// One look; how many entries it appended.
async fn look(ctx: &Context, segments: &Segments) -> Result<usize, UnobservedError> {
    let params = ListParams::default().labels(&format!("{LABEL_LEDGER}=quota"));
    let ledgers =
        ctx.slots
            .ledgers
            .list(&params)
            .await
            .map_err(|source| UnobservedError::ListLedgers {
                namespace: segments.namespace().to_string(),
                source,
            })?;
    let mut gone = Vec::new();
    for cm in &ledgers.items {
        gone.extend(gone_in(ctx, cm).await?);
    }
    if gone.is_empty() {
        return Ok(0);
    }
    let mut stream = Vec::new();
    for (name, content) in crate::audit::cli::read_segments(segments).await? {
        stream.extend(segments.entries(&name, &content)?);
    }
    let drafts = drafts(
        &gone,
        &stream,
        Timestamp::now(),
        &ctx.reporter.audit.instance,
    );
    for draft in &drafts {
        warn!(
            apikey = %format!("{}/{}", draft.namespace, draft.name),
            key_id = draft.key_id.as_deref(),
            "{}",
            draft.message
        );
    }
    let appended = ctx.reporter.audit.append(drafts).await?;
    for g in &gone {
        let pair = Pair {
            project: &g.project,
            owner: &g.owner,
        };
        ctx.slots.release_uid(&pair, &g.uid).await?;
    }
    let new = appended.into_iter().filter(|new| *new).count();
    ctx.reporter.metrics.deletions_unobserved.inc_by(new as u64);
    Ok(new)
}

/// The keys `cm` (a ledger) holds whose ApiKey is gone. A ledger that
/// cannot be read, or does not say its pair, is left to the admissions
/// (which report it).
async fn gone_in(ctx: &Context, cm: &ConfigMap) -> Result<Vec<Gone>, UnobservedError> {
    let annotation = |key: &str| cm.annotations().get(key).cloned();
    let (Some(project), Some(owner)) = (
        annotation("keymint.dev/project"),
        annotation("keymint.dev/owner"),
    ) else {
        return Ok(Vec::new());
    };
    let json = cm.data.as_ref().and_then(|d| d.get(Ledger::DATA_KEY));
    let Some(Ok(ledger)) = json.map(|j| Ledger::from_json(j)) else {
        return Ok(Vec::new());
    };
    let mut gone = Vec::new();
    for (uid, entry) in ledger.iter() {
        if ctx.slots.is_gone(uid, entry).await? {
            gone.push(Gone {
                uid: uid.to_string(),
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
                project: project.clone(),
                owner: owner.clone(),
            });
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Head;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn gone(uid: &str) -> Gone {
        Gone {
            uid: uid.into(),
            namespace: "ns".into(),
            name: format!("key-{uid}"),
            project: "payments".into(),
            owner: "alice".into(),
        }
    }

    fn recorded(uid: &str, action: Action, transition: u64, key_id: Option<&str>) -> Entry {
        let draft = Draft {
            time: ts("2026-03-01T00:00:00Z"),
            action,
            namespace: "ns".into(),
            name: format!("key-{uid}"),
            uid: uid.into(),
            transition,
            project: "payments".into(),
            owner: "alice".into(),
            key_id: key_id.map(str::to_string),
            reason: action.as_str().into(),
            message: String::new(),
            instance: "vm/0".into(),
            pruned_through: None,
        };
        crate::audit::chain(&Head::genesis(), &draft).0
    }

    #[test]
    fn a_gone_key_without_a_deletion_gets_one_entry_with_what_was_last_known() {
        let stream = [
            recorded("u1", Action::Minted, 1, Some("km_one")),
            recorded("u1", Action::ExpiringSoon, 2, Some("km_one")),
        ];
        let drafts = drafts(&[gone("u1")], &stream, ts("2027-01-01T00:00:00Z"), "vm/1");
        assert_eq!(drafts.len(), 1);
        let d = &drafts[0];
        assert_eq!(d.action, Action::DeletedUnobserved);
        assert_eq!((d.uid.as_str(), d.transition), ("u1", 3));
        assert_eq!(d.key_id.as_deref(), Some("km_one"));
        assert_eq!(
            (d.project.as_str(), d.owner.as_str()),
            ("payments", "alice")
        );
        assert!(d.message.contains("expiring-soon"), "{}", d.message);
        assert!(d.message.contains("garbage collector"), "{}", d.message);
    }

    #[test]
    fn a_deletion_the_stream_holds_is_not_recorded_again() {
        let stream = [
            recorded("u1", Action::Minted, 1, Some("km_one")),
            recorded("u1", Action::Deleted, 2, Some("km_one")),
            recorded("u2", Action::Minted, 1, Some("km_two")),
            recorded("u2", Action::DeletedUnobserved, 2, Some("km_two")),
        ];
        let now = ts("2027-01-01T00:00:00Z");
        assert!(drafts(&[gone("u1"), gone("u2")], &stream, now, "vm/1").is_empty());
    }

    #[test]
    fn a_deletion_the_watch_reports_is_recorded_under_the_cleanups_number_unless_recorded() {
        let spec =
            serde_json::from_value(serde_json::json!({"project": "payments", "owner": "alice"}))
                .expect("spec");
        let mut key = ApiKey::new("k", spec);
        key.metadata.namespace = Some("ns".into());
        key.metadata.uid = Some("u1".into());
        key.status = serde_json::from_value(serde_json::json!({
            "phase": "Active", "keyId": "km_one",
            "lastTransitions": [{"number": 1, "action": "minted", "time": "2026-03-01T00:00:00Z", "instance": "vm/0"}],
        }))
        .expect("status");
        let now = ts("2027-01-01T00:00:00Z");
        assert_eq!(seen_deleted_draft(&key, true, now, "vm/1"), None);
        let d = seen_deleted_draft(&key, false, now, "vm/1").expect("a draft");
        assert_eq!(d.action, Action::DeletedUnobserved);
        assert_eq!((d.uid.as_str(), d.transition), ("u1", 2));
        assert_eq!(d.key_id.as_deref(), Some("km_one"));
        assert!(d.message.contains("Active"), "{}", d.message);
    }

    #[test]
    fn a_key_the_stream_never_mentions_is_recorded_as_transition_one() {
        let drafts = drafts(&[gone("u9")], &[], ts("2027-01-01T00:00:00Z"), "vm/1");
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].transition, 1);
        assert_eq!(drafts[0].key_id, None);
        assert!(
            drafts[0].message.contains("nothing recorded"),
            "{}",
            drafts[0].message
        );
    }
}
