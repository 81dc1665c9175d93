//! A Kubernetes list's JSON, as it arrives in pieces, cut into the text of
//! each item and the rest of the list (its `metadata` among it). It tracks
//! only what JSON needs to find where a value ends — nesting, strings and
//! their escapes — and leaves the parsing to serde_json, item by item, so
//! that a list is never held whole.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum ItemsError {
    #[error("a list item is not an object")]
    NotAnObject,
    #[error("the list ended before its JSON did")]
    CutShort,
    #[error("the list's JSON closes more than it opens")]
    Unbalanced,
}

/// Where the cut has got to, across pieces.
#[derive(Default)]
pub struct Items {
    /// The list without its items' text: `{"kind":…,"items":[],"metadata":…}`.
    rest: Vec<u8>,
    /// The start of an item that began in an earlier piece.
    item: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The last string at the list's top level, while it is short enough to
    /// be `items`: the key of the array that opens next.
    key: Vec<u8>,
    in_items: bool,
    in_item: bool,
}

/// Nesting: the list's object is 1, its `items` array 2, an item 3 and more.
const LIST: usize = 1;
const ITEMS: usize = 2;

impl Items {
    /// Cuts the next piece; `item` is given each complete item's text.
    pub fn feed<E: From<ItemsError>>(
        &mut self,
        piece: &[u8],
        mut item: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut start = 0;
        let mut at = 0;
        while at < piece.len() {
            if self.in_string {
                at = self.string(piece, at);
                continue;
            }
            let byte = piece[at];
            let between_items = self.in_items && !self.in_item;
            if between_items && !matches!(byte, b' ' | b'\t' | b'\r' | b'\n' | b',' | b'{' | b']') {
                return Err(ItemsError::NotAnObject.into());
            }
            match byte {
                b'"' => {
                    self.in_string = true;
                    self.key.clear();
                }
                b'{' | b'[' => {
                    if self.depth == LIST && byte == b'[' && self.key == b"items" {
                        self.in_items = true;
                        self.rest.push(byte);
                    } else if between_items {
                        self.in_item = true;
                        start = at;
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    self.depth = self.depth.checked_sub(1).ok_or(ItemsError::Unbalanced)?;
                    if self.in_item && self.depth == ITEMS {
                        self.in_item = false;
                        self.complete(&piece[start..=at], &mut item)?;
                    } else if self.in_items && self.depth == LIST {
                        self.in_items = false;
                    }
                }
                _ => {}
            }
            if !self.in_items {
                self.rest.push(byte);
            }
            at += 1;
        }
        if self.in_item {
            self.item.extend_from_slice(&piece[start..]);
        }
        Ok(())
    }

    /// Reads a string's text from `from` up to its closing quote, or to the
    /// piece's end; returns where the string's text stopped. Most of a list
    /// is strings: they are skipped to the next quote or backslash at once.
    fn string(&mut self, piece: &[u8], from: usize) -> usize {
        let mut at = from;
        if self.escaped {
            self.escaped = false;
            at += 1;
        }
        let (end, text_end) = loop {
            let Some(found) = memchr::memchr2(b'"', b'\\', piece.get(at..).unwrap_or_default())
            else {
                break (piece.len(), piece.len());
            };
            let found = at + found;
            if piece[found] == b'"' {
                self.in_string = false;
                break (found + 1, found);
            }
            if found + 1 == piece.len() {
                self.escaped = true;
                break (piece.len(), piece.len());
            }
            at = found + 2;
        };
        if self.depth == LIST {
            let room = (b"items".len() + 1).saturating_sub(self.key.len());
            let text = &piece[from..text_end];
            self.key.extend_from_slice(&text[..room.min(text.len())]);
        }
        if !self.in_items {
            self.rest.extend_from_slice(&piece[from..end]);
        }
        end
    }

    /// An item's text: this piece's part, after any earlier pieces' part.
    fn complete<E>(
        &mut self,
        tail: &[u8],
        item: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.item.is_empty() {
            return item(tail);
        }
        self.item.extend_from_slice(tail);
        let whole = std::mem::take(&mut self.item);
        item(&whole)
    }

    /// The list without its items, once the last piece has been fed.
    pub fn rest(self) -> Result<Vec<u8>, ItemsError> {
        match self.depth == 0 && !self.in_string && !self.rest.is_empty() {
            true => Ok(self.rest),
            false => Err(ItemsError::CutShort),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Feeds `text` cut at `cuts`; the items parsed, and the rest.
    fn cut(text: &[u8], cuts: &[usize]) -> Result<(Vec<Value>, Value), String> {
        let mut items = Items::default();
        let mut seen = Vec::new();
        let mut from = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        ends.sort_unstable();
        ends.push(text.len());
        for end in ends {
            items
                .feed::<Box<dyn std::error::Error>>(&text[from..end], |item| {
                    seen.push(serde_json::from_slice(item)?);
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
            from = end;
        }
        let rest = items.rest().map_err(|e| e.to_string())?;
        Ok((
            seen,
            serde_json::from_slice(&rest).map_err(|e| e.to_string())?,
        ))
    }

    #[test]
    fn items_and_the_rest_in_any_order_and_any_cut() {
        let list = json!({
            "apiVersion": "keymint.dev/v1alpha1",
            "items": [
                {"metadata": {"name": "a \"quoted\" [name]"}, "spec": {"x": [1, {"y": "}"}]}},
                {"metadata": {"name": "b\\"}, "items": ["not", "the", "list's"]},
            ],
            "kind": "ApiKeyList",
            "metadata": {"resourceVersion": "7", "continue": ""},
        });
        let text = serde_json::to_vec_pretty(&list).unwrap();
        for cuts in [vec![], vec![1], vec![40, 41, 42], (0..text.len()).collect()] {
            let (seen, rest) = cut(&text, &cuts).unwrap();
            assert_eq!(seen, list["items"].as_array().unwrap().clone());
            let mut without = list.clone();
            without["items"] = json!([]);
            assert_eq!(rest, without);
        }
    }

    #[test]
    fn a_string_named_items_is_not_the_array() {
        let text = br#"{"kind":"items","note":["items"],"items":[{"a":1}],"metadata":{}}"#;
        let (seen, rest) = cut(text, &[]).unwrap();
        assert_eq!(seen, vec![json!({"a": 1})]);
        assert_eq!(rest["note"], json!(["items"]));
    }

    #[test]
    fn bad_lists_are_refused() {
        let scalar = br#"{"items":[{"a":1}, 2]}"#;
        assert_eq!(
            cut(scalar, &[]).unwrap_err(),
            "a list item is not an object"
        );
        let scalar = br#"{"items":["{}"]}"#;
        assert_eq!(
            cut(scalar, &[]).unwrap_err(),
            "a list item is not an object"
        );
        let array = br#"{"items":[[1]]}"#;
        assert_eq!(cut(array, &[]).unwrap_err(), "a list item is not an object");
        let short = br#"{"items":[{"a":1}],"metadata":{"#;
        assert_eq!(
            cut(short, &[]).unwrap_err(),
            "the list ended before its JSON did"
        );
        assert_eq!(
            cut(b"}", &[]).unwrap_err(),
            "the list's JSON closes more than it opens"
        );
        assert!(cut(b"", &[]).is_err());
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[\"\\\\{}\\[\\],: a-z\u{e9}\u{1F600}]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z\"\\\\]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_list_cut_anywhere_gives_its_items_and_its_rest(
            objects in proptest::collection::vec(
                proptest::collection::btree_map("[a-z\"]{0,6}", value(), 0..4), 0..6),
            meta in value(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let items: Vec<Value> =
                objects.into_iter().map(|m| Value::Object(m.into_iter().collect())).collect();
            let list = json!({"kind": "List", "items": items, "metadata": meta});
            let text = serde_json::to_vec(&list).unwrap();
            let (seen, rest) = cut(&text, &cuts).unwrap();
            prop_assert_eq!(&seen, &items);
            let mut without = list.clone();
            without["items"] = json!([]);
            prop_assert_eq!(rest, without);
        }
    }
}
