//! The terminal: a spinner while waiting, a question before deleting.
//! Everything here writes to stderr, so stdout carries only results (the
//! key, a table, JSON) and can be piped.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner on a terminal; on anything else one plain line, so logs of
/// scripts stay readable.
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    /// `quiet`: nothing at all (`-o json`).
    pub fn start(message: String, quiet: bool) -> Spinner {
        if quiet {
            return Spinner(None);
        }
        if !std::io::stderr().is_terminal() {
            eprintln!("{message} ...");
            return Spinner(None);
        }
        let bar = ProgressBar::new_spinner().with_message(message);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(Some(bar))
    }

    /// Removes the spinner; the next line starts where it was.
    pub fn finish(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Asks `question` on stderr and reads one line from stdin: yes only for
/// "y" or "yes" (any case); anything else, or end of input, is no.
pub fn confirm(question: &str) -> std::io::Result<bool> {
    let mut stderr = std::io::stderr().lock();
    write!(stderr, "{question} [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(is_yes(&answer))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_means_yes() {
        for yes in ["y\n", "Y", " yes \n", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "delete"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }
}
