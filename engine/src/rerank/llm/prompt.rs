//! The listwise ranking prompt: a system message and one user message that lists the numbered
//! passages of a window.
//!
//! Each passage is put on one line (runs of whitespace, newlines included, become one space) and
//! cut to a budget of `max_chars` characters (Unicode scalar values, not tokens, so that the
//! budget means the same for every backend, remote ones included). The cut falls on the last space
//! inside the budget when that space is in its second half, else mid-word. As a rule of thumb for
//! English, 4 characters make one token.

use super::{ChatMessage, Role};

/// The system message of every ranking prompt.
pub const SYSTEM: &str = "You rank search results. You read a search query and numbered passages, \
     and you answer with the passage numbers ordered from the most to the least relevant, and \
     nothing else.";

/// The messages asking the model to rank `passages` (the window, in its current order) for
/// `query`; each passage is cut to `max_chars` characters.
pub fn ranking_messages(query: &str, passages: &[&str], max_chars: usize) -> Vec<ChatMessage> {
    let query = one_line(query, usize::MAX);
    let n = passages.len();
    let mut user = format!("Search query: {query}\n\nPassages:\n");
    for (i, p) in passages.iter().enumerate() {
        user.push_str(&format!("[{}] {}\n", i + 1, one_line(p, max_chars)));
    }
    let example = match n {
        0 | 1 => "[1]".to_string(),
        2 => "[2] > [1]".to_string(),
        _ => "[2] > [3] > [1]".to_string(),
    };
    user.push_str(&format!(
        "\nRank the {n} passages above by relevance to the search query, most relevant first. \
         Answer only with the passage numbers in the form {example}, each number once, with no \
         explanation.\nSearch query: {query}"
    ));
    vec![ChatMessage::new(Role::System, SYSTEM), ChatMessage::new(Role::User, user)]
}

/// `text` with whitespace runs collapsed to single spaces, cut to `max_chars` characters.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut chars = 0usize;
    let mut last_space: Option<(usize, usize)> = None; // (byte length, char count) before a space
    for word in text.split_whitespace() {
        if !out.is_empty() {
            if chars + 1 > max_chars {
                break;
            }
            last_space = Some((out.len(), chars));
            out.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars == max_chars {
                // Over budget inside a word: back up to the last space if that keeps half.
                if let Some((len, kept)) = last_space {
                    if kept * 2 >= max_chars {
                        out.truncate(len);
                    }
                }
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_are_numbered_one_per_line() {
        let msgs = ranking_messages("heat  flux", &["first\npassage", "second"], 100);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].role, Role::System);
        let user = &msgs[1].content;
        assert!(user.starts_with("Search query: heat flux\n\nPassages:\n[1] first passage\n[2] second\n"));
        assert!(user.contains("Rank the 2 passages"), "{user}");
        assert!(user.ends_with("Search query: heat flux"));
    }

    #[test]
    fn truncation_counts_characters_and_prefers_word_boundaries() {
        assert_eq!(one_line("alpha beta gamma", 100), "alpha beta gamma");
        assert_eq!(one_line("alpha beta gamma", 13), "alpha beta");
        assert_eq!(one_line("alpha beta gamma", 11), "alpha beta");
        assert_eq!(one_line("alpha beta gamma", 10), "alpha beta");
        assert_eq!(one_line("alphabetagamma", 5), "alpha");
        assert_eq!(one_line("ab cdefghijkl", 8), "ab cdefg", "a space in the first half is not used");
        assert_eq!(one_line("éééé ééé", 6), "éééé");
        assert_eq!(one_line("  ", 5), "");
        assert_eq!(one_line("word", 0), "");
    }
}
