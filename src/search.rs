//! Search queries and snippets: what SearchMessages means, independent of the backend.
//!
//! A query is split into *terms*, the runs of letters and digits (with their combining marks);
//! everything else separates terms. A message matches when it matches every term (AND).
//!
//! - [`SearchMode::Words`]: a term matches a whole word, case and diacritics folded ("cafe"
//!   finds "Café"). SQLite's FTS5 `unicode61 remove_diacritics 2` index and PostgreSQL's
//!   `simple` tsvector (over `unaccent`ed text) serve it.
//! - [`SearchMode::Substrings`]: when a term holds a CJK character (Han, kana, Hangul),
//!   which has no spaces between words, a term matches anywhere in the text, case-insensitively.
//!   SQLite's FTS5 `trigram` index serves terms of 3+ characters (shorter ones are matched
//!   with `LIKE`); PostgreSQL uses `ILIKE` (with a `pg_trgm` GIN index when available).
//!
//! Snippets are made here, the same way on both backends: the part of the text around the
//! first match, with every match wrapped in [`MARK_START`] .. [`MARK_END`].
use unicode_normalization::char::{decompose_canonical, is_combining_mark};

use crate::error::{Error, Result};

/// The longest query, in bytes of UTF-8.
pub const MAX_QUERY_BYTES: usize = 256;
/// The most terms a query may have.
pub const MAX_TERMS: usize = 16;
/// Opens a highlighted match in a snippet: U+0002 (START OF TEXT).
pub const MARK_START: char = '\u{2}';
/// Closes a highlighted match in a snippet: U+0003 (END OF TEXT).
pub const MARK_END: char = '\u{3}';
/// About how many characters of context a snippet keeps before its first match.
const SNIPPET_BEFORE: usize = 40;
/// The most characters of a message's text a snippet shows.
const SNIPPET_CHARS: usize = 200;

/// How the terms of a query match a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Whole words, case and diacritics folded.
    Words,
    /// Substrings, case-insensitive (queries with CJK characters).
    Substrings,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub mode: SearchMode,
    /// The terms as written (1 to [`MAX_TERMS`]), each non-empty, letters and digits only.
    pub terms: Vec<String>,
}

impl SearchQuery {
    /// Parses a query. `InvalidArgument` when it is empty, longer than [`MAX_QUERY_BYTES`],
    /// has no letter or digit, or has more than [`MAX_TERMS`] terms.
    pub fn parse(query: &str) -> Result<Self> {
        if query.trim().is_empty() {
            return Err(Error::InvalidArgument("query must not be empty".into()));
        }
        if query.len() > MAX_QUERY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "query is {} bytes, over the maximum of {MAX_QUERY_BYTES}",
                query.len()
            )));
        }
        let terms: Vec<String> = words(query).map(|(_, term)| term.to_owned()).collect();
        if terms.is_empty() {
            return Err(Error::InvalidArgument(
                "query has no letter or digit to search for".into(),
            ));
        }
        if terms.len() > MAX_TERMS {
            return Err(Error::InvalidArgument(format!(
                "query has {} terms, over the maximum of {MAX_TERMS}",
                terms.len()
            )));
        }
        // A term with a CJK character: every match holds that character, so every match is in
        // the trigram indexes, which hold only such texts.
        let mode = if terms.iter().any(|term| has_cjk(term)) {
            SearchMode::Substrings
        } else {
            SearchMode::Words
        };
        Ok(Self { mode, terms })
    }

    /// The text with every match of the query marked, cut to about [`SNIPPET_CHARS`]
    /// characters around the first match ("…" where it is cut). Without a match (the index
    /// matched where this simpler reading does not), the start of the text, unmarked.
    pub fn snippet(&self, text: &str) -> String {
        let folded = Folded::new(text);
        let terms: Vec<String> = self.terms.iter().map(|t| Folded::new(t).text).collect();
        // Matches as byte ranges of `text`, sorted and not overlapping.
        let mut matches: Vec<(usize, usize)> = Vec::new();
        match self.mode {
            SearchMode::Words => {
                for (start, word) in words(&folded.text) {
                    if terms.iter().any(|t| t == word) {
                        matches.push(folded.original(start, start + word.len()));
                    }
                }
            }
            SearchMode::Substrings => {
                for term in &terms {
                    for (start, _) in folded.text.match_indices(term.as_str()) {
                        matches.push(folded.original(start, start + term.len()));
                    }
                }
                matches.sort();
                let mut kept: Vec<(usize, usize)> = Vec::new();
                for (start, end) in matches {
                    match kept.last_mut() {
                        Some(last) if start <= last.1 => last.1 = last.1.max(end),
                        _ => kept.push((start, end)),
                    }
                }
                matches = kept;
            }
        }
        // The window, in bytes of `text`, on character boundaries.
        let first = matches.first().map_or(0, |m| m.0);
        let chars: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let first_char = chars.partition_point(|&i| i < first);
        let start_char = first_char.saturating_sub(SNIPPET_BEFORE);
        let end_char = (start_char + SNIPPET_CHARS).min(chars.len());
        let start = chars.get(start_char).copied().unwrap_or(text.len());
        let end = chars.get(end_char).copied().unwrap_or(text.len());
        let mut snippet = String::with_capacity(end - start + 8);
        if start > 0 {
            snippet.push('…');
        }
        let mut at = start;
        for (m_start, m_end) in matches {
            if m_end <= at || m_start >= end {
                continue;
            }
            let m_start = m_start.max(at);
            let m_end = m_end.min(end);
            snippet.push_str(&text[at..m_start]);
            snippet.push(MARK_START);
            snippet.push_str(&text[m_start..m_end]);
            snippet.push(MARK_END);
            at = m_end;
        }
        snippet.push_str(&text[at..end]);
        if end < text.len() {
            snippet.push('…');
        }
        snippet
    }
}

/// The terms of `text`: runs of letters, digits and combining marks, with their byte offsets.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let is_word = |c: char| c.is_alphanumeric() || is_combining_mark(c);
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = rest.peek() {
            if is_word(c) {
                break;
            }
            rest.next();
        }
        let (start, _) = *rest.peek()?;
        let mut end = start;
        while let Some(&(i, c)) = rest.peek() {
            if !is_word(c) {
                break;
            }
            end = i + c.len_utf8();
            rest.next();
        }
        Some((start, &text[start..end]))
    })
}

/// Whether `c` belongs to a script written without spaces between words (or, for Hangul,
/// with particles joined to words): Han, Hiragana, Katakana, Hangul. The ranges are the search
/// migration's ([`migrations::CJK_RANGES`]), which decide the rows the trigram indexes hold.
pub fn is_cjk(c: char) -> bool {
    migrations::CJK_RANGES
        .iter()
        .any(|(from, to)| (*from..=*to).contains(&c))
}

/// Whether `text` holds a CJK character ([`is_cjk`]). An ASCII text (most texts) is told
/// apart first, in one pass over its bytes, without decoding its characters.
pub fn has_cjk(text: &str) -> bool {
    !text.is_ascii() && text.chars().any(is_cjk)
}

/// A text folded for matching (canonical decomposition, combining marks dropped, lower case),
/// with the way back to the original's byte offsets.
struct Folded {
    text: String,
    /// For each byte of `text`: the start of the original character it came from.
    origin: Vec<usize>,
    /// The original text's length, and the end of each original character by its start.
    original_len: usize,
    ends: std::collections::HashMap<usize, usize>,
}

impl Folded {
    fn new(original: &str) -> Self {
        let mut text = String::with_capacity(original.len());
        let mut origin = Vec::with_capacity(original.len());
        let mut ends = std::collections::HashMap::new();
        for (at, c) in original.char_indices() {
            ends.insert(at, at + c.len_utf8());
            let before = text.len();
            decompose_canonical(c, |d| {
                if !is_combining_mark(d) {
                    text.extend(d.to_lowercase());
                }
            });
            origin.resize(origin.len() + (text.len() - before), at);
        }
        Self {
            text,
            origin,
            original_len: original.len(),
            ends,
        }
    }

    /// The original byte range of the folded range `start..end` (whole characters).
    fn original(&self, start: usize, end: usize) -> (usize, usize) {
        let from = self.origin.get(start).copied().unwrap_or(self.original_len);
        let to = end
            .checked_sub(1)
            .and_then(|last| self.origin.get(last))
            .and_then(|at| self.ends.get(at))
            .copied()
            .unwrap_or(self.original_len);
        (from, to.max(from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(s: &str) -> String {
        s.replace(MARK_START, "[").replace(MARK_END, "]")
    }

    #[test]
    fn parse_splits_terms_and_picks_the_mode() {
        let q = SearchQuery::parse("  café, au-lait! ").unwrap();
        assert_eq!(q.terms, ["café", "au", "lait"]);
        assert_eq!(q.mode, SearchMode::Words);
        assert_eq!(
            SearchQuery::parse("東京タワー").unwrap().mode,
            SearchMode::Substrings
        );
        assert!(SearchQuery::parse("").is_err());
        assert!(SearchQuery::parse(" ?! ").is_err());
        assert!(SearchQuery::parse(&"a".repeat(MAX_QUERY_BYTES + 1)).is_err());
        assert!(SearchQuery::parse(&"a ".repeat(MAX_TERMS + 1)).is_err());
    }

    #[test]
    fn snippets_mark_folded_words_in_the_original_text() {
        let q = SearchQuery::parse("cafe").unwrap();
        assert_eq!(
            marked(&q.snippet("Un Café, un cafe et un cafetier")),
            "Un [Café], un [cafe] et un cafetier"
        );
        let q = SearchQuery::parse("привет").unwrap();
        assert_eq!(marked(&q.snippet("Привет, мир")), "[Привет], мир");
    }

    #[test]
    fn snippets_mark_substrings_and_cut_long_texts() {
        let q = SearchQuery::parse("東京").unwrap();
        assert_eq!(
            marked(&q.snippet("私は東京に住んでいます")),
            "私は[東京]に住んでいます"
        );
        let long = format!("{} needle {}", "x ".repeat(200), "y ".repeat(200));
        let s = marked(&SearchQuery::parse("needle").unwrap().snippet(&long));
        assert!(
            s.starts_with('…') && s.ends_with('…') && s.contains("[needle]"),
            "{s}"
        );
        assert!(s.chars().count() <= SNIPPET_CHARS + 4);
    }
}
