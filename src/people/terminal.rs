//! The terminal: a spinner while waiting, a question before deleting, and
//! the escaping of every value read from the API before it is shown.
//! Everything here writes to stderr, so stdout carries only results (the
//! key, a table, JSON) and can be piped.

use std::borrow::Cow;
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

/// A value read from the API (a name, an owner, a description, a message)
/// as it may reach a terminal. Anyone who may write an ApiKey or a Secret
/// chooses these bytes: control characters (C0, DEL, C1 — ESC starts the
/// ANSI sequences that move the cursor, rewrite lines or retitle the
/// window) and the bidirectional controls that reorder what is shown would
/// let them make a line say something it does not. Those are written as
/// Rust escapes (`\u{1b}`), everything else as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_for_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match unsafe_for_terminal(c) {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn unsafe_for_terminal(c: char) -> bool {
    // The bidirectional embeddings, overrides, isolates and marks.
    const BIDI: [char; 11] = [
        '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}',
        '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    ];
    c.is_control() || BIDI.contains(&c)
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
    fn control_characters_and_ansi_escapes_are_shown_escaped() {
        assert!(matches!(escape("alice@example.com"), Cow::Borrowed(_)));
        assert_eq!(escape("zoë → ü"), "zoë → ü", "printable text stays");
        for (raw, shown) in [
            ("alice\u{1b}[2J", "alice\\u{1b}[2J"),
            ("\u{1b}]0;owned\u{7}", "\\u{1b}]0;owned\\u{7}"),
            ("a\rb\nc\td", "a\\rb\\nc\\td"),
            ("del\u{7f}", "del\\u{7f}"),
            ("csi\u{9b}31m", "csi\\u{9b}31m"),
            ("nul\0", "nul\\u{0}"),
            ("evil\u{202e}gpj.exe", "evil\\u{202e}gpj.exe"),
            ("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}"),
        ] {
            let escaped = escape(raw);
            assert_eq!(escaped, shown, "{raw:?}");
            assert!(!escaped.chars().any(unsafe_for_terminal), "{escaped:?}");
        }
    }

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
