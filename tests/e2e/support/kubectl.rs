//! The real kubectl (built with the control plane) against the test control
//! plane: what a person sees.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::{REPO, control_plane};

/// Runs kubectl with `args`, `stdin` on its standard input, and the test
/// control plane's admin kubeconfig (`--as` impersonates someone else).
pub fn kubectl(args: &[&str], stdin: &str) -> Output {
    let built = Path::new(REPO).join("target/controlplane/bin/kubectl");
    let binary = if built.exists() {
        built
    } else {
        "kubectl".into()
    };
    let mut child = Command::new(binary)
        .args(args)
        .env("KUBECONFIG", control_plane().kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to kubectl");
    child.wait_with_output().expect("kubectl finishes")
}
