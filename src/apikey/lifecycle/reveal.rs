//! The show-once rule: when a show-once key counts as revealed, and when as
//! never shown. Pure.
//!
//! `keymint create --show-once` deletes the key's Secret, reads until that
//! Secret is gone (a finalizer can keep a deleted Secret, and its key, in
//! the cluster), prints the key, and only then acknowledges the reveal by
//! setting the annotation [`REVEALED_ANNOTATION`] to the key id. A missing
//! Secret alone proves nothing: anyone who may delete Secrets in the
//! namespace can delete it. So keymint records `revealed` only for a Secret
//! that is gone *and* an acknowledgement naming the key; a key nobody
//! acknowledged within the reveal window after minting has its Secret
//! deleted and is recorded as never shown — no longer Active, so it stops
//! verifying: nobody said they hold it.

use std::time::Duration;

use jiff::Timestamp;

use super::status::to_signed;
use crate::apikey::secret::Observed;
use crate::apikey::{ApiKeyStatus, Phase};

/// The ApiKey annotation by which the owner acknowledges that the key was
/// shown to them: its value is the key id shown. Only the owner (or an
/// `impersonate-owner` holder) may set `keymint.dev/` annotations, by the
/// chart's owner binding.
pub const REVEALED_ANNOTATION: &str = "keymint.dev/revealed";

/// The reveal window when `--reveal-window` is not given: long enough for a
/// person at a terminal, short enough that a key nobody acknowledged does
/// not verify for long.
pub const DEFAULT_REVEAL_WINDOW: &str = "15m";

/// What a show-once ApiKey says besides its status.
#[derive(Clone, Copy, Debug)]
pub struct ShowOnce<'a> {
    /// The value of [`REVEALED_ANNOTATION`]: the key id the owner
    /// acknowledged, if any.
    pub acknowledged: Option<&'a str>,
    /// How long after minting the owner has to acknowledge.
    pub window: Duration,
}

/// What becomes of a minted show-once key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reveal {
    /// Shown and acknowledged, its Secret gone (or recorded as revealed
    /// before): Active, verifying by its hash.
    Revealed,
    /// Its Secret is gone but nobody acknowledged yet, within the window:
    /// the CLI deletes, then prints, then acknowledges, so the status stays
    /// as it is until the window ends.
    Awaiting,
    /// Not acknowledged within the window: delete our Secret (this UID) if
    /// it is still there; the key is never shown and stops verifying.
    NeverShown { delete_secret: Option<String> },
    /// Its Secret is still there (or not ours) within the window: verified
    /// like any other key's.
    Verify,
}

/// The rule, for a minted show-once key in `status`. Keys already recorded
/// as revealed stay revealed (also those recorded before acknowledgements
/// existed); a key whose Secret was lost or tampered with keeps that
/// verdict (only an Active key awaits its reveal).
pub fn reveal(
    show_once: &ShowOnce,
    status: &ApiKeyStatus,
    secret: &Observed,
    now: Timestamp,
) -> Reveal {
    let ours = match secret {
        Observed::Controlled { uid, .. } => uid.clone(),
        _ => None,
    };
    if status.revealed_at.is_some() {
        return Reveal::Revealed;
    }
    match status.phase {
        Some(Phase::NeverShown) => {
            return Reveal::NeverShown {
                delete_secret: ours,
            };
        }
        Some(Phase::Active) => {}
        _ => return Reveal::Verify,
    }
    let gone = matches!(secret, Observed::Missing);
    if gone && acknowledged(show_once, status) {
        return Reveal::Revealed;
    }
    match window_end(show_once, status) {
        Some(end) if now < end && gone => Reveal::Awaiting,
        Some(end) if now < end => Reveal::Verify,
        // No mint time to count from: keymint cannot say the window is
        // still open, so it is not.
        _ => Reveal::NeverShown {
            delete_secret: ours,
        },
    }
}

/// When keymint should look again for a reveal: the end of the window of
/// an Active show-once key not yet revealed.
pub fn deadline(show_once: Option<&ShowOnce>, status: &ApiKeyStatus) -> Option<Timestamp> {
    let show_once = show_once?;
    let awaiting = status.phase == Some(Phase::Active) && status.revealed_at.is_none();
    awaiting.then(|| window_end(show_once, status)).flatten()
}

/// Whether the owner acknowledged this very key: the annotation names the
/// key id in status (a key id from another key, or an empty one, is none).
fn acknowledged(show_once: &ShowOnce, status: &ApiKeyStatus) -> bool {
    match (show_once.acknowledged, status.key_id.as_deref()) {
        (Some(said), Some(key_id)) => !key_id.is_empty() && said == key_id,
        _ => false,
    }
}

fn window_end(show_once: &ShowOnce, status: &ApiKeyStatus) -> Option<Timestamp> {
    let minted_at = status.minted_at.as_ref()?.0;
    minted_at.checked_add(to_signed(show_once.window)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const WINDOW: Duration = Duration::from_secs(15 * 60);

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    fn active() -> ApiKeyStatus {
        ApiKeyStatus {
            phase: Some(Phase::Active),
            key_id: Some("km_1".into()),
            key_hash: Some("sha256:aa".into()),
            minted_at: Some(Time(at("2026-12-01T10:00:00Z"))),
            ..ApiKeyStatus::default()
        }
    }

    fn ours() -> Observed {
        Observed::Controlled {
            uid: Some("secret-uid".into()),
            content_hash: Some("sha256:aa".into()),
            proven: None,
        }
    }

    fn show_once(acknowledged: Option<&str>) -> ShowOnce<'_> {
        ShowOnce {
            acknowledged,
            window: WINDOW,
        }
    }

    const INSIDE: &str = "2026-12-01T10:14:59Z";
    const AFTER: &str = "2026-12-01T10:15:00Z";

    #[test]
    fn revealed_needs_the_secret_gone_and_the_owners_acknowledgement_of_this_key() {
        let missing = Observed::Missing;
        for now in [INSIDE, AFTER] {
            assert_eq!(
                reveal(&show_once(Some("km_1")), &active(), &missing, at(now)),
                Reveal::Revealed,
                "{now}"
            );
        }
        // Acknowledged, but the Secret is still there: not revealed.
        assert_eq!(
            reveal(&show_once(Some("km_1")), &active(), &ours(), at(INSIDE)),
            Reveal::Verify
        );
        // Another key's id, or an empty one, acknowledges nothing.
        for said in ["km_2", ""] {
            assert_eq!(
                reveal(&show_once(Some(said)), &active(), &missing, at(INSIDE)),
                Reveal::Awaiting,
                "{said:?}"
            );
        }
        let mut no_id = active();
        no_id.key_id = Some(String::new());
        assert_eq!(
            reveal(&show_once(Some("")), &no_id, &missing, at(INSIDE)),
            Reveal::Awaiting
        );
    }

    #[test]
    fn a_secret_gone_without_acknowledgement_waits_for_the_window_then_is_never_shown() {
        let missing = Observed::Missing;
        assert_eq!(
            reveal(&show_once(None), &active(), &missing, at(INSIDE)),
            Reveal::Awaiting
        );
        assert_eq!(
            reveal(&show_once(None), &active(), &missing, at(AFTER)),
            Reveal::NeverShown {
                delete_secret: None
            }
        );
    }

    #[test]
    fn a_secret_still_there_after_the_window_is_deleted_and_the_key_never_shown() {
        assert_eq!(
            reveal(&show_once(None), &active(), &ours(), at(INSIDE)),
            Reveal::Verify
        );
        assert_eq!(
            reveal(&show_once(None), &active(), &ours(), at(AFTER)),
            Reveal::NeverShown {
                delete_secret: Some("secret-uid".into())
            }
        );
        // A Secret that is not ours is never deleted.
        assert_eq!(
            reveal(&show_once(None), &active(), &Observed::Foreign, at(AFTER)),
            Reveal::NeverShown {
                delete_secret: None
            }
        );
    }

    #[test]
    fn without_a_mint_time_the_window_is_not_open() {
        let mut status = active();
        status.minted_at = None;
        assert_eq!(
            reveal(&show_once(None), &status, &Observed::Missing, at(INSIDE)),
            Reveal::NeverShown {
                delete_secret: None
            }
        );
        assert_eq!(deadline(Some(&show_once(None)), &status), None);
    }

    #[test]
    fn recorded_verdicts_stay() {
        // Revealed before acknowledgements existed (an upgrade): revealed.
        let mut revealed = active();
        revealed.revealed_at = Some(Time(at("2026-12-01T10:01:00Z")));
        assert_eq!(
            reveal(&show_once(None), &revealed, &Observed::Missing, at(AFTER)),
            Reveal::Revealed
        );
        let mut never = active();
        never.phase = Some(Phase::NeverShown);
        assert_eq!(
            reveal(
                &show_once(Some("km_1")),
                &never,
                &Observed::Missing,
                at(INSIDE)
            ),
            Reveal::NeverShown {
                delete_secret: None
            }
        );
        // Lost or tampered: the verification's verdict, not the reveal's.
        for phase in [Phase::SecretLost, Phase::SecretTampered] {
            let mut status = active();
            status.phase = Some(phase);
            assert_eq!(
                reveal(&show_once(None), &status, &Observed::Missing, at(AFTER)),
                Reveal::Verify,
                "{phase:?}"
            );
        }
    }

    #[test]
    fn keymint_looks_again_at_the_end_of_the_window_of_a_key_awaiting_its_reveal() {
        let end = Some(at("2026-12-01T10:15:00Z"));
        assert_eq!(deadline(Some(&show_once(None)), &active()), end);
        assert_eq!(deadline(None, &active()), None, "not a show-once key");
        let mut revealed = active();
        revealed.revealed_at = Some(Time(at("2026-12-01T10:01:00Z")));
        assert_eq!(deadline(Some(&show_once(None)), &revealed), None);
        let mut never = active();
        never.phase = Some(Phase::NeverShown);
        assert_eq!(deadline(Some(&show_once(None)), &never), None);
    }
}
