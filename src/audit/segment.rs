//! The content of a segment: entries as JSON Lines. Pure: no I/O, no
//! Kubernetes types (which ConfigMap holds the content is `store`'s job).
//!
//! One entry per line, each line the entry's canonical encoding
//! ([`Entry::encode`]) followed by `'\n'`. A line must be exactly that
//! encoding; anything else (extra spaces, `null` for an absent field,
//! another time format, unknown fields) is malformed.

use crate::apikey::TransitionTime;
use crate::audit::Entry;

/// `existing` segment content with `entries` appended. A missing final
/// newline in `existing` is supplied first, so its last line stays whole.
pub fn append_lines(existing: &str, entries: &[Entry]) -> String {
    let mut out = String::with_capacity(size_after(existing, entries));
    out.push_str(existing);
    if needs_newline(existing) {
        out.push('\n');
    }
    for entry in entries {
        out.push_str(&entry.encode());
        out.push('\n');
    }
    out
}

/// Size in bytes of [`append_lines`]`(existing, entries)`, without building
/// it: the I/O layer rolls over to a new segment before this would exceed
/// its budget (kept well below the 1 MiB ConfigMap limit, which also covers
/// the object's metadata).
pub fn size_after(existing: &str, entries: &[Entry]) -> usize {
    let added: usize = entries.iter().map(|e| e.encode().len() + 1).sum();
    existing.len() + usize::from(needs_newline(existing)) + added
}

fn needs_newline(content: &str) -> bool {
    !content.is_empty() && !content.ends_with('\n')
}

/// Whether `existing` content with `entries` appended passes `budget`
/// bytes, so the segment is sealed and `entries` start the next one. An
/// empty segment takes them regardless: the next would be no emptier.
pub fn overflows(existing: &str, entries: &[Entry], budget: usize) -> bool {
    !existing.is_empty() && size_after(existing, entries) > budget
}

/// A line of a segment that is not a well-formed entry. Says which line and
/// why, never what the line holds: it could be anything someone pasted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// The entries of a segment, or the first line that is not a well-formed
/// entry in canonical form. Empty content is an empty segment.
pub fn parse_segment(content: &str) -> Result<Vec<Entry>, ParseError> {
    lines(content)
        .map(|(line, text, terminated)| {
            parse_line(text, terminated).map_err(|reason| ParseError { line, reason })
        })
        .collect()
}

/// The lines of a segment: (1-based number, text without `'\n'`, whether it
/// ended with `'\n'`).
pub(crate) fn lines(content: &str) -> impl Iterator<Item = (usize, &str, bool)> {
    content
        .split_inclusive('\n')
        .enumerate()
        .map(|(i, raw)| match raw.strip_suffix('\n') {
            Some(text) => (i + 1, text, true),
            None => (i + 1, raw, false),
        })
}

pub(crate) fn parse_line(text: &str, terminated: bool) -> Result<Entry, String> {
    if text.is_empty() {
        return Err("empty line".to_string());
    }
    let entry: Entry = serde_json::from_str(text).map_err(|e| describe_json_error(&e))?;
    if entry.encode() != text {
        return Err("not in canonical form (compact JSON, fields in keymint's order, absent fields omitted)".to_string());
    }
    if entry.timestamp().is_none() {
        return Err(format!(
            "time is not an RFC 3339 UTC timestamp with {} fractional digits",
            TransitionTime::DIGITS
        ));
    }
    if !terminated {
        // keymint ends every line with '\n'; a line without one was cut
        // short or written by hand.
        return Err("the segment does not end with a newline".to_string());
    }
    Ok(entry)
}

/// A description of a JSON error that does not quote the input: serde's
/// messages may contain values from the line ("invalid type: string ...").
/// A missing field names one of ours, so that message is kept.
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let column = e.column();
    match e.classify() {
        Category::Syntax | Category::Eof => format!("not valid JSON (column {column})"),
        Category::Data => match missing_field(&e.to_string()) {
            Some(field) => format!("not an audit entry: missing field `{field}`"),
            None => format!(
                "not an audit entry: unknown field, or a field of the wrong type or value (column {column})"
            ),
        },
        Category::Io => "could not be read".to_string(),
    }
}

/// The field serde's "missing field `x`" message names.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::{build, encode_segment, seg_name};
    use crate::audit::{Finding, FindingKind, verify};

    fn malformed_at_line_3(bad: &str) -> Finding {
        let entries = build(5);
        let mut lines: Vec<String> = entries.iter().map(Entry::encode).collect();
        lines[2] = bad.to_string();
        let content: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let err = parse_segment(&content).expect_err(bad);
        assert_eq!(err.line, 3, "{err}");
        let f = verify(&[(seg_name(0), content)]).expect_err(bad);
        assert_eq!(
            (f.kind, f.seq, f.line, f.segment.as_str()),
            (FindingKind::Malformed, None, 3, seg_name(0).as_str())
        );
        assert_eq!(f.detail, err.reason);
        for shown in [f.to_string(), err.to_string()] {
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(!shown.contains('\n'), "{shown}");
        }
        f
    }

    #[test]
    fn malformed_lines_are_reported_by_number_without_their_content() {
        let good = build(3).remove(2).encode();
        // `good` with `from` replaced (which must be there).
        let sub = |from: &str, to: &str| {
            assert!(good.contains(from), "{from} not in {good}");
            good.replacen(from, to, 1)
        };
        let f = malformed_at_line_3(r#"{"seq":3,"message":"kmk_SECRETSECRETSECRET"#);
        assert!(f.detail.contains("not valid JSON"), "{f}");
        malformed_at_line_3("kmk_SECRETSECRETSECRETSECRETSECRET");
        let f = malformed_at_line_3(&sub(r#""seq":3"#, r#""seq":"kmk_SECRETSECRET""#));
        assert!(f.detail.contains("wrong type"), "{f}");
        let f = malformed_at_line_3(&sub(r#""prev""#, r#""kmk_SECRETSECRET":1,"prev""#));
        assert!(f.detail.contains("unknown field"), "{f}");
        let f = malformed_at_line_3(&sub(
            r#""action":"expiring-soon""#,
            r#""action":"kmk_SECRETSECRET""#,
        ));
        assert!(f.detail.contains("not an audit entry"), "{f}");
        let f = malformed_at_line_3(&sub(r#""seq":3,"#, ""));
        assert!(f.detail.contains("missing field `seq`"), "{f}");
        // Well-formed JSON with the same content, but not what keymint writes.
        let time = r#""time":"2026-03-01T00:00:04.500000021Z""#;
        for non_canonical in [
            sub(r#""seq":3"#, r#""seq": 3"#),
            sub(
                r#""keyId":"km_000000000003","#,
                r#""keyId":"km_\u0030\u0030000000003","#,
            ),
            sub(r#""prev""#, r#""prunedThroughSeq":null,"prev""#),
            sub(&format!(r#""seq":3,{time}"#), &format!(r#"{time},"seq":3"#)),
            format!("{good}\r"),
            format!(" {good}"),
        ] {
            let f = malformed_at_line_3(&non_canonical);
            assert!(f.detail.contains("canonical"), "{f}");
        }
        for other_time in [
            "2026-03-01T00:00:04.500000Z",
            "2026-03-01T00:00:04.500000021+00:00",
            "2026-03-01 00:00:04.500000021Z",
            "yesterday",
        ] {
            let f = malformed_at_line_3(&sub(time, &format!(r#""time":"{other_time}""#)));
            assert!(f.detail.contains("time"), "{f}");
        }
        let f = malformed_at_line_3("");
        assert!(f.detail.contains("empty"), "{f}");
    }

    #[test]
    fn a_segment_must_end_with_a_newline() {
        let content = encode_segment(&build(3));
        let cut = content.trim_end_matches('\n');
        let err = parse_segment(cut).expect_err("no final newline");
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("newline"), "{err}");
        assert_eq!(parse_segment(""), Ok(vec![]));
    }

    #[test]
    fn segments_round_trip() {
        let entries = build(7);
        let content = encode_segment(&entries);
        assert_eq!(content.lines().count(), 7);
        assert!(content.ends_with("}\n"));
        assert_eq!(parse_segment(&content), Ok(entries.clone()));
        let appended = append_lines(&encode_segment(&entries[..3]), &entries[3..]);
        assert_eq!(appended, content);
    }

    #[test]
    fn size_after_matches_append_lines() {
        let entries = build(5);
        let lens: Vec<usize> = entries.iter().map(|e| e.encode().len()).collect();
        assert_eq!(size_after("", &[]), 0);
        assert_eq!(size_after("", &entries), lens.iter().sum::<usize>() + 5);
        let existing = encode_segment(&entries[..2]);
        assert_eq!(
            size_after(&existing, &entries[2..]),
            existing.len() + lens[2] + lens[3] + lens[4] + 3
        );
        assert_eq!(size_after(&existing, &[]), existing.len());
        // A missing final newline is added before appending.
        let cut = existing.trim_end_matches('\n');
        assert_eq!(size_after(cut, &entries[2..3]), cut.len() + 1 + lens[2] + 1);
        assert_eq!(
            append_lines(cut, &entries[2..3]),
            encode_segment(&entries[..3])
        );
        for (existing, new) in [
            ("", &entries[..]),
            (existing.as_str(), &entries[2..]),
            (cut, &entries[4..]),
        ] {
            assert_eq!(size_after(existing, new), append_lines(existing, new).len());
        }
        // Bytes, not characters.
        let mut wide = entries[0].clone();
        wide.message = "é€😀".to_string();
        assert_eq!(
            size_after("", std::slice::from_ref(&wide)),
            wide.encode().len() + 1
        );
        assert!(wide.encode().contains("é€😀"));
    }

    #[test]
    fn a_full_segment_is_sealed_but_an_empty_one_takes_any_batch() {
        let entries = build(4);
        let existing = encode_segment(&entries[..2]);
        let exact = size_after(&existing, &entries[2..]);
        assert!(!overflows(&existing, &entries[2..], exact));
        assert!(overflows(&existing, &entries[2..], exact - 1));
        assert!(!overflows("", &entries, 1));
    }
}
