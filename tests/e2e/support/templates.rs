//! `secretTemplate`s at the CRD's bound on their total size.

use keymint::apikey::TEMPLATE_MAX_CHARS;
use serde_json::{Map, Value, json};

/// The longest annotation value the schema admits.
const VALUE_MAX_CHARS: usize = 3600;

/// A template of `TEMPLATE_MAX_CHARS + over` characters (keys and values of
/// its labels and annotations), its annotation values made of `fill`: the
/// largest the CRD admits when `over` is 0. A four-byte `fill` makes it the
/// largest in bytes too.
pub fn at_bound(over: usize, fill: char) -> Value {
    let (label, value) = ("team", "payments");
    let mut left = TEMPLATE_MAX_CHARS + over - label.len() - value.len();
    let mut annotations = Map::new();
    while left > 0 {
        let key = format!("example.com/a{:02}", annotations.len());
        assert!(left > key.len(), "{left} characters cannot take a key");
        let take = VALUE_MAX_CHARS.min(left - key.len());
        left -= key.len() + take;
        annotations.insert(key, json!(fill.to_string().repeat(take)));
    }
    json!({"labels": {label: value}, "annotations": annotations})
}

/// The characters a template counts against the bound.
pub fn chars(template: &Value) -> usize {
    ["labels", "annotations"]
        .iter()
        .filter_map(|part| template[part].as_object())
        .flatten()
        .map(|(k, v)| k.chars().count() + v.as_str().map_or(0, |v| v.chars().count()))
        .sum()
}
