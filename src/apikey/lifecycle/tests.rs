//! The lifecycle's rules, pinned: decisions, statuses, transitions and
//! schedules, and how they agree with each other.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{EXPIRING_SOON, READY, RECONCILING, STALLED};
use super::*;
use crate::apikey::action::Transition;
use crate::apikey::secret::{Observed, ProvenKey};
use crate::apikey::{ApiKey, ApiKeySpec, ApiKeyStatus, Phase, TransitionTime};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn minted(hash: &str) -> ApiKeyStatus {
    ApiKeyStatus {
        phase: Some(Phase::Active),
        key_hash: Some(hash.into()),
        ..ApiKeyStatus::default()
    }
}

/// A Secret this ApiKey controls, holding a key with hash `content`;
/// `proven` if its seal proves keymint minted that key for this ApiKey.
fn controlled(content: Option<&str>, proven: bool) -> Observed {
    Observed::Controlled {
        content_hash: content.map(String::from),
        proven: match (proven, content) {
            (true, Some(hash)) => Some(ProvenKey {
                key_id: "km_1".into(),
                key_hash: hash.into(),
                created: Some(ts(NOW)),
            }),
            _ => None,
        },
        uid: Some("secret-uid".into()),
    }
}

const NOW: &str = "2027-01-01T00:00:00Z";

#[test]
fn a_new_key_requests_a_slot() {
    assert_eq!(
        decide(None, None, ts(NOW), &Observed::Missing, None),
        Step::RequestSlot
    );
    let rejected = ApiKeyStatus {
        phase: Some(Phase::Rejected),
        ..ApiKeyStatus::default()
    };
    assert_eq!(
        decide(Some(&rejected), None, ts(NOW), &Observed::Missing, None),
        Step::RequestSlot
    );
}

fn api_key(status: Option<ApiKeyStatus>, expires_at: Option<Timestamp>) -> ApiKey {
    let spec: ApiKeySpec =
        serde_json::from_value(serde_json::json!({"project": "p", "owner": "o"})).expect("spec");
    let mut k = ApiKey::new("k", spec);
    k.spec.expires_at = expires_at.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
    k.status = status;
    k
}

fn with_phase(phase: Phase) -> ApiKeyStatus {
    ApiKeyStatus {
        phase: Some(phase),
        ..ApiKeyStatus::default()
    }
}

#[test]
fn a_key_waits_for_a_slot_exactly_when_decide_would_request_one() {
    let future = Some(ts("2027-06-01T00:00:00Z"));
    let past = Some(ts("2026-12-31T23:59:59Z"));
    let mut statuses = vec![None, Some(minted("h"))];
    statuses.extend(
        [
            Phase::Pending,
            Phase::Active,
            Phase::Rejected,
            Phase::Conflict,
            Phase::Expired,
            Phase::SecretLost,
            Phase::SecretTampered,
        ]
        .map(|p| Some(with_phase(p))),
    );
    for status in &statuses {
        for expires_at in [None, future, past] {
            let key = api_key(status.clone(), expires_at);
            let waits = waits_for_slot(&key, ts(NOW));
            // Skipping the Secret read is only sound where a missing
            // Secret leads to minting (which then finds any Secret);
            // and every key decide sends to mint is in line — but a
            // Conflict key, which is re-checked (Secret read) and not
            // in line: while a foreign Secret holds its name it would
            // hold up every key behind it.
            let requests = decide(
                status.as_ref(),
                expires_at,
                ts(NOW),
                &Observed::Missing,
                None,
            ) == Step::RequestSlot;
            let conflict = status.as_ref().and_then(|s| s.phase) == Some(Phase::Conflict);
            assert_eq!(waits, requests && !conflict, "{status:?} {expires_at:?}");
        }
    }
    let mut deleting = api_key(None, None);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(NOW)),
    );
    assert!(
        !waits_for_slot(&deleting, ts(NOW)),
        "a key being deleted is not in line"
    );
}

#[test]
fn only_a_key_nothing_was_decided_about_is_about_to_mint() {
    let phases = [
        Phase::Pending,
        Phase::Active,
        Phase::Rejected,
        Phase::Conflict,
        Phase::Expired,
        Phase::SecretLost,
        Phase::SecretTampered,
        Phase::NeverShown,
    ];
    let mut statuses = vec![None, Some(minted("h"))];
    statuses.extend(phases.map(|p| Some(with_phase(p))));
    for status in statuses {
        let key = api_key(status.clone(), None);
        let expected = status
            .as_ref()
            .is_none_or(|s| s.key_hash.is_none() && s.phase == Some(Phase::Pending));
        assert_eq!(about_to_mint(&key), expected, "{status:?}");
        // Every key keymint may mint is about to, or waits in line (and
        // has its template read when admitted), or is a Conflict.
        let requests =
            decide(status.as_ref(), None, ts(NOW), &Observed::Missing, None) == Step::RequestSlot;
        let conflict = status.as_ref().and_then(|s| s.phase) == Some(Phase::Conflict);
        assert!(!about_to_mint(&key) || requests, "{status:?}");
        assert!(!requests || about_to_mint(&key) || waits_for_slot(&key, ts(NOW)) || conflict);
    }
    let mut deleting = api_key(None, None);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(NOW)),
    );
    assert!(!about_to_mint(&deleting), "a key being deleted never mints");
}

#[test]
fn a_secret_keymint_cannot_prove_is_a_conflict_and_records_nothing() {
    // Our ownerReference, a well-formed key, no valid seal: what a tenant
    // who may create Secrets can write. Before and after an admission.
    let planted = controlled(Some("sha256:chosen"), false);
    let rejected = with_phase(Phase::Rejected);
    for status in [None, Some(&rejected)] {
        assert_eq!(
            decide(status, None, ts(NOW), &planted, None),
            Step::Conflict
        );
        assert_eq!(decide::unrecorded_key(status, &planted), None);
    }
    let conflict = status(&input(None, None, NOW), &Outcome::Conflict);
    assert_eq!((conflict.key_hash, conflict.key_id), (None, None));
    assert!(
        conflict.conditions[0]
            .message
            .contains("keymint did not mint it"),
        "{:?}",
        conflict.conditions[0]
    );
    // Neither does a Secret with no key in it.
    assert_eq!(
        decide(None, None, ts(NOW), &controlled(None, false), None),
        Step::Conflict
    );
}

#[test]
fn a_minted_key_without_a_recorded_hash_never_mints_again() {
    // A status an older keymint wrote: Tampered, no hash. Whatever holds
    // the name now and proves nothing: still Tampered, nothing recorded.
    let legacy = with_phase(Phase::SecretTampered);
    let planted = controlled(Some("sha256:chosen"), false);
    assert_eq!(
        decide(Some(&legacy), None, ts(NOW), &planted, None),
        Step::Settled(Outcome::Tampered)
    );
    assert_eq!(decide::unrecorded_key(Some(&legacy), &planted), None);
    let tampered = status(&input(Some(&legacy), None, NOW), &Outcome::Tampered);
    assert_eq!(tampered.key_hash, None);
    let key = api_key(Some(tampered.clone()), None);
    assert!(
        !waits_for_slot(&key, ts(NOW)),
        "not in line: younger keys are not held up"
    );
    // Its Secret deleted later: lost, never minted again.
    assert_eq!(
        decide(Some(&tampered), None, ts(NOW), &Observed::Missing, None),
        Step::Settled(Outcome::Lost)
    );
}

#[test]
fn an_expired_key_never_mints_and_its_secret_is_deleted() {
    let past = Some(ts("2026-12-31T23:59:59Z"));
    assert_eq!(
        decide(None, past, ts(NOW), &Observed::Missing, None),
        Step::Expire {
            delete_secret: None
        }
    );
    assert_eq!(
        decide(
            Some(&minted("h")),
            past,
            ts(NOW),
            &controlled(Some("h"), false),
            None
        ),
        Step::Expire {
            delete_secret: Some("secret-uid".into())
        }
    );
    // Expiring exactly now counts as expired.
    assert!(matches!(
        decide(None, Some(ts(NOW)), ts(NOW), &Observed::Missing, None),
        Step::Expire { .. }
    ));
    // A foreign Secret is never deleted.
    assert_eq!(
        decide(None, past, ts(NOW), &Observed::Foreign, None),
        Step::Expire {
            delete_secret: None
        }
    );
}

#[test]
fn expired_is_final_even_if_expires_at_moves_later() {
    let expired = ApiKeyStatus {
        phase: Some(Phase::Expired),
        key_hash: Some("h".into()),
        ..ApiKeyStatus::default()
    };
    let later = Some(ts("2030-01-01T00:00:00Z"));
    assert_eq!(
        decide(Some(&expired), later, ts(NOW), &Observed::Missing, None),
        Step::Expire {
            delete_secret: None
        }
    );
}

#[test]
fn a_minted_key_is_verified_lost_or_tampered() {
    let s = minted("sha256:a");
    assert_eq!(
        decide(
            Some(&s),
            None,
            ts(NOW),
            &controlled(Some("sha256:a"), false),
            None
        ),
        Step::Settled(Outcome::Active {
            key_id: String::new(),
            key_hash: "sha256:a".into(),
            minted_at: None
        })
    );
    assert_eq!(
        decide(Some(&s), None, ts(NOW), &Observed::Missing, None),
        Step::Settled(Outcome::Lost)
    );
    assert_eq!(
        decide(Some(&s), None, ts(NOW), &Observed::Foreign, None),
        Step::Settled(Outcome::Lost)
    );
    assert_eq!(
        decide(
            Some(&s),
            None,
            ts(NOW),
            &controlled(Some("sha256:b"), true),
            None
        ),
        Step::Settled(Outcome::Tampered),
        "even a key keymint sealed is not the recorded one"
    );
    assert_eq!(
        decide(Some(&s), None, ts(NOW), &controlled(None, false), None),
        Step::Settled(Outcome::Tampered)
    );
}

#[test]
fn a_show_once_key_is_revealed_only_when_acknowledged_and_never_shown_after_its_window() {
    let mut s = minted("sha256:a");
    s.key_id = Some("km_1".into());
    s.minted_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(
        "2026-12-31T23:50:00Z",
    )));
    let window = Duration::from_secs(15 * 60);
    let said = |acknowledged| reveal::ShowOnce {
        acknowledged,
        window,
    };
    let gone = &Observed::Missing;
    assert_eq!(
        decide(Some(&s), None, ts(NOW), gone, Some(&said(Some("km_1")))),
        Step::Settled(Outcome::Revealed)
    );
    // Gone but unacknowledged, in the window: the status stays Active.
    assert_eq!(
        decide(Some(&s), None, ts(NOW), gone, Some(&said(None))),
        Step::Settled(Outcome::Active {
            key_id: "km_1".into(),
            key_hash: "sha256:a".into(),
            minted_at: s.minted_at.as_ref().map(|t| t.0),
        })
    );
    let later = ts("2027-01-01T00:05:00Z");
    assert_eq!(
        decide(Some(&s), None, later, gone, Some(&said(None))),
        Step::NeverShown {
            delete_secret: None
        }
    );
    let held = controlled(Some("sha256:a"), true);
    assert_eq!(
        decide(Some(&s), None, later, &held, Some(&said(None))),
        Step::NeverShown {
            delete_secret: Some("secret-uid".into())
        }
    );
    // Expiry still comes first.
    assert_eq!(
        decide(Some(&s), Some(later), later, &held, Some(&said(None))),
        Step::Expire {
            delete_secret: Some("secret-uid".into())
        }
    );
    // Not a show-once key: a missing Secret is lost, whatever is said.
    assert_eq!(
        decide(Some(&s), None, ts(NOW), gone, None),
        Step::Settled(Outcome::Lost)
    );
}

#[test]
fn an_unrecorded_secret_keymint_proves_is_adopted_never_reminted() {
    assert_eq!(
        decide(
            None,
            None,
            ts(NOW),
            &controlled(Some("sha256:a"), true),
            None
        ),
        Step::Settled(Outcome::Active {
            key_id: "km_1".into(),
            key_hash: "sha256:a".into(),
            minted_at: Some(ts(NOW)),
        })
    );
    assert_eq!(
        decide(None, None, ts(NOW), &Observed::Foreign, None),
        Step::Conflict
    );
    // Found at expiry: recorded as minted, from the proof.
    assert_eq!(
        decide::unrecorded_key(None, &controlled(Some("sha256:a"), true)),
        Some(KeyRecord {
            key_id: "km_1".into(),
            key_hash: "sha256:a".into(),
            minted_at: Some(ts(NOW)),
        })
    );
    assert_eq!(
        decide::unrecorded_key(
            Some(&minted("sha256:a")),
            &controlled(Some("sha256:a"), true)
        ),
        None,
        "a recorded key is kept as recorded"
    );
}

fn input<'a>(
    current: Option<&'a ApiKeyStatus>,
    expires_at: Option<Timestamp>,
    now: &str,
) -> StatusInput<'a> {
    StatusInput {
        current,
        unrecorded_key: None,
        generation: Some(1),
        secret_name: "payments-ci",
        expires_at,
        expiry_warning: Duration::from_secs(7 * 86400),
        now: ts(now),
    }
}

fn active() -> Outcome {
    Outcome::Active {
        key_id: "km_1".into(),
        key_hash: "sha256:a".into(),
        minted_at: Some(ts(NOW)),
    }
}

#[test]
fn active_status_records_the_key_and_is_ready() {
    let s = status(&input(None, None, NOW), &active());
    assert_eq!(s.phase, Some(Phase::Active));
    assert_eq!(s.key_id.as_deref(), Some("km_1"));
    assert_eq!(s.key_hash.as_deref(), Some("sha256:a"));
    assert_eq!(s.secret_name.as_deref(), Some("payments-ci"));
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.conditions[0].type_, READY);
    assert_eq!(s.conditions[0].status, "True");
    assert_eq!(s.conditions.len(), 1, "no ExpiringSoon without an expiry");
}

#[test]
fn an_unchanged_state_yields_an_identical_status() {
    let first = status(
        &input(None, Some(ts("2027-06-01T00:00:00Z")), NOW),
        &active(),
    );
    let later = status(
        &input(
            Some(&first),
            Some(ts("2027-06-01T00:00:00Z")),
            "2027-01-02T00:00:00Z",
        ),
        &active(),
    );
    assert!(!needs_write(Some(&first), &later), "{first:?}\n{later:?}");
}

#[test]
fn expiring_soon_turns_true_inside_the_window_once() {
    let expires = Some(ts("2027-01-05T00:00:00Z"));
    let before = status(&input(None, expires, "2026-12-01T00:00:00Z"), &active());
    assert_eq!(before.conditions[1].status, "False");
    let inside = status(&input(Some(&before), expires, NOW), &active());
    assert_eq!(inside.conditions[1].status, "True");
    assert_eq!(
        transitions(Some(&before), &inside),
        vec![Transition::ExpiringSoon]
    );
    let still = status(
        &input(Some(&inside), expires, "2027-01-02T00:00:00Z"),
        &active(),
    );
    assert!(transitions(Some(&inside), &still).is_empty());
}

#[test]
fn a_key_moved_in_and_out_of_the_window_is_warned_once_per_window() {
    // Inside the 7-day window, then out, then in again, every minute: the
    // condition follows expiresAt each time; only the first turn warns.
    let (inside, outside) = (ts("2027-01-03T00:00:00Z"), ts("2027-06-01T00:00:00Z"));
    let mut current = status(&input(None, Some(outside), NOW), &active());
    let mut warnings = 0;
    for minute in 0..200 {
        let now = ts(NOW) + jiff::SignedDuration::from_mins(minute);
        let expires = if minute % 2 == 0 { inside } else { outside };
        let mut step = input(Some(&current), Some(expires), NOW);
        step.now = now;
        let next = status(&step, &active());
        let soon = next
            .conditions
            .iter()
            .any(|c| c.type_ == "ExpiringSoon" && c.status == "True");
        assert_eq!(soon, minute % 2 == 0, "the condition follows expiresAt");
        warnings += transitions(Some(&current), &next)
            .iter()
            .filter(|t| **t == Transition::ExpiringSoon)
            .count();
        current = next;
    }
    assert_eq!(warnings, 1);
    assert_eq!(current.expiry_warned_at, Some(Time(ts(NOW))));
    // A whole window later, a key whose expiry comes round is warned again.
    let later = ts("2027-01-08T00:00:00Z");
    let mut out = input(
        Some(&current),
        Some(later + jiff::SignedDuration::from_hours(24 * 30)),
        NOW,
    );
    out.now = later;
    let away = status(&out, &active());
    let mut back = input(
        Some(&away),
        Some(later + jiff::SignedDuration::from_hours(24)),
        NOW,
    );
    back.now = later;
    let again = status(&back, &active());
    assert_eq!(
        transitions(Some(&away), &again),
        vec![Transition::ExpiringSoon]
    );
    assert_eq!(again.expiry_warned_at, Some(Time(later)));
}

#[test]
fn key_identity_survives_later_phases() {
    let active = status(&input(None, None, NOW), &active());
    let lost = status(&input(Some(&active), None, NOW), &Outcome::Lost);
    assert_eq!(lost.phase, Some(Phase::SecretLost));
    assert_eq!(lost.key_hash, active.key_hash);
    assert_eq!(lost.conditions[0].status, "False");
    assert_eq!(
        transitions(Some(&active), &lost),
        vec![Transition::SecretLost]
    );
}

#[test]
fn transitions_follow_phase_changes() {
    let rejected = status(
        &input(None, None, NOW),
        &Outcome::Rejected {
            message: "full".into(),
        },
    );
    assert_eq!(transitions(None, &rejected), vec![Transition::Rejected]);
    let active = status(&input(Some(&rejected), None, NOW), &active());
    assert_eq!(
        transitions(Some(&rejected), &active),
        vec![Transition::Minted]
    );
    assert!(transitions(Some(&active), &active).is_empty());
    let tampered = status(&input(Some(&active), None, NOW), &Outcome::Tampered);
    let restored = status(&input(Some(&tampered), None, NOW), &self::active());
    assert_eq!(
        transitions(Some(&tampered), &restored),
        vec![Transition::SecretRestored]
    );
}

#[test]
fn a_key_found_unrecorded_at_expiry_is_reported_minted_then_expired() {
    let key = KeyRecord {
        key_id: "km_1".into(),
        key_hash: "sha256:a".into(),
        minted_at: Some(ts(NOW)),
    };
    let mut with_key = input(None, Some(ts(NOW)), NOW);
    with_key.unrecorded_key = Some(key);
    let expired = status(&with_key, &Outcome::Expired);
    assert_eq!(expired.key_hash.as_deref(), Some("sha256:a"));
    assert_eq!(
        transitions(None, &expired),
        vec![Transition::Minted, Transition::Expired]
    );
    // Never minted: only expired.
    let never = status(&input(None, Some(ts(NOW)), NOW), &Outcome::Expired);
    assert_eq!(transitions(None, &never), vec![Transition::Expired]);
}

#[test]
fn a_lost_secret_put_back_is_restored() {
    let active = status(&input(None, None, NOW), &active());
    let lost = status(&input(Some(&active), None, NOW), &Outcome::Lost);
    let back = status(&input(Some(&lost), None, NOW), &self::active());
    assert_eq!(
        transitions(Some(&lost), &back),
        vec![Transition::SecretRestored]
    );
}

#[test]
fn transitions_are_numbered_after_the_last_recorded_one() {
    let first = number_transitions(
        None,
        &[Transition::Minted, Transition::ExpiringSoon],
        TransitionTime(ts(NOW)),
        "pod-a",
    );
    assert_eq!(first.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(first[1].action, Transition::ExpiringSoon);
    let status = ApiKeyStatus {
        last_transitions: first,
        ..ApiKeyStatus::default()
    };
    assert_eq!(last_transition_number(Some(&status)), 2);
    let next = number_transitions(
        Some(&status),
        &[Transition::Expired],
        TransitionTime(ts(NOW)),
        "pod-b",
    );
    assert_eq!((next[0].number, next[0].instance.as_str()), (3, "pod-b"));
}

#[test]
fn a_status_change_that_is_no_transition_keeps_the_records() {
    let records = number_transitions(
        None,
        &[Transition::Minted],
        TransitionTime(ts(NOW)),
        "pod-a",
    );
    let current = ApiKeyStatus {
        last_transitions: records.clone(),
        ..status(&input(None, None, NOW), &active())
    };
    let again = status(&input(Some(&current), None, NOW), &active());
    assert_eq!(again.last_transitions, records);
    assert!(!needs_write(Some(&current), &again));
}

#[test]
fn next_check_wakes_at_expiry_and_warning_within_the_horizon_only() {
    let now = ts(NOW);
    let day = Duration::from_secs(86400);
    let ten_min = Duration::from_secs(600);
    // Far expiry, no key due: the verification rounds will come closer.
    let far = Some(ts("2027-03-01T00:00:00Z"));
    assert_eq!(
        next_check(Phase::Active, far, None, now, 7 * day, ten_min),
        None
    );
    assert_eq!(
        next_check(Phase::Active, None, None, now, 7 * day, ten_min),
        None
    );
    // Expiry in 2 s: wake just after it.
    let soon = Some(ts("2027-01-01T00:00:02Z"));
    let d = next_check(Phase::Active, soon, None, now, Duration::ZERO, ten_min).expect("wake");
    assert!(
        d >= Duration::from_secs(2) && d < Duration::from_millis(2100),
        "{d:?}"
    );
    // Warning window opening in 1 h, inside three one-day intervals.
    let in_a_week_and_an_hour = Some(ts("2027-01-08T01:00:00Z"));
    let d = next_check(
        Phase::Active,
        in_a_week_and_an_hour,
        None,
        now,
        7 * day,
        day,
    )
    .expect("wake");
    assert!(
        d >= Duration::from_secs(3600) && d < Duration::from_secs(3601),
        "{d:?}"
    );
    // Expiry in 29 min: inside three 10-minute intervals; in 31 min: not.
    let in_29 = Some(ts("2027-01-01T00:29:00Z"));
    assert!(next_check(Phase::Pending, in_29, None, now, 7 * day, ten_min).is_some());
    let in_31 = Some(ts("2027-01-01T00:31:00Z"));
    assert_eq!(
        next_check(Phase::Pending, in_31, None, now, 7 * day, ten_min),
        None
    );
    assert_eq!(
        next_check(Phase::Expired, soon, None, now, 7 * day, ten_min),
        None
    );
    // A show-once key's reveal window ending in 5 min: wake just after it;
    // not once the key is never shown.
    let reveal_by = Some(ts("2027-01-01T00:05:00Z"));
    let d = next_check(Phase::Active, None, reveal_by, now, 7 * day, ten_min).expect("wake");
    assert!(
        d >= Duration::from_secs(300) && d < Duration::from_millis(300_100),
        "{d:?}"
    );
    assert_eq!(
        next_check(Phase::NeverShown, None, reveal_by, now, 7 * day, ten_min),
        None
    );
}

#[test]
fn the_rounds_verify_every_key_with_key_material() {
    assert!(verified_periodically(Phase::Active));
    assert!(verified_periodically(Phase::Pending));
    assert!(verified_periodically(Phase::SecretLost));
    assert!(!verified_periodically(Phase::Expired));
    assert!(!verified_periodically(Phase::NeverShown));
}

#[test]
fn kstatus_conditions_follow_the_phase() {
    let pending = status(
        &input(None, None, NOW),
        &Outcome::Retrying {
            reason: "KubernetesApi",
            message: "cannot create Secret ns/k: forbidden".into(),
        },
    );
    assert_eq!(pending.phase, Some(Phase::Pending));
    let types: Vec<&str> = pending
        .conditions
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(types, [READY, RECONCILING]);
    assert_eq!(pending.conditions[1].reason, "KubernetesApi");
    assert_eq!(
        pending.conditions[1].message,
        "cannot create Secret ns/k: forbidden"
    );
    assert!(
        transitions(None, &pending).is_empty(),
        "a retry is no transition"
    );

    let minted = status(&input(None, None, NOW), &active());
    assert!(
        minted
            .conditions
            .iter()
            .all(|c| c.type_ != RECONCILING && c.type_ != STALLED)
    );
    for outcome in [
        Outcome::Rejected {
            message: "full".into(),
        },
        Outcome::Conflict,
        Outcome::Expired,
        Outcome::Lost,
        Outcome::Tampered,
    ] {
        let s = status(&input(Some(&minted), None, NOW), &outcome);
        let stalled = s
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED)
            .expect("Stalled");
        assert_eq!(stalled.status, "True", "{outcome:?}");
        assert_eq!(
            stalled.message, s.conditions[0].message,
            "the same words as Ready"
        );
        assert_eq!(stalled.observed_generation, Some(1));
    }
    let expiring = status(
        &input(None, Some(ts("2027-06-01T00:00:00Z")), NOW),
        &active(),
    );
    let types: Vec<&str> = expiring
        .conditions
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(types, [READY, EXPIRING_SOON]);
}

#[test]
fn a_project_not_granted_is_a_rejection_of_its_own_and_a_change_of_reason_is_reported() {
    let not_granted = status(
        &input(None, None, NOW),
        &Outcome::ProjectNotGranted {
            message: "project p is not granted to namespace ns".into(),
        },
    );
    assert_eq!(not_granted.phase, Some(Phase::Rejected));
    assert_eq!(not_granted.key_hash, None, "nothing minted");
    let ready = &not_granted.conditions[0];
    assert_eq!(
        (ready.reason.as_str(), ready.status.as_str()),
        ("ProjectNotGranted", "False")
    );
    assert_eq!(
        not_granted.conditions[1].type_, STALLED,
        "a person must act"
    );
    assert_eq!(transitions(None, &not_granted), vec![Transition::Rejected]);
    // The same refusal again changes nothing.
    assert!(transitions(Some(&not_granted), &not_granted).is_empty());
    // Granted now, but the quota is full: rejected anew, for the quota.
    let full = status(
        &input(Some(&not_granted), None, NOW),
        &Outcome::Rejected {
            message: "quota full".into(),
        },
    );
    assert_eq!(full.conditions[0].reason, "QuotaExceeded");
    assert_eq!(
        transitions(Some(&not_granted), &full),
        vec![Transition::Rejected]
    );
    // A quota message that moves in line is no new rejection.
    let moved = status(
        &input(Some(&full), None, NOW),
        &Outcome::Rejected {
            message: "quota full, 1st in line".into(),
        },
    );
    assert!(transitions(Some(&full), &moved).is_empty());
    assert_eq!(
        transitions(Some(&moved), &not_granted),
        vec![Transition::Rejected]
    );
}
