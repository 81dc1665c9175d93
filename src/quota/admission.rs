//! Who gets a slot: the waiting order (oldest first), the admission plan
//! for one key, and the words of a rejection. Pure: the controller's slot
//! requests (`quota::slots`) and the protocol model (`tests/quota_model.rs`)
//! both run exactly these functions.

use std::collections::HashSet;

use super::ledger::{Ledger, Millis, Pair};
use crate::apikey::{ApiKeyStatus, Phase};

/// What an admission decides for one key against one ledger read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The key is in the ledger already (an earlier attempt admitted it):
    /// mint without writing.
    AlreadyAdmitted,
    /// Admit the key together with `with` (the keys next in line that the
    /// free slots also cover) in one ledger write, then mint.
    Admit { with: Vec<Waiting> },
    /// No slot for this key now: `admitted` keys hold the pair's slots (or
    /// older keys are ahead in line); `position` is 0-based.
    Full { admitted: usize, position: usize },
}

/// The plan for `me` given the ledger as read and the keys waiting in its
/// pair. Fairness only: the limit itself is [`Ledger::admit`]'s and the
/// compare-and-swap's, whatever this returns.
pub fn plan(ledger: &Ledger, me: &Waiting, waiting: &[Waiting], limit: usize) -> Plan {
    if ledger.get(&me.uid).is_some() {
        return Plan::AlreadyAdmitted;
    }
    let admitted = ledger.admitted();
    let free = limit.saturating_sub(admitted);
    let in_line: Vec<Waiting> = waiting
        .iter()
        .filter(|w| ledger.get(&w.uid).is_none())
        .cloned()
        .collect();
    match may_take_slot(me, &in_line, free) {
        true => Plan::Admit {
            with: admitted_with(me, &in_line, free)
                .into_iter()
                .cloned()
                .collect(),
        },
        false => Plan::Full {
            admitted,
            position: position(me, &in_line),
        },
    }
}

/// The one rule for "this key's slot is free": its status says Expired,
/// which keymint writes only after deleting the Secret. (An ApiKey that is
/// gone frees its slot too: its finalizer deleted the Secret first.)
pub fn slot_freed(status: Option<&ApiKeyStatus>) -> bool {
    status.and_then(|s| s.phase) == Some(Phase::Expired)
}

/// An ApiKey of the pair that is neither admitted nor finished: waiting for
/// a slot.
///
/// The caller should list only keys that would mint if admitted (not
/// expired, not being deleted, not blocked for another reason such as a
/// Secret name conflict): a key that can never take its slot would hold up
/// every key behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// `metadata.creationTimestamp` (1-second precision, so ties are common).
    pub created: Millis,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Waiting {
    /// The waiting order: creation time, then namespace/name (the quota spans
    /// namespaces), then UID, which makes it total (a deleted ApiKey and its
    /// re-created namesake can both be listed for a moment).
    fn order_key(&self) -> (Millis, &str, &str, &str) {
        (self.created, &self.namespace, &self.name, &self.uid)
    }
}

/// Whether `me` may take a slot now: with `free` = `limit.saturating_sub(live)`
/// free slots, the oldest `free` waiting keys may be admitted; others wait.
///
/// `waiting` may or may not contain `me`; `me` is treated as waiting either
/// way. This is fairness only: the limit itself is enforced by
/// [`Ledger::admit`] and the CAS, whatever this returns.
pub fn may_take_slot(me: &Waiting, waiting: &[Waiting], free: usize) -> bool {
    position(me, waiting) < free
}

/// The other waiting keys that may take a slot along with `me`: those among
/// the oldest `free` (with `me` counted in line), in line order; none if
/// `me` may not take a slot itself. Admitting
/// them in the same ledger write as `me` serves a burst of one pair with one
/// write instead of one per key; an admitted key counts from then on, minted
/// or not, so this can only over-count.
pub fn admitted_with<'a>(me: &Waiting, waiting: &'a [Waiting], free: usize) -> Vec<&'a Waiting> {
    if !may_take_slot(me, waiting, free) {
        return Vec::new();
    }
    let mut line: Vec<Waiting> = waiting.to_vec();
    line.push(me.clone());
    let mut others: Vec<&Waiting> = waiting
        .iter()
        .filter(|w| w.uid != me.uid && position(w, &line) < free)
        .collect();
    others.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    others.dedup_by(|a, b| a.uid == b.uid);
    others
}

/// Position of `me` in the waiting order (0 = next in line): the number of
/// other distinct UIDs in `waiting` that come before it. Entries with `me`'s
/// UID are ignored (`me` is authoritative about itself), and a UID listed
/// twice counts once, at its earliest position, so a duplicated list cannot
/// push `me` back.
pub fn position(me: &Waiting, waiting: &[Waiting]) -> usize {
    let mine = me.order_key();
    let ahead: HashSet<&str> = waiting
        .iter()
        .filter(|w| w.uid != me.uid && w.order_key() < mine)
        .map(|w| w.uid.as_str())
        .collect();
    ahead.len()
}

/// Human message for a rejected key, e.g. `quota full: alice@example.com has
/// 25 of 25 keys in project payments; 2nd in line for a slot; delete an
/// unused key to free one`.
///
/// `position` is 0-based, as returned by [`position`].
pub fn rejection_message(pair: &Pair, live: usize, limit: usize, position: usize) -> String {
    format!(
        "quota full: {} has {live} of {limit} keys in project {}; {} in line for a slot; \
         delete an unused key to free one",
        printable(pair.owner),
        printable(pair.project),
        ordinal(position.saturating_add(1)),
    )
}

/// Escapes control characters. The owner excludes only whitespace, so it
/// could carry e.g. ESC; status messages end up in terminals via kubectl.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `1st`, `2nd`, `3rd`, `4th`, ..., `11th`, `12th`, `13th`, ..., `21st`, ...
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::ledger::{Admission, Entry};

    fn entry(name: &str) -> Entry {
        Entry {
            namespace: "ns".into(),
            name: name.into(),
            admitted_at: 0,
        }
    }

    fn waiting(created: Millis, namespace: &str, name: &str, uid: &str) -> Waiting {
        Waiting {
            created,
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn pair<'a>(project: &'a str, owner: &'a str) -> Pair<'a> {
        Pair { project, owner }
    }

    #[test]
    fn position_orders_by_created_then_namespace_name_then_uid() {
        let list = vec![
            waiting(2_000, "a", "k", "u1"),
            waiting(1_000, "b", "a", "u2"),
            waiting(1_000, "a", "z", "u3"),
            waiting(1_000, "a", "y", "u5"),
            waiting(1_000, "a", "y", "u4"), // same name, re-created: uid decides
        ];
        let order: Vec<usize> = list.iter().map(|w| position(w, &list)).collect();
        assert_eq!(order, vec![4, 3, 2, 1, 0]);
        // Namespace before name: "a/z" < "b/a".
        assert!(position(&list[2], &list) < position(&list[1], &list));
    }

    #[test]
    fn position_when_me_is_absent_or_duplicated() {
        let others = vec![
            waiting(1_000, "ns", "a", "u1"),
            waiting(3_000, "ns", "c", "u3"),
        ];
        let me = waiting(2_000, "ns", "b", "me");
        assert_eq!(position(&me, &others), 1);
        let mut with_me = others.clone();
        with_me.push(me.clone());
        assert_eq!(position(&me, &with_me), 1);
        // Duplicates of others count once; duplicates of me are ignored,
        // even stale copies that would sort earlier.
        let mut dup = with_me.clone();
        dup.extend(others.iter().cloned());
        dup.push(waiting(0, "ns", "b", "me"));
        dup.push(waiting(500, "ns", "a", "u1")); // stale copy of u1
        assert_eq!(position(&me, &dup), 1);
        assert_eq!(position(&me, &[]), 0);
        let first = waiting(0, "ns", "a", "u0");
        assert_eq!(position(&first, &dup), 0);
    }

    #[test]
    fn admitted_with_takes_the_others_among_the_oldest_free_in_line_order() {
        let list: Vec<Waiting> = (0..5)
            .map(|i| waiting(1_000 * i, "ns", &format!("k{i}"), &format!("u{i}")))
            .rev()
            .collect();
        let names = |v: Vec<&Waiting>| v.iter().map(|w| w.name.clone()).collect::<Vec<_>>();
        // me is second in line: with 3 free slots the first and third join it.
        let me = list[3].clone(); // k1
        assert_eq!(names(admitted_with(&me, &list, 3)), ["k0", "k2"]);
        assert!(
            admitted_with(&me, &list, 1).is_empty(),
            "only k0 fits, not me"
        );
        assert_eq!(
            names(admitted_with(&me, &list, 99)),
            ["k0", "k2", "k3", "k4"]
        );
        // me absent from the list still takes its place in line.
        let late = waiting(9_000, "ns", "late", "late");
        assert_eq!(
            names(admitted_with(&late, &list, 6)),
            ["k0", "k1", "k2", "k3", "k4"]
        );
        assert!(admitted_with(&late, &list, 5).is_empty(), "late is 6th");
        // Never more than the free slots, me included, and each key once.
        let mut dup = list.clone();
        dup.extend(list.iter().cloned());
        for free in 0..8 {
            let others = admitted_with(&me, &dup, free);
            assert!(others.len() < free.max(1), "free={free}: {}", others.len());
            let mut uids: Vec<&str> = others.iter().map(|w| w.uid.as_str()).collect();
            uids.dedup();
            assert_eq!(uids.len(), others.len());
        }
    }

    #[test]
    fn may_take_slot_admits_the_oldest_free_keys() {
        let list: Vec<Waiting> = (0..5)
            .map(|i| waiting(1_000, "ns", &format!("k{i}"), &format!("u{i}")))
            .collect();
        for free in 0..=7 {
            let admitted: Vec<bool> = list.iter().map(|w| may_take_slot(w, &list, free)).collect();
            let expected: Vec<bool> = (0..5).map(|i| i < free).collect();
            assert_eq!(admitted, expected, "free={free}");
        }
        let me = waiting(9_000, "ns", "late", "late");
        assert!(!may_take_slot(&me, &list, 0));
        assert!(!may_take_slot(&me, &list, 5));
        assert!(may_take_slot(&me, &list, 6));
        assert!(may_take_slot(&me, &[], 1));
        assert!(!may_take_slot(&me, &[], 0));
        assert!(may_take_slot(&me, &list, usize::MAX));
    }

    #[test]
    fn sequential_reconciles_admit_the_oldest_first() {
        // Reconciled newest first (the worst order): the limit and waiting
        // order together still admit exactly the two oldest keys.
        let mut l = Ledger::default();
        let limit = 2;
        let mut queue: Vec<Waiting> = vec![
            waiting(3_000, "x", "c", "u3"),
            waiting(1_000, "y", "a", "u1"),
            waiting(2_000, "x", "b", "u2"),
            waiting(1_000, "x", "z", "u0"),
            waiting(5_000, "a", "a", "u4"),
        ];
        queue.sort_by(|a, b| b.order_key().cmp(&a.order_key()));
        for _round in 0..queue.len() {
            for me in &queue {
                if l.get(&me.uid).is_some() {
                    continue;
                }
                if let Plan::Admit { .. } = plan(&l, me, &queue, limit) {
                    let e = entry(&me.name);
                    assert_eq!(l.admit(&me.uid, e, limit), Admission::Admitted);
                }
            }
        }
        let admitted: Vec<&str> = l.iter().map(|(uid, _)| uid).collect();
        assert_eq!(admitted, vec!["u0", "u1"]);
    }

    #[test]
    fn rejection_message_is_clear_and_short() {
        let msg = rejection_message(&pair("payments", "alice@example.com"), 25, 25, 1);
        assert_eq!(
            msg,
            "quota full: alice@example.com has 25 of 25 keys in project payments; \
             2nd in line for a slot; delete an unused key to free one"
        );
        assert!(msg.len() < 200);
        let sa = pair("payments-prod", "system:serviceaccount:ci-system:deployer");
        assert!(rejection_message(&sa, 25, 25, 123).len() < 200);
        // Worst case stays bounded (owner 253, project 63).
        let owner = "o".repeat(253);
        let project = "p".repeat(63);
        let long = rejection_message(&pair(&project, &owner), usize::MAX, 25, usize::MAX);
        assert!(long.len() < 500, "{}", long.len());
    }

    #[test]
    fn rejection_message_escapes_control_characters() {
        let msg = rejection_message(&pair("p", "evil\u{1b}[2J\u{7}"), 1, 1, 0);
        assert!(!msg.chars().any(char::is_control), "{msg:?}");
        assert!(msg.contains("evil\\u{1b}[2J\\u{7}"), "{msg}");
        assert!(msg.contains("1st in line"), "{msg}");
    }

    #[test]
    fn ordinals() {
        let cases = [
            (1, "1st"),
            (2, "2nd"),
            (3, "3rd"),
            (4, "4th"),
            (10, "10th"),
            (11, "11th"),
            (12, "12th"),
            (13, "13th"),
            (21, "21st"),
            (22, "22nd"),
            (23, "23rd"),
            (101, "101st"),
            (111, "111th"),
            (112, "112th"),
        ];
        for (n, s) in cases {
            assert_eq!(ordinal(n), s);
        }
    }

    #[test]
    fn plan_admits_the_oldest_free_together_and_ranks_the_rest() {
        let mut l = Ledger::default();
        l.admit("held", entry("held"), 3);
        let line = [
            waiting(10, "ns", "a", "ua"),
            waiting(20, "ns", "b", "ub"),
            waiting(30, "ns", "c", "uc"),
        ];
        // Two free slots: the oldest two go in one write.
        assert_eq!(
            plan(&l, &line[1], &line, 3),
            Plan::Admit {
                with: vec![line[0].clone()]
            }
        );
        assert_eq!(
            plan(&l, &line[2], &line, 3),
            Plan::Full {
                admitted: 1,
                position: 2
            }
        );
        // A key already in the ledger is not in line, and is told so.
        l.admit("ua", entry("a"), 3);
        assert_eq!(plan(&l, &line[0], &line, 3), Plan::AlreadyAdmitted);
        assert_eq!(plan(&l, &line[1], &line, 3), Plan::Admit { with: vec![] });
    }
}
