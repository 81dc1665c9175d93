use jiff::SignedDuration;

use super::*;
use crate::audit::entry::hash_line;
use crate::audit::seal::AuditKey;
use crate::audit::segment::parse_segment;
use crate::audit::testing::{build, seg_name, test_key, ts};
use crate::audit::{Action, chain, chain_all_sealed, format_time, pruned_draft};

/// Segments as (name, lines), named by their place in the full stream
/// so that a slice (what retention kept) keeps the names.
type Segs = Vec<(String, Vec<String>)>;

/// Splits the entries' lines into segments of the given sizes.
fn split(entries: &[Entry], sizes: &[usize]) -> Segs {
    assert_eq!(sizes.iter().sum::<usize>(), entries.len());
    let mut lines = entries.iter().map(Entry::encode);
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (seg_name(i), lines.by_ref().take(n).collect()))
        .collect()
}

fn pairs(segs: &[(String, Vec<String>)]) -> Vec<(String, String)> {
    segs.iter()
        .map(|(name, lines)| {
            let content: String = lines.iter().map(|l| format!("{l}\n")).collect();
            (name.clone(), content)
        })
        .collect()
}

/// (segment index, 0-based line) of the `index`-th line overall.
fn locate(segs: &[(String, Vec<String>)], mut index: usize) -> (usize, usize) {
    for (s, (_, lines)) in segs.iter().enumerate() {
        if index < lines.len() {
            return (s, index);
        }
        index -= lines.len();
    }
    panic!("index out of range")
}

fn at(segs: &mut [(String, Vec<String>)], index: usize) -> &mut String {
    let (s, l) = locate(segs, index);
    &mut segs[s].1[l]
}

fn finding(segs: &[(String, Vec<String>)]) -> Finding {
    match verify(&pairs(segs)) {
        Ok(summary) => panic!("expected a finding, verified: {summary:?}"),
        Err(f) => f,
    }
}

fn assert_at(f: &Finding, segs: &[(String, Vec<String>)], index: usize) {
    let (s, l) = locate(segs, index);
    assert_eq!(
        (f.segment.as_str(), f.line),
        (segs[s].0.as_str(), l + 1),
        "{f}"
    );
}

#[test]
fn valid_streams_verify() {
    let entries = build(24);
    for sizes in [
        vec![24],
        vec![8, 8, 8],
        vec![1, 22, 1],
        vec![0, 10, 0, 14, 0],
    ] {
        let segs = split(&entries, &sizes);
        let summary = verify(&pairs(&segs)).expect("valid stream verifies");
        assert_eq!(
            summary,
            Summary {
                segments: sizes.len(),
                entries: 24,
                first_seq: Some(1),
                last_seq: Some(24),
                head: Head::of(&entries[23]),
                anchor: Anchor::Genesis,
            }
        );
    }
}

#[test]
fn empty_stream_verifies() {
    let empty = verify(&[]).expect("no segments");
    assert_eq!(empty.entries, 0);
    assert_eq!(empty.head, Head::genesis());
    assert_eq!(empty.anchor, Anchor::Empty);
    let one_empty = verify(&[(seg_name(0), String::new())]).expect("empty segment");
    assert_eq!((one_empty.segments, one_empty.entries), (1, 0));
}

type Edit = (&'static str, fn(&mut Entry));

/// One edit per field (three for seq), each keeping the line well-formed.
const EDITS: &[Edit] = &[
    ("seq+1", |e| e.seq += 1),
    ("seq+100", |e| e.seq += 100),
    ("seq-1", |e| e.seq -= 1),
    ("time", |e| {
        let t = e.timestamp().expect("time") + SignedDuration::from_nanos(1);
        e.time = format_time(t);
    }),
    ("action", |e| {
        e.action = if e.action == Action::Deleted {
            Action::Minted
        } else {
            Action::Deleted
        }
    }),
    ("namespace", |e| e.namespace.push('x')),
    ("name", |e| e.name.push('x')),
    ("uid", |e| e.uid.push('x')),
    ("transition", |e| e.transition += 1),
    ("project", |e| e.project = "other".to_string()),
    ("owner", |e| e.owner = "mallory@example.com".to_string()),
    ("keyId", |e| {
        e.key_id = match e.key_id {
            Some(_) => None,
            None => Some("km_forged00000".to_string()),
        }
    }),
    ("reason", |e| e.reason.push('x')),
    ("message", |e| e.message = "nothing happened".to_string()),
    ("instance", |e| e.instance.push('x')),
    ("prunedThroughSeq", |e| {
        e.pruned_through_seq = Some(e.pruned_through_seq.map_or(3, |s| s + 1))
    }),
    ("prunedThroughHash", |e| {
        e.pruned_through_hash = Some(hash_line("forged"))
    }),
    ("prev", |e| e.prev = hash_line("forged")),
];

fn edited(segs: &[(String, Vec<String>)], index: usize, edit: fn(&mut Entry)) -> Segs {
    let mut segs = segs.to_vec();
    let line = at(&mut segs, index);
    let mut entry = parse_segment(&format!("{line}\n"))
        .expect("parses")
        .remove(0);
    edit(&mut entry);
    *line = entry.encode();
    segs
}

#[test]
fn an_edit_of_any_field_of_any_entry_but_the_last_is_modified_at_its_seq() {
    let entries = build(12);
    let segs = split(&entries, &[4, 4, 4]);
    for index in 0..entries.len() - 1 {
        for (field, edit) in EDITS {
            let tampered = edited(&segs, index, *edit);
            let f = finding(&tampered);
            assert_eq!(
                f.kind,
                FindingKind::Modified,
                "{field} of entry {}: {f}",
                index + 1
            );
            assert_eq!(f.seq, Some(index as u64 + 1), "{field}: {f}");
            assert_at(&f, &segs, index);
        }
    }
}

#[test]
fn the_last_entry_is_covered_only_partly_by_the_chain() {
    let entries = build(12);
    let segs = split(&entries, &[4, 4, 4]);
    let last = entries.len() - 1;
    let head = Head::of(&entries[last]);
    for (field, edit) in EDITS {
        let tampered = edited(&segs, last, *edit);
        let result = verify(&pairs(&tampered));
        match *field {
            // seq and prev are checked against the entry before.
            "seq+1" | "seq+100" | "seq-1" => {
                let f = result.expect_err(field);
                assert_eq!((f.kind, f.seq), (FindingKind::Modified, Some(12)), "{f}");
            }
            // Caught, but blamed on entry 11: nothing tells the two apart.
            "prev" => {
                let f = result.expect_err(field);
                assert_eq!((f.kind, f.seq), (FindingKind::Modified, Some(11)), "{f}");
            }
            // Undetectable by the chain alone...
            _ => assert!(result.is_ok(), "{field}"),
        }
        // ...but not against a checkpoint.
        let f =
            verify_with_checkpoint(&pairs(&tampered), &head, &with_key(&key())).expect_err(field);
        assert_eq!(f.kind, FindingKind::Modified, "{field}: {f}");
    }
    // An edit that breaks the line is caught.
    let mut broken = segs.clone();
    at(&mut broken, last).pop();
    let f = finding(&broken);
    assert_eq!((f.kind, f.seq), (FindingKind::Malformed, None));
    assert_at(&f, &segs, last);
}

#[test]
fn deleting_a_single_entry_is_removed() {
    let entries = build(12);
    let segs = split(&entries, &[4, 4, 4]);
    for index in 0..entries.len() {
        let mut cut = segs.clone();
        let (s, l) = locate(&cut, index);
        cut[s].1.remove(l);
        let result = verify(&pairs(&cut));
        if index == entries.len() - 1 {
            // Truncation at the end leaves a valid, shorter chain.
            assert!(result.is_ok());
            let f =
                verify_with_checkpoint(&pairs(&cut), &Head::of(&entries[index]), &with_key(&key()))
                    .expect_err("checkpoint catches it");
            assert_eq!(
                f.kind,
                FindingKind::Removed {
                    first: 12,
                    last: 12
                },
                "{f}"
            );
            assert_eq!(
                (f.segment.as_str(), f.line, f.seq),
                (seg_name(2).as_str(), 4, None)
            );
            continue;
        }
        let f = result.expect_err("deletion is caught");
        let seq = index as u64 + 1;
        assert_eq!(f.seq, Some(seq + 1), "{f}");
        // The entry after the gap now sits where the deleted one was.
        assert_at(&f, &cut, index);
        if index == 0 {
            assert_eq!(f.kind, FindingKind::Unanchored, "{f}");
        } else {
            assert_eq!(
                f.kind,
                FindingKind::Removed {
                    first: seq,
                    last: seq
                },
                "{f}"
            );
        }
    }
}

#[test]
fn swapping_two_adjacent_entries_is_reordered() {
    let entries = build(12);
    let segs = split(&entries, &[4, 4, 4]);
    for index in 0..entries.len() - 1 {
        let mut swapped = segs.clone();
        let a = at(&mut swapped, index).clone();
        let b = std::mem::replace(at(&mut swapped, index + 1), a);
        *at(&mut swapped, index) = b;
        let f = finding(&swapped);
        assert_eq!(f.kind, FindingKind::Reordered, "{f}");
        // Reported at the entry that came too early.
        assert_eq!(f.seq, Some(index as u64 + 2), "{f}");
        assert_at(&f, &segs, index);
    }
}

#[test]
fn copied_entries_are_duplicated() {
    let entries = build(12);
    let segs = split(&entries, &[4, 4, 4]);
    // (entry copied, position the copy is inserted at)
    for (copied, insert_at) in [(3, 3), (3, 9), (9, 3), (0, 1), (11, 12), (5, 0)] {
        let mut segs2 = segs.clone();
        let line = at(&mut segs2, copied).clone();
        let (s, l) = if insert_at == 12 {
            (2, 4)
        } else {
            locate(&segs2, insert_at)
        };
        segs2[s].1.insert(l, line);
        let f = finding(&segs2);
        assert_eq!(
            f.kind,
            FindingKind::Duplicated,
            "copy of {copied} at {insert_at}: {f}"
        );
        assert_eq!(f.seq, Some(copied as u64 + 1));
        assert!(f.detail.contains("identical copy"), "{f}");
        // Reported at the copy; right before the original, the two are
        // indistinguishable and the second one is reported.
        let reported = if insert_at == copied {
            insert_at + 1
        } else {
            insert_at
        };
        assert_at(&f, &segs2, reported);
    }
}

#[test]
fn a_segment_removed_from_the_middle_is_removed() {
    let entries = build(12);
    let mut segs = split(&entries, &[4, 4, 4]);
    segs.remove(1);
    let f = finding(&segs);
    assert_eq!(f.kind, FindingKind::Removed { first: 5, last: 8 }, "{f}");
    assert_eq!(f.seq, Some(9));
    assert_eq!((f.segment.as_str(), f.line), (seg_name(2).as_str(), 1));
    assert!(f.detail.contains("segment boundary"), "{f}");
}

#[test]
fn segments_out_of_order_are_reordered() {
    let entries = build(12);
    let mut segs = split(&entries, &[4, 4, 4]);
    segs.swap(1, 2);
    let f = finding(&segs);
    assert_eq!((f.kind, f.seq), (FindingKind::Reordered, Some(9)), "{f}");
    segs.swap(0, 2);
    let f = finding(&segs);
    assert_eq!((f.kind, f.seq), (FindingKind::Reordered, Some(5)), "{f}");
}

fn key() -> AuditKey {
    test_key(7)
}

/// What `keymint audit verify` knows with the key.
fn with_key(k: &AuditKey) -> Keyring<'_> {
    Keyring::Key(k)
}

/// Twelve entries in four segments of three, then pruned entries for
/// each of `through` (seqs), appended to the last segment.
fn pruned_stream(through: &[usize]) -> (Vec<Entry>, Segs) {
    let mut entries = build(12);
    for &seq in through {
        let head = Head::of(&entries[entries.len() - 1]);
        let through = Head::of(&entries[seq - 1]);
        let draft = pruned_draft(ts("2026-04-01T00:00:00Z"), "keymint-1", &through, seq / 3);
        entries.push(key().seal(chain(&head, &draft).0));
    }
    let rest = entries.len() - 9;
    let segs = split(&entries, &[3, 3, 3, rest]);
    (entries, segs)
}

#[test]
fn pruning_verifies_only_when_a_pruned_entry_vouches_for_the_anchor() {
    // Retention dropped the first two segments (entries 1-6).
    let (_, segs) = pruned_stream(&[6]);
    let summary = verify(&pairs(&segs[2..])).expect("vouched");
    assert_eq!(summary.anchor, Anchor::Pruned { by_seq: 13 });
    assert_eq!(
        (summary.first_seq, summary.last_seq, summary.entries),
        (Some(7), Some(13), 7)
    );
    // A crash between appending the pruned entry and deleting: still fine.
    assert_eq!(verify(&pairs(&segs)).expect("full").anchor, Anchor::Genesis);

    // No pruned entry.
    let plain = split(&build(12), &[3, 3, 3, 3]);
    let f = finding(&plain[2..]);
    assert_eq!((f.kind, f.seq), (FindingKind::Unanchored, Some(7)), "{f}");
    assert_eq!((f.segment.as_str(), f.line), (seg_name(2).as_str(), 1));

    // The pruned entry vouches for entry 4, but entries 4-6 are gone too.
    let (_, segs) = pruned_stream(&[3]);
    let f = finding(&segs[2..]);
    assert_eq!((f.kind, f.seq), (FindingKind::Unanchored, Some(7)), "{f}");

    // The pruned entry records the wrong hash for entry 6.
    let (entries, mut segs) = pruned_stream(&[6]);
    let last = segs[3].1.len() - 1;
    let mut pruned = entries[12].clone();
    pruned.pruned_through_hash = Some(entries[4].hash());
    // Keep the pruned entry chained, so only its record is wrong.
    segs[3].1[last] = pruned.encode();
    let f = finding(&segs[2..]);
    assert_eq!((f.kind, f.seq), (FindingKind::Unanchored, Some(7)), "{f}");

    // Only a pruned entry vouches: the same fields on another action do not.
    let (_, segs) = pruned_stream(&[6]);
    let mut other = segs.clone();
    let last = other[3].1.len() - 1;
    other[3].1[last] = other[3].1[last].replace(r#""action":"pruned""#, r#""action":"deleted""#);
    let f = finding(&other[2..]);
    assert_eq!(f.kind, FindingKind::Unanchored, "{f}");
}

#[test]
fn repeated_pruning_vouches_for_each_anchor() {
    let (_, segs) = pruned_stream(&[3, 6]);
    assert_eq!(verify(&pairs(&segs)).expect("all").anchor, Anchor::Genesis);
    let f = verify(&pairs(&segs[1..])).expect("first pruning");
    assert_eq!(f.anchor, Anchor::Pruned { by_seq: 13 });
    let f = verify(&pairs(&segs[2..])).expect("second pruning");
    assert_eq!(f.anchor, Anchor::Pruned { by_seq: 14 });
    let f = finding(&segs[3..]);
    assert_eq!((f.kind, f.seq), (FindingKind::Unanchored, Some(10)), "{f}");
}

#[test]
fn edits_of_a_pruned_anchor_are_modified() {
    let (_, segs) = pruned_stream(&[6]);
    let kept = &segs[2..];
    for (field, edit) in EDITS {
        let f = finding(&edited(kept, 0, *edit));
        assert_eq!(
            (f.kind, f.seq),
            (FindingKind::Modified, Some(7)),
            "{field}: {f}"
        );
        assert_at(&f, kept, 0);
    }
}

#[test]
fn findings_read_as_one_line() {
    let entries = build(50);
    let mut segs = split(&entries, &[12, 12, 11, 15]);
    segs[3].1[6] = segs[3].1[6].replace("event 42", "event 24");
    let f = finding(&segs);
    let shown = f.to_string();
    assert!(
        shown.starts_with("entry 42 in keymint-audit-0000000003 line 7 was modified: "),
        "{shown}"
    );
    assert!(
        shown.contains("entry 43 (keymint-audit-0000000003 line 8)"),
        "{shown}"
    );
    assert_eq!(f.kind.as_str(), "modified");
}

#[test]
fn checkpoints_catch_what_the_chain_cannot() {
    let entries = build(12);
    let segs = split(&entries, &[4, 4, 4]);
    let head = Head::of(&entries[11]);
    let ok = verify_with_checkpoint(&pairs(&segs), &head, &with_key(&key())).expect("unchanged");
    assert_eq!(ok.head, head);
    // Entries appended since the checkpoint are fine.
    verify_with_checkpoint(&pairs(&segs), &Head::of(&entries[7]), &with_key(&key()))
        .expect("older checkpoint");
    verify_with_checkpoint(&pairs(&segs), &Head::genesis(), &with_key(&key())).expect("genesis");
    // A checkpoint that retention has pruned since cannot be compared.
    let (pruned_entries, psegs) = pruned_stream(&[6]);
    verify_with_checkpoint(
        &pairs(&psegs[2..]),
        &Head::of(&pruned_entries[2]),
        &with_key(&key()),
    )
    .expect("pruned");
    // A checkpoint the stream disagrees with.
    let forged = Head {
        seq: 8,
        hash: hash_line("forged"),
    };
    let f =
        verify_with_checkpoint(&pairs(&segs), &forged, &with_key(&key())).expect_err("mismatch");
    assert_eq!(
        (f.kind, f.seq, f.line),
        (FindingKind::Modified, Some(8), 4),
        "{f}"
    );
    // Entries missing at the end (all of them, here).
    let f = verify_with_checkpoint(&[(seg_name(0), String::new())], &head, &with_key(&key()))
        .expect_err("empty");
    assert_eq!(f.kind, FindingKind::Removed { first: 1, last: 12 }, "{f}");
}

#[test]
fn a_pruning_written_without_the_key_is_forged() {
    // Someone who may write the segments deletes them through the
    // checkpoint (entry 8) and appends a pruned entry vouching for the rest.
    let entries = build(12);
    let checkpoint = Head::of(&entries[7]);
    let through = Head::of(&entries[8]);
    let draft = pruned_draft(ts("2026-04-01T00:00:00Z"), "keymint-0", &through, 3);
    let (forged, _) = chain(&Head::of(&entries[11]), &draft);
    let mut kept = entries[9..].to_vec();
    kept.push(forged.clone());
    let segs = split(&kept, &[4]);
    // The chain alone accepts it: the attack this seal answers.
    verify(&pairs(&segs)).expect("a well-formed chain");
    let f =
        verify_with_checkpoint(&pairs(&segs), &checkpoint, &with_key(&key())).expect_err("forged");
    assert_eq!((f.kind, f.seq), (FindingKind::Forged, Some(13)), "{f}");
    assert!(f.to_string().contains("is forged"), "{f}");
    // Sealed with another key, or a sealed entry changed: forged too.
    for entry in [test_key(9).seal(forged.clone()), {
        let mut e = key().seal(forged.clone());
        e.message = "retention removed nothing to see".to_string();
        e
    }] {
        let mut kept = entries[9..].to_vec();
        kept.push(entry);
        let f = verify_with_checkpoint(&pairs(&split(&kept, &[4])), &checkpoint, &with_key(&key()))
            .expect_err("forged");
        assert_eq!(f.kind, FindingKind::Forged, "{f}");
    }
    // Sealed by keymint: the same pruning verifies.
    let mut kept = entries[9..].to_vec();
    kept.push(key().seal(forged));
    verify_with_checkpoint(&pairs(&split(&kept, &[4])), &checkpoint, &with_key(&key()))
        .expect("keymint's own pruning");
}

#[test]
fn without_the_key_a_stream_relying_on_a_pruning_cannot_be_verified() {
    let cannot = Keyring::Unreadable("cannot read Secret keymint-system/keymint-audit-key".into());
    let (entries, segs) = pruned_stream(&[6]);
    let f = verify_with_checkpoint(&pairs(&segs[2..]), &Head::of(&entries[8]), &cannot)
        .expect_err("no key");
    assert_eq!((f.kind, f.seq), (FindingKind::Unverifiable, Some(7)), "{f}");
    assert!(f.detail.contains("keymint-audit-key"), "{f}");
    // A stream that starts with entry 1 needs no key.
    verify_with_checkpoint(&pairs(&segs), &Head::of(&entries[8]), &cannot).expect("from entry 1");
}

#[test]
fn a_stream_that_started_over_says_so_against_an_older_checkpoint() {
    let k = key();
    let drafts: Vec<_> = (1..=4).map(crate::audit::testing::draft).collect();
    let (stream, _) = chain_all_sealed(&Head::genesis(), &drafts, &k);
    assert!(stream[0].seal.is_some() && stream[1].seal.is_none());
    let segs = pairs(&split(&stream, &[4]));
    // Its own checkpoints verify.
    verify_with_checkpoint(&segs, &Head::of(&stream[2]), &with_key(&k)).expect("own checkpoint");
    // A checkpoint of the stream before, at a seq the new stream has gone
    // past: started over, certainly.
    let old = build(20);
    let f =
        verify_with_checkpoint(&segs, &Head::of(&old[2]), &with_key(&k)).expect_err("started over");
    assert_eq!(
        (f.kind, f.seq, f.line),
        (FindingKind::StartedOver, Some(1), 1),
        "{f}"
    );
    assert!(f.to_string().starts_with("the stream started over"), "{f}");
    assert!(f.detail.contains("from the stream before"), "{f}");
    // Beyond its end, or at its last entry: cut or edited, or started over;
    // the finding says both.
    for (checkpoint, kind) in [
        (
            Head::of(&old[19]),
            FindingKind::Removed { first: 5, last: 20 },
        ),
        (Head::of(&old[3]), FindingKind::Modified),
    ] {
        let f = verify_with_checkpoint(&segs, &checkpoint, &with_key(&k)).expect_err("no match");
        assert_eq!(f.kind, kind, "{f}");
        assert!(f.detail.contains("or the stream started over at"), "{f}");
    }
    // A start sealed with another key is forged; an unsealed entry 1 (a
    // stream older than seals) claims nothing, and the checkpoint finding
    // is the chain's.
    let (other, _) = chain_all_sealed(&Head::genesis(), &drafts, &test_key(9));
    let f = verify_with_checkpoint(
        &pairs(&split(&other, &[4])),
        &Head::genesis(),
        &with_key(&k),
    )
    .expect_err("forged start");
    assert_eq!((f.kind, f.seq), (FindingKind::Forged, Some(1)), "{f}");
    let plain = pairs(&split(&build(4), &[4]));
    let f = verify_with_checkpoint(&plain, &Head::of(&old[19]), &with_key(&k)).expect_err("short");
    assert_eq!(f.kind, FindingKind::Removed { first: 5, last: 20 }, "{f}");
    assert!(!f.detail.contains("started over"), "{f}");
}

#[test]
fn an_unsealed_pruning_from_before_seals_is_accepted_once_nothing_relies_on_it() {
    // Entries 1-12, an unsealed pruning through entry 3 (written by an
    // older keymint), then a sealed one through entry 6.
    let mut entries = build(12);
    let prune = |entries: &mut Vec<Entry>, seq: usize, sealed: bool| {
        let head = Head::of(&entries[entries.len() - 1]);
        let draft = pruned_draft(
            ts("2026-04-01T00:00:00Z"),
            "keymint-1",
            &Head::of(&entries[seq - 1]),
            1,
        );
        let entry = chain(&head, &draft).0;
        entries.push(if sealed { key().seal(entry) } else { entry });
    };
    prune(&mut entries, 3, false);
    prune(&mut entries, 6, true);
    let segs = split(&entries, &[3, 3, 3, 5]);
    let checkpoint = Head::of(&entries[8]);
    // Relying on the sealed pruning: fine.
    verify_with_checkpoint(&pairs(&segs[2..]), &checkpoint, &with_key(&key()))
        .expect("sealed anchor");
    // Relying on the unsealed one: forged.
    let f = verify_with_checkpoint(&pairs(&segs[1..]), &checkpoint, &with_key(&key()))
        .expect_err("unsealed anchor");
    assert_eq!((f.kind, f.seq), (FindingKind::Forged, Some(13)), "{f}");
}
