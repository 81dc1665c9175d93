//! The ApiKey lifecycle as pure functions: from what keymint observed to
//! what it should do (`decide`), the status it should show (`status`), the
//! transitions that status change makes (`transitions`), when the
//! ExpiringSoon condition is a warning (`expiry_warning`), when a show-once
//! key counts as revealed (`reveal`) and when to look again (`schedule`). No API calls here; `reconcile` does those.

pub mod conditions;
pub mod decide;
pub mod expiry_warning;
pub mod reveal;
pub mod schedule;
pub mod status;
pub mod transitions;

pub use decide::{KeyRecord, Outcome, Step, about_to_mint, decide, minted, waits_for_slot};
pub use schedule::{next_check, verified_periodically};
pub use status::{StatusInput, needs_write, status};
pub use transitions::{last_transition_number, number_transitions, transitions};

#[cfg(test)]
mod tests;
