//! The table of `keymint list`: the seed's columns — name, project,
//! description, key id, created, expires, last used, phase. Pure.

use jiff::Timestamp;
use kube::ResourceExt;

use crate::apikey::ApiKey;
use crate::people::terminal::escape;

/// Descriptions are cut to this many characters: the table stays one line
/// per key (`describe` shows the whole text).
const DESCRIPTION_WIDTH: usize = 32;

/// The table, header first; with `namespaces` a NAMESPACE column leads.
/// Every cell is escaped before the columns are measured.
pub fn render(keys: &[ApiKey], namespaces: bool) -> String {
    let mut rows = vec![header(namespaces)];
    rows.extend(keys.iter().map(|k| {
        row(k, namespaces)
            .iter()
            .map(|cell| escape(cell).into_owned())
            .collect()
    }));
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn header(namespaces: bool) -> Vec<String> {
    let mut header = vec![
        "NAME",
        "PROJECT",
        "DESCRIPTION",
        "KEY ID",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "PHASE",
    ];
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    header.into_iter().map(String::from).collect()
}

fn row(k: &ApiKey, namespaces: bool) -> Vec<String> {
    let status = k.status.as_ref();
    let mut row = vec![
        k.name_any(),
        k.spec.project.clone(),
        k.spec
            .description
            .as_deref()
            .map_or("-".to_string(), shorten),
        status
            .and_then(|s| s.key_id.clone())
            .unwrap_or_else(|| "-".into()),
        k.creation_timestamp()
            .map_or("-".to_string(), |t| minute(t.0)),
        k.spec
            .expires_at
            .as_ref()
            .map_or("never".to_string(), |t| minute(t.0)),
        // The status records no last use yet.
        "-".to_string(),
        status
            .and_then(|s| s.phase)
            .map_or("-".to_string(), |p| format!("{p:?}")),
    ];
    if namespaces {
        row.insert(0, k.namespace().unwrap_or_default());
    }
    row
}

/// `2026-12-01 20:15` (UTC): what a person reads in a table.
pub fn minute(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M").to_string()
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= DESCRIPTION_WIDTH {
        return text.to_string();
    }
    let cut: String = text.chars().take(DESCRIPTION_WIDTH - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::{ApiKeySpec, ApiKeyStatus, Phase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn key(name: &str, description: Option<&str>) -> ApiKey {
        let mut k = ApiKey::new(
            name,
            ApiKeySpec {
                project: "payments".into(),
                owner: "alice".into(),
                description: description.map(String::from),
                expires_at: Some(Time("2027-01-31T00:00:00Z".parse().expect("time"))),
                secret_name: None,
                secret_template: None,
                show_once: None,
            },
        );
        k.metadata.namespace = Some("team-a".into());
        k.metadata.creation_timestamp = Some(Time("2026-12-01T20:15:42Z".parse().expect("time")));
        k
    }

    #[test]
    fn the_table_has_the_seeds_columns_aligned() {
        let mut active = key("ci-deploy", Some("CI deploy key"));
        active.status = Some(ApiKeyStatus {
            phase: Some(Phase::Active),
            key_id: Some("km_7Hq2".into()),
            ..ApiKeyStatus::default()
        });
        let mut waiting = key("x", None);
        waiting.spec.expires_at = None;
        let table = render(&[active, waiting], false);
        assert_eq!(
            table,
            "NAME       PROJECT   DESCRIPTION    KEY ID   CREATED           EXPIRES           LAST USED  PHASE\n\
             ci-deploy  payments  CI deploy key  km_7Hq2  2026-12-01 20:15  2027-01-31 00:00  -          Active\n\
             x          payments  -              -        2026-12-01 20:15  never             -          -\n"
        );
        let all = render(&[key("y", None)], true);
        assert!(all.starts_with("NAMESPACE  NAME"), "{all}");
        assert!(
            all.lines()
                .nth(1)
                .expect("row")
                .starts_with("team-a     y "),
            "{all}"
        );
    }

    #[test]
    fn values_from_the_api_are_shown_escaped() {
        let mut k = key("ci", Some("deploy\u{1b}[31mred"));
        k.status = Some(ApiKeyStatus {
            key_id: Some("km_\u{1b}]0;x\u{7}".into()),
            ..ApiKeyStatus::default()
        });
        let table = render(&[k], true);
        assert!(
            !table.contains('\u{1b}') && !table.contains('\u{7}'),
            "{table:?}"
        );
        assert!(table.contains("deploy\\u{1b}[31mred"), "{table}");
        assert!(table.contains("km_\\u{1b}]0;x\\u{7}"), "{table}");
    }

    #[test]
    fn long_descriptions_are_cut() {
        let long = "d".repeat(100);
        let table = render(&[key("k", Some(&long))], false);
        let cut = format!("{}…", "d".repeat(DESCRIPTION_WIDTH - 1));
        assert!(table.contains(&cut), "{table}");
        assert!(!table.contains(&"d".repeat(DESCRIPTION_WIDTH)), "{table}");
    }
}
