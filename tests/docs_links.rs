//! Every relative link in the README and in docs/ leads somewhere: to a file
//! of the repository and, when it names one, to a heading of that page (as
//! GitHub makes anchors of headings). The manual is split by reader over
//! several pages, so a moved section must not leave a dead link behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The pages whose links are checked.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md"), PathBuf::from("BENCHMARKS.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir("docs")
        .expect("docs/ is readable")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The page's lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut inside = false;
    text.lines()
        .filter(|line| {
            let fence =
                line.trim_start().starts_with("```") || line.trim_start().starts_with("~~~");
            if fence {
                inside = !inside;
            }
            !fence && !inside
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// turned into hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").expect("the link pattern");
    let mut headings: HashMap<PathBuf, Vec<String>> = HashMap::new();
    let mut dead = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("the page is readable");
        let dir = page.parent().unwrap_or(Path::new("")).to_path_buf();
        for line in prose(&text) {
            for found in link.captures_iter(line) {
                let target = &found[1];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
                let file = if path.is_empty() {
                    page.clone()
                } else {
                    dir.join(path)
                };
                checked += 1;
                if !file.exists() {
                    dead.push(format!("{}: {target} (no such file)", page.display()));
                    continue;
                }
                if fragment.is_empty() || file.extension().is_none_or(|x| x != "md") {
                    continue;
                }
                let known = headings.entry(file.clone()).or_insert_with(|| {
                    anchors(&std::fs::read_to_string(&file).expect("the linked page is readable"))
                });
                if !known.iter().any(|a| a == fragment) {
                    dead.push(format!("{}: {target} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
    assert!(
        checked > 50,
        "only {checked} links found: is the pattern right?"
    );
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    assert_eq!(
        anchor(" Listeners and their bounds"),
        "listeners-and-their-bounds"
    );
    assert_eq!(
        anchor("nginx (`auth_request`) — tested"),
        "nginx-auth_request--tested"
    );
    assert_eq!(
        anchor("Project binding: which projects a namespace may use"),
        "project-binding-which-projects-a-namespace-may-use"
    );
}
