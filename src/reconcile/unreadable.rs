//! An ApiKey keymint cannot read (garbage in its status written by someone
//! else, or a spec stored before the schema refused it): reported — Event,
//! log, metric — and left until it changes, without stalling the others.
//! Once it is being deleted it is let go, so its deletion never hangs: the
//! `deleted` entry is appended from what the stored object still says, then
//! keymint's finalizer is removed. Its Secret, if any, is deleted by the
//! garbage collector (the Secret's ownerReference names the ApiKey): keymint
//! cannot tell which Secret is its own without reading the ApiKey.

use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use tracing::warn;

use super::{Context, Error, FINALIZER, Next, error, report};
use crate::apikey::{ApiKey, GuardedApiKey};
use crate::audit::{Action, Draft};

pub async fn reconcile(
    obj: &GuardedApiKey,
    serde_message: &str,
    ctx: &Context,
) -> Result<Next, Error> {
    let reference = obj.object_ref(&());
    let stored = stored(ctx, obj).await;
    let detail = stored
        .as_ref()
        .and_then(crate::apikey::unreadable_field)
        .unwrap_or_else(|| serde_message.to_string());
    let note = format!("keymint cannot read this ApiKey: {detail}");
    warn!(apikey = reference.name.as_deref(), "{note}");
    ctx.reporter.metrics.count_failure("InvalidSpec");
    report::warning(&ctx.reporter.recorder, &reference, "InvalidSpec", &note).await;
    let held = obj.finalizers().iter().any(|f| f == FINALIZER);
    if obj.meta().deletion_timestamp.is_none() || !held {
        return Ok(Next::OnChange);
    }
    let uid = obj.uid().unwrap_or_default();
    let now = Timestamp::now();
    let draft = deletion_draft(
        obj,
        stored.as_ref(),
        &detail,
        now,
        &ctx.reporter.audit.instance,
    );
    let number = draft.transition;
    // Durable before the finalizer goes, as any deletion's entry.
    ctx.reporter.audit.expect(&uid, number, now);
    if !ctx.reporter.audit.is_recorded(&uid, number, now) {
        ctx.reporter.audit.append(vec![draft]).await?;
    }
    release_finalizer(ctx, obj).await?;
    ctx.reporter.audit.settle(&uid, number);
    Ok(Next::OnChange)
}

/// The object as stored, untyped (the guard keeps only serde's message,
/// which does not say where it goes wrong).
async fn stored(ctx: &Context, obj: &GuardedApiKey) -> Option<Value> {
    let resource = ApiResource::erase::<ApiKey>(&());
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let stored = api.get(&obj.name_any()).await.ok()?;
    serde_json::to_value(stored).ok()
}

/// The `deleted` entry of an ApiKey keymint cannot read: who it was from its
/// metadata, project and owner as stored (if they are text), numbered after
/// the transitions its status records. No key id: nothing unreadable is
/// trusted to name a key. Pure.
fn deletion_draft(
    obj: &GuardedApiKey,
    stored: Option<&Value>,
    detail: &str,
    now: Timestamp,
    instance: &str,
) -> Draft {
    let text = |pointer: &str| {
        stored
            .and_then(|s| s.pointer(pointer))
            .and_then(Value::as_str)
            .map_or_else(String::new, str::to_string)
    };
    let last = stored
        .and_then(|s| s.pointer("/status/lastTransitions"))
        .and_then(Value::as_array)
        .and_then(|records| {
            records
                .iter()
                .filter_map(|r| r.get("number")?.as_u64())
                .max()
        })
        .unwrap_or(0);
    Draft {
        time: now,
        action: Action::Deleted,
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        transition: last.saturating_add(1),
        project: text("/spec/project"),
        owner: text("/spec/owner"),
        key_id: None,
        reason: "Deleted".to_string(),
        message: format!(
            "ApiKey deleted; keymint could not read it ({detail}); its Secret, if any, is deleted \
             by the garbage collector"
        ),
        instance: instance.to_string(),
        pruned_through: None,
    }
}

/// Removes keymint's finalizer, against the version read (a concurrent
/// change makes the patch fail with a conflict and the reconcile retry).
async fn release_finalizer(ctx: &Context, obj: &GuardedApiKey) -> Result<(), Error> {
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let kept: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = serde_json::json!({"metadata": {
        "finalizers": kept,
        "resourceVersion": obj.resource_version(),
    }});
    let resource = ApiResource::erase::<ApiKey>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let object = error::Object {
        namespace: &namespace,
        name: &name,
    };
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing holds it any more.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => Err(Error::Stale),
        Err(e) => Err(object.finalizer("remove", e)),
    }
}

#[cfg(test)]
mod tests {
    use kube::core::error_boundary::InvalidObject;

    use super::*;

    #[test]
    fn the_deletion_entry_says_who_it_was_and_that_it_could_not_be_read() {
        let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("k".into()),
            namespace: Some("ns".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let obj = GuardedApiKey(Err(InvalidObject {
            error: "bad".into(),
            metadata: meta,
        }));
        let stored = serde_json::json!({
            "spec": {"project": "payments", "owner": "alice", "expiresAt": "2099-01-31T00:00:00.1234567890Z"},
            "status": {"keyId": "km_planted", "lastTransitions": [{"number": 1}, {"number": 4}, {"number": "x"}]},
        });
        let now: Timestamp = "2027-01-01T00:00:00Z".parse().expect("time");
        let d = deletion_draft(&obj, Some(&stored), "spec.expiresAt: unparsed", now, "vm/1");
        assert_eq!(d.action, Action::Deleted);
        assert_eq!(
            (d.namespace.as_str(), d.name.as_str(), d.uid.as_str()),
            ("ns", "k", "u1")
        );
        assert_eq!(d.transition, 5);
        assert_eq!(
            (d.project.as_str(), d.owner.as_str()),
            ("payments", "alice")
        );
        assert_eq!(d.key_id, None, "nothing unreadable names a key");
        assert!(d.message.contains("spec.expiresAt"), "{}", d.message);

        let bare = deletion_draft(&obj, None, "bad", now, "vm/1");
        assert_eq!(bare.transition, 1);
        assert_eq!(bare.project, "");
    }
}
