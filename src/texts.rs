//! Strings laid end to end in one allocation, each found again by its
//! span. A value held by the thousand (a cached key, a queued Event) with
//! one string per field pays each allocation's overhead per field, and
//! leaves holes between them once values change.

/// Where one string lies in the joined text.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    start: u32,
    len: u32,
}

/// The strings to join, in order.
#[derive(Default)]
pub struct Texts<'a> {
    pieces: Vec<&'a str>,
    len: usize,
}

impl<'a> Texts<'a> {
    pub fn add(&mut self, text: &'a str) -> Span {
        // Texts come from one Kubernetes object, at most 1.5 MB (etcd's
        // limit), so positions fit in u32.
        let span = Span {
            start: u32::try_from(self.len).unwrap_or(u32::MAX),
            len: u32::try_from(text.len()).unwrap_or(0),
        };
        self.len += text.len();
        self.pieces.push(text);
        span
    }

    pub fn add_some(&mut self, text: Option<&'a str>) -> Option<Span> {
        text.map(|t| self.add(t))
    }

    /// All the strings in one allocation of exactly their length.
    pub fn joined(self) -> Box<str> {
        self.pieces.concat().into_boxed_str()
    }
}

/// The string at `span` in `joined`.
pub fn text(joined: &str, span: Span) -> &str {
    let start = span.start as usize;
    joined
        .get(start..start + span.len as usize)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_string_comes_back_from_the_joined_text() {
        let mut texts = Texts::default();
        let spans = ["ns", "", "k1", "a note"].map(|s| texts.add(s));
        let none = texts.add_some(None);
        let joined = texts.joined();
        assert_eq!(&*joined, "nsk1a note");
        assert_eq!(spans.map(|s| text(&joined, s)), ["ns", "", "k1", "a note"]);
        assert!(none.is_none());
    }
}
