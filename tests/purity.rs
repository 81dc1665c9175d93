//! The pure cores stay pure: no Kubernetes client, no API calls, no I/O in
//! the modules that decide. They may use kube's types and derives (the
//! ApiKey resource is one), never `kube::Api`, `kube::Client`, `kube::api`,
//! the runtime, or an `.await`. A file added to a pure folder is checked
//! without being listed.

use std::path::{Path, PathBuf};

/// Folders and files whose code decides and must not call anything.
const PURE: &[&str] = &[
    "src/apikey",
    "src/grant",
    "src/quota/ledger.rs",
    "src/quota/admission.rs",
    "src/audit/entry.rs",
    "src/audit/segment.rs",
    "src/audit/verify.rs",
    "src/audit/finding.rs",
    "src/audit/index.rs",
    "src/audit/watermark.rs",
    "src/audit/retention.rs",
    "src/audit/seal.rs",
    "src/digest.rs",
    "src/duration.rs",
    "src/api_error.rs",
    "src/people/error.rs",
    "src/people/outcome.rs",
    "src/people/table.rs",
    "src/verify/index.rs",
    "src/verify/decision.rs",
    "src/verify/credential.rs",
    "src/owner_binding/judge.rs",
];

/// What an I/O-free module has no business naming.
const FORBIDDEN: &[&str] = &[
    "kube::Api",
    "kube::Client",
    "kube::api::",
    "kube::runtime",
    "kube::client",
    "Api<",
    "Client::",
    ".await",
    "tokio::",
    "std::fs",
    "std::net",
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
    } else if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            rust_files(&entry.path(), out);
        }
    }
}

#[test]
fn pure_modules_import_no_kubernetes_client_and_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for pure in PURE {
        rust_files(&root.join(pure), &mut files);
    }
    assert!(files.len() >= 12, "the pure files are found: {files:?}");
    let mut found = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(file).expect("readable source");
        for offence in offences(&text) {
            found.push(format!("{}:{offence}", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "I/O in a pure module:\n{}",
        found.join("\n")
    );
}

/// `line: word` for each forbidden word in the shipped code (test code may
/// read fixtures) outside comments.
fn offences(text: &str) -> Vec<String> {
    let shipped = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = Vec::new();
    for (n, line) in shipped.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for word in FORBIDDEN.iter().filter(|w| code.contains(*w)) {
            found.push(format!("{}: {word}", n + 1));
        }
    }
    found
}

#[test]
fn the_check_finds_calls_but_not_comments_or_tests() {
    let text = "use kube::Api;\n// an .await in a comment\nfn f() {}\n#[cfg(test)]\nasync fn t() { x.await }\n";
    assert_eq!(offences(text), ["1: kube::Api"]);
}
