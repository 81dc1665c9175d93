//! `keymint create`: an ApiKey owned by the caller, waited for until keymint
//! minted it, and its key shown once.
//!
//! A create that does not end with a key shown leaves nothing behind: a key
//! that was rejected, conflicts, or got no answer in time is removed again,
//! so a person who saw an error never holds a key they do not know of (a
//! rejected key would otherwise wait in line and be minted later). So is a
//! show-once key that could not be shown (its Secret gone or held): someone
//! else may hold it, and it must not verify.

use std::io::Write;
use std::time::Duration;

use clap::{Args, ValueEnum};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use serde::Serialize;

use crate::apikey::lifecycle::reveal::REVEALED_ANNOTATION;
use crate::apikey::{ApiKey, ApiKeySpec, Phase, key, secret};
use crate::people::connection::{Cluster, Connection};
use crate::people::error::{API_KEYS, Call, PeopleError};
use crate::people::outcome::{self, Verdict};
use crate::people::terminal::{Spinner, escape};

/// The field manager of the people's writes, so managedFields say who.
pub const FIELD_MANAGER: &str = "keymint-cli";

/// How long a show-once key's deleted Secret may take to disappear before
/// the CLI concludes that something holds it (a finalizer): an unheld
/// Secret is gone as soon as its delete returns.
const SECRET_GONE_WAIT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Name of the ApiKey (and, by default, of its Secret).
    pub name: String,
    /// The project the key is for.
    #[arg(long)]
    pub project: String,
    /// What the key is for, shown next to it.
    #[arg(long)]
    pub description: Option<String>,
    /// When the key stops working: an age like `30d`, or RFC 3339.
    #[arg(long, value_name = "30d|RFC3339")]
    pub expires: Option<String>,
    /// Show the key once and leave it nowhere in the cluster: its Secret is
    /// deleted, and the key printed only once the Secret is seen gone; the
    /// reveal is then acknowledged on the ApiKey (keymint records
    /// `revealed`; the key still verifies). For a person's key — workloads
    /// cannot mount it. Needs `delete` on Secrets and `patch` on ApiKeys in
    /// the namespace.
    #[arg(long)]
    pub show_once: bool,
    /// How long to wait for keymint to mint the key.
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
    /// `json` for scripts: one object on stdout, no spinner.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What `-o json` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created<'a> {
    name: String,
    namespace: String,
    project: &'a str,
    owner: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    key_id: Option<&'a str>,
    secret_name: String,
    /// The key was shown once: its Secret is gone.
    show_once: bool,
    key: &'a str,
}

pub async fn run(cluster: &Cluster, args: &CreateArgs) -> Result<(), PeopleError> {
    let expires_at = match &args.expires {
        Some(e) => Some(expiry(e, Timestamp::now()).map_err(PeopleError::Expires)?),
        None => None,
    };
    let owner = cluster.whoami().await?;
    let api = cluster.api_keys();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let created = api
        .create(&params, &request(args, &owner, expires_at))
        .await
        .map_err(|e| {
            Call::new("create", API_KEYS)
                .named(&args.name)
                .in_namespace(&cluster.namespace)
                .failed(e)
        })?;
    let spinner = Spinner::start(
        format!("waiting for keymint to mint ApiKey {}", args.name),
        args.output == Output::Json,
    );
    let waited = wait(&api, &args.name, args.timeout).await;
    spinner.finish();
    let (latest, verdict) = waited?;
    match verdict {
        Verdict::Active => match show(cluster, &latest, args).await {
            // A show-once key that was not shown must not verify: nobody
            // holds it, or someone other than its owner does.
            Err(e) if args.show_once && !matches!(e, PeopleError::NotAcknowledged { .. }) => {
                Err(PeopleError::NotShown {
                    name: args.name.clone(),
                    reason: e.to_string(),
                    removed: remove(&api, &created).await,
                })
            }
            shown => shown,
        },
        Verdict::Waiting if latest.status.is_none() => Err(PeopleError::NotRunning {
            name: args.name.clone(),
            waited: args.timeout,
            removed: remove(&api, &created).await,
        }),
        Verdict::Waiting => Err(PeopleError::NotCreated(format!(
            "ApiKey {} still Pending after {}: {}{}",
            args.name,
            humantime::format_duration(args.timeout),
            outcome::ready_message(&latest).unwrap_or_default(),
            remove(&api, &created).await
        ))),
        Verdict::Failed { phase, message } => {
            let holders = match phase {
                Phase::Rejected => holding_slots(cluster, &latest).await,
                _ => String::new(),
            };
            Err(PeopleError::NotCreated(format!(
                "ApiKey {} was {}: {message}{holders}{}",
                args.name,
                phase_word(phase),
                remove(&api, &created).await
            )))
        }
    }
}

/// `30d` from now, or an RFC 3339 time; never the past (keymint would mint
/// nothing).
pub fn expiry(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let at = match text.parse::<Timestamp>() {
        Ok(at) => at,
        Err(_) => {
            let age = crate::duration::parse_duration(text)
                .map_err(|e| format!("{text:?}: {e}, or an RFC 3339 time"))?;
            let age = jiff::SignedDuration::try_from(age).map_err(|e| e.to_string())?;
            now.checked_add(age).map_err(|e| e.to_string())?
        }
    };
    if at <= now {
        return Err(format!("{text:?} is in the past"));
    }
    Ok(at)
}

/// The ApiKey to create: owned by the caller.
fn request(args: &CreateArgs, owner: &str, expires_at: Option<Timestamp>) -> ApiKey {
    ApiKey::new(
        &args.name,
        ApiKeySpec {
            project: args.project.clone(),
            owner: owner.to_string(),
            description: args.description.clone(),
            expires_at: expires_at.map(Time),
            secret_name: None,
            secret_template: None,
            show_once: args.show_once.then_some(true),
        },
    )
}

/// Polls until keymint decides or `timeout` passes; returns the ApiKey as
/// last seen. A GET every 200 ms rather than a watch: it needs only `get`,
/// and its errors are plain API answers.
async fn wait(
    api: &Api<ApiKey>,
    name: &str,
    timeout: Duration,
) -> Result<(ApiKey, Verdict), PeopleError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = api.get(name).await.map_err(|e| {
            Call::new("get", API_KEYS)
                .named(name)
                .in_namespace(api_namespace(api))
                .failed(e)
        })?;
        let verdict = outcome::verdict(&current);
        if verdict != Verdict::Waiting || tokio::time::Instant::now() >= deadline {
            return Ok((current, verdict));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn api_namespace(api: &Api<ApiKey>) -> &str {
    api.namespace().unwrap_or_default()
}

/// Deletes the ApiKey this command created (that UID, no other): the words
/// to append to the error that follows.
async fn remove(api: &Api<ApiKey>, created: &ApiKey) -> String {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: created.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&created.name_any(), &params).await {
        Ok(_) => format!("; ApiKey {} was removed again", created.name_any()),
        Err(e) => format!(
            "; removing ApiKey {} failed ({}), delete it yourself",
            created.name_any(),
            Call::new("delete", API_KEYS).failed(e)
        ),
    }
}

/// "; keys holding the slots: a, b" for a rejected key. Quota is per owner
/// and project across namespaces: all namespaces if the caller may list
/// them, else this one.
async fn holding_slots(cluster: &Cluster, me: &ApiKey) -> String {
    let params = ListParams::default();
    let all: Api<ApiKey> = Api::all(cluster.client.clone());
    let listed = match all.list(&params).await {
        Ok(list) => Ok(list),
        Err(_) => cluster.api_keys().list(&params).await,
    };
    let Ok(list) = listed else {
        return String::new();
    };
    let holders = outcome::slot_holders(
        &list.items,
        &me.spec.project,
        &me.spec.owner,
        &me.uid().unwrap_or_default(),
        &cluster.namespace,
    );
    if holders.is_empty() {
        return String::new();
    }
    format!("; keys holding the slots: {}", holders.join(", "))
}

fn phase_word(phase: Phase) -> &'static str {
    match phase {
        Phase::Rejected => "rejected",
        Phase::Conflict => "not minted (conflict)",
        Phase::Expired => "expired",
        Phase::SecretLost => "minted but its Secret is gone",
        Phase::SecretTampered => "minted but its Secret was changed",
        Phase::NeverShown => "minted but never shown",
        Phase::Pending | Phase::Active => "not minted",
    }
}

/// Reads the key from its Secret, checks it is the one minted (its hash
/// is the status's), and prints it once. A show-once key's Secret is
/// deleted first and the key printed only once that Secret is seen gone —
/// a finalizer can hold a deleted Secret, key and all, for anyone who may
/// read it — then the reveal is acknowledged. A crash before the print
/// leaves a key nobody saw (never acknowledged: keymint records it never
/// shown and it stops verifying); never a key shown and still kept.
async fn show(cluster: &Cluster, api_key: &ApiKey, args: &CreateArgs) -> Result<(), PeopleError> {
    let secret_name = secret::name(api_key);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let found = secrets.get(&secret_name).await.map_err(|e| {
        Call::new("get", "secrets")
            .named(&secret_name)
            .in_namespace(&cluster.namespace)
            .failed(e)
    })?;
    let bad = |reason: &str| PeopleError::BadSecret {
        name: api_key.name_any(),
        secret: secret_name.clone(),
        reason: reason.to_string(),
    };
    let bytes = found
        .data
        .as_ref()
        .and_then(|d| d.get(secret::DATA_KEY))
        .ok_or_else(|| bad("it has no api-key"))?;
    let text = std::str::from_utf8(&bytes.0).map_err(|_| bad("not text"))?;
    let minted = key::parse(text).map_err(|_| bad("not a keymint key"))?;
    let status = api_key.status.clone().unwrap_or_default();
    if status.key_hash.as_deref() != Some(key::hash(&minted).as_str()) {
        return Err(bad("its hash is not the one in the ApiKey's status"));
    }
    if args.show_once {
        match forget(&secrets, &found).await {
            Ok(()) => {}
            Err(Forget::Failed(e)) => return Err(e),
            Err(Forget::Held { finalizers }) => {
                return Err(PeopleError::SecretHeld {
                    secret: secret_name.clone(),
                    namespace: cluster.namespace.clone(),
                    finalizers: finalizers.join(", "),
                });
            }
        }
    }
    let shown = Shown {
        key_id: &status.key_id,
        secret_name: &secret_name,
        kept: !args.show_once,
    };
    print_key(api_key, &shown, minted.expose(), args.output)?;
    match (args.show_once, &status.key_id) {
        (true, Some(key_id)) => acknowledge(cluster, api_key, key_id).await,
        _ => Ok(()),
    }
}

/// Why a show-once key's Secret is not known to be gone.
enum Forget {
    /// The delete was refused or failed.
    Failed(PeopleError),
    /// Deleted, but still there after [`SECRET_GONE_WAIT`]: held by these
    /// finalizers.
    Held { finalizers: Vec<String> },
}

/// Deletes the Secret read (that UID, no other) and reads until no Secret
/// with that UID exists: a delete that returned proves nothing while a
/// finalizer holds the object.
async fn forget(secrets: &Api<Secret>, found: &Secret) -> Result<(), Forget> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: found.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let name = found.name_any();
    let call = || {
        Call::new("delete", "secrets")
            .named(&name)
            .in_namespace(secrets.namespace().unwrap_or_default())
    };
    secrets
        .delete(&name, &params)
        .await
        .map_err(|e| Forget::Failed(call().failed(e)))?;
    let deadline = tokio::time::Instant::now() + SECRET_GONE_WAIT;
    loop {
        let now = secrets.get_opt(&name).await.map_err(|e| {
            Forget::Failed(
                Call::new("get", "secrets")
                    .named(&name)
                    .in_namespace(secrets.namespace().unwrap_or_default())
                    .failed(e),
            )
        })?;
        let still = now.filter(|s| s.uid() == found.uid());
        let Some(still) = still else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Forget::Held {
                finalizers: still.finalizers().to_vec(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records on the ApiKey (that UID) that its owner was shown the key with
/// this id: what makes keymint record `revealed` rather than never shown.
async fn acknowledge(cluster: &Cluster, api_key: &ApiKey, key_id: &str) -> Result<(), PeopleError> {
    let name = api_key.name_any();
    let patch = serde_json::json!({
        "metadata": {
            // A precondition: the patch fails on another object of the name.
            "uid": api_key.uid(),
            "annotations": {REVEALED_ANNOTATION: key_id},
        }
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    cluster
        .api_keys()
        .patch(&name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| PeopleError::NotAcknowledged {
            name: name.clone(),
            namespace: cluster.namespace.clone(),
            key_id: key_id.to_string(),
            reason: Call::new("patch", API_KEYS)
                .named(&name)
                .in_namespace(&cluster.namespace)
                .failed(e)
                .to_string(),
        })?;
    Ok(())
}

/// What the printed lines say besides the key.
struct Shown<'a> {
    key_id: &'a Option<String>,
    secret_name: &'a str,
    /// Whether the Secret keeps the key (not a show-once key).
    kept: bool,
}

fn print_key(
    api_key: &ApiKey,
    shown: &Shown,
    key: &str,
    output: Output,
) -> Result<(), PeopleError> {
    let (key_id, secret_name) = (shown.key_id, shown.secret_name);
    let namespace = api_key.namespace().unwrap_or_default();
    let expires_at = api_key.spec.expires_at.as_ref().map(|t| t.0.to_string());
    let mut stdout = std::io::stdout().lock();
    if output == Output::Json {
        let created = Created {
            name: api_key.name_any(),
            namespace,
            project: &api_key.spec.project,
            owner: &api_key.spec.owner,
            description: api_key.spec.description.as_deref(),
            expires_at,
            key_id: key_id.as_deref(),
            secret_name: secret_name.to_string(),
            show_once: !shown.kept,
            key,
        };
        let line = serde_json::to_string(&created).map_err(std::io::Error::other)?;
        writeln!(stdout, "{line}")?;
        return Ok(());
    }
    eprintln!(
        "ApiKey {} is Active: key id {}, project {}, owner {}, {}.",
        escape(&api_key.name_any()),
        escape(key_id.as_deref().unwrap_or("-")),
        escape(&api_key.spec.project),
        escape(&api_key.spec.owner),
        expires_at.map_or("no expiry".to_string(), |t| format!("expires {t}"))
    );
    writeln!(stdout, "{key}")?;
    stdout.flush()?;
    match shown.kept {
        true => eprintln!(
            "Copy this key now: keymint will not show it again. \
             (Workloads read it from Secret {} in namespace {}.)",
            escape(secret_name),
            escape(&namespace)
        ),
        false => eprintln!(
            "Copy this key now: it exists nowhere else. Its Secret was deleted; a lost key \
             is replaced by deleting the ApiKey and creating a new one."
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_an_age_or_a_time_and_never_the_past() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().expect("now");
        assert_eq!(
            expiry("30d", now).expect("age").to_string(),
            "2026-12-31T12:00:00Z"
        );
        assert_eq!(
            expiry("2027-01-31T00:00:00Z", now)
                .expect("time")
                .to_string(),
            "2027-01-31T00:00:00Z"
        );
        assert!(
            expiry("2026-01-01T00:00:00Z", now)
                .unwrap_err()
                .contains("in the past")
        );
        assert!(expiry("0s", now).unwrap_err().contains("in the past"));
        assert!(expiry("tomorrow", now).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn the_request_is_owned_by_the_caller() {
        let args = CreateArgs {
            name: "ci".into(),
            project: "payments".into(),
            description: Some("CI deploy".into()),
            expires: None,
            show_once: false,
            timeout: Duration::from_secs(30),
            output: Output::Text,
            connection: Connection::default(),
        };
        let at: Timestamp = "2027-01-31T00:00:00Z".parse().expect("time");
        let k = request(&args, "alice@example.com", Some(at));
        assert_eq!(k.name_any(), "ci");
        assert_eq!(k.spec.owner, "alice@example.com");
        assert_eq!(k.spec.project, "payments");
        assert_eq!(k.spec.description.as_deref(), Some("CI deploy"));
        assert_eq!(k.spec.expires_at, Some(Time(at)));
        assert_eq!(k.spec.secret_name, None);
    }
}
