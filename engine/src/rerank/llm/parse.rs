//! Reading a model's ranking answer as a permutation, whatever the model wrote.
//!
//! Ids are 1-based passage numbers. The rules, applied in this order:
//! 1. **Which numbers count.** If the answer holds at least one bracketed id — `[`, optional spaces,
//!    an optional sign, ASCII digits, optional spaces, `]` — only bracketed ids count, in order of
//!    appearance (so `[3] > [1]` and `[[3]] > [ 1 ]` both read 3, 1, and numbers in prose around
//!    them are ignored). Otherwise every run of ASCII digits counts, a `-` right before it making
//!    it negative (so `3 > 1 > 2` reads 3, 1, 2).
//! 2. **Out of range** (0, negative, above the window size, or too large for `usize`): dropped,
//!    counted in [`Repairs::out_of_range`].
//! 3. **Repeated** ids: the first occurrence keeps its place, later ones are dropped and counted in
//!    [`Repairs::duplicate`].
//! 4. **Missing** ids: appended after the ranked ones in their original (input) order, counted in
//!    [`Repairs::missing`].
//!
//! The result is always a permutation of `0..n` (0-based positions in the window).

/// How much of an answer had to be repaired to make it a permutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repairs {
    /// Ids outside `1..=n` (dropped).
    pub out_of_range: usize,
    /// Ids given more than once (later copies dropped).
    pub duplicate: usize,
    /// Ids never given (appended in input order).
    pub missing: usize,
}

impl Repairs {
    /// Total number of repairs.
    pub fn total(&self) -> usize {
        self.out_of_range + self.duplicate + self.missing
    }

    /// Adds another count to this one.
    pub fn add(&mut self, other: Repairs) {
        self.out_of_range += other.out_of_range;
        self.duplicate += other.duplicate;
        self.missing += other.missing;
    }
}

/// A number found in an answer: `None` when it cannot be a valid id (negative or overflowing).
type RawId = Option<usize>;

/// Parses `answer` as a ranking of `n` items: returns the 0-based order (a permutation of `0..n`)
/// and the repairs it needed (rules in the module documentation).
pub fn parse_permutation(answer: &str, n: usize) -> (Vec<usize>, Repairs) {
    let mut repairs = Repairs::default();
    let mut seen = vec![false; n];
    let mut order = Vec::with_capacity(n);
    for raw in raw_ids(answer) {
        match raw {
            Some(id) if (1..=n).contains(&id) => {
                if seen[id - 1] {
                    repairs.duplicate += 1;
                } else {
                    seen[id - 1] = true;
                    order.push(id - 1);
                }
            }
            _ => repairs.out_of_range += 1,
        }
    }
    for (i, was_seen) in seen.iter().enumerate() {
        if !was_seen {
            order.push(i);
            repairs.missing += 1;
        }
    }
    (order, repairs)
}

/// True when `answer` already names every id in `1..=n` and does not end in the middle of a
/// number: generating more tokens could not change the parsed order.
pub fn answer_is_complete(answer: &str, n: usize) -> bool {
    if answer.ends_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let mut seen = vec![false; n];
    let mut distinct = 0;
    for id in raw_ids(answer).into_iter().flatten() {
        if (1..=n).contains(&id) && !seen[id - 1] {
            seen[id - 1] = true;
            distinct += 1;
        }
    }
    distinct == n
}

/// The numbers of an answer, by rule 1 of the module documentation.
fn raw_ids(answer: &str) -> Vec<RawId> {
    let bracketed = bracketed_ids(answer);
    if bracketed.is_empty() {
        bare_ids(answer)
    } else {
        bracketed
    }
}

/// Parses a run of ASCII digits; `None` on overflow.
fn digits_value(digits: &[u8]) -> RawId {
    digits.iter().try_fold(0usize, |acc, d| acc.checked_mul(10)?.checked_add(usize::from(d - b'0')))
}

/// Every `[ ±digits ]` in the answer.
fn bracketed_ids(answer: &str) -> Vec<RawId> {
    let b = answer.as_bytes();
    let mut ids = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'[' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let negative = j < b.len() && b[j] == b'-';
        if j < b.len() && (b[j] == b'-' || b[j] == b'+') {
            j += 1;
        }
        let start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let end = j;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if end > start && j < b.len() && b[j] == b']' {
            ids.push(if negative { None } else { digits_value(&b[start..end]) });
            i = j + 1;
        } else {
            // Not an id; rescan from the next byte so that `[[3]]` finds the inner `[3]`.
            i += 1;
        }
    }
    ids
}

/// Every run of ASCII digits in the answer, a `-` right before it making it negative.
fn bare_ids(answer: &str) -> Vec<RawId> {
    let b = answer.as_bytes();
    let mut ids = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let negative = start > 0 && b[start - 1] == b'-';
        ids.push(if negative { None } else { digits_value(&b[start..i]) });
    }
    ids
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn is_permutation(order: &[usize], n: usize) -> bool {
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        sorted == (0..n).collect::<Vec<_>>()
    }

    fn repairs(out_of_range: usize, duplicate: usize, missing: usize) -> Repairs {
        Repairs { out_of_range, duplicate, missing }
    }

    #[test]
    fn well_formed_answer_needs_no_repair() {
        assert_eq!(parse_permutation("[3] > [1] > [2]", 3), (vec![2, 0, 1], Repairs::default()));
        assert_eq!(parse_permutation(" [ 2 ]>[1]  [3]\n", 3), (vec![1, 0, 2], Repairs::default()));
    }

    #[test]
    fn missing_ids_are_appended_in_input_order() {
        assert_eq!(parse_permutation("[4] > [2]", 5), (vec![3, 1, 0, 2, 4], repairs(0, 0, 3)));
        assert_eq!(parse_permutation("", 3), (vec![0, 1, 2], repairs(0, 0, 3)));
        assert_eq!(parse_permutation("no idea", 2), (vec![0, 1], repairs(0, 0, 2)));
    }

    #[test]
    fn repeated_ids_keep_their_first_place() {
        assert_eq!(parse_permutation("[2] > [2] > [1] > [2]", 3), (vec![1, 0, 2], repairs(0, 2, 1)));
    }

    #[test]
    fn out_of_range_ids_are_dropped() {
        let huge = "[99999999999999999999999999] > [0] > [-1] > [4] > [+2] > [1]";
        assert_eq!(parse_permutation(huge, 3), (vec![1, 0, 2], repairs(4, 0, 1)));
    }

    #[test]
    fn bracketed_ids_win_over_prose_numbers() {
        let answer = "Passage [2] is best (from 1999), then [1]; 3 is off topic.";
        assert_eq!(parse_permutation(answer, 3), (vec![1, 0, 2], repairs(0, 0, 1)));
        assert_eq!(parse_permutation("[[3]] > [1]", 3), (vec![2, 0, 1], repairs(0, 0, 1)));
    }

    #[test]
    fn bare_numbers_are_read_when_no_bracket_id_exists() {
        assert_eq!(parse_permutation("3 > 1 > 2", 3), (vec![2, 0, 1], Repairs::default()));
        assert_eq!(parse_permutation("-2, 1", 2), (vec![0, 1], repairs(1, 0, 1)));
        assert_eq!(parse_permutation("[a] ３ > 2", 3), (vec![1, 0, 2], repairs(0, 0, 2)));
    }

    #[test]
    fn completeness_needs_every_id_and_a_finished_number() {
        assert!(answer_is_complete("[2] > [1] > [3]", 3));
        assert!(!answer_is_complete("[2] > [1]", 3));
        assert!(!answer_is_complete("2 > 3 > 1", 3), "1 may still become 10");
        assert!(answer_is_complete("2 > 3 > 1 ", 3));
        assert!(answer_is_complete("[2] > [2] > [1] > [3]", 3));
    }

    /// Answers a misbehaving model might give: fragments of valid rankings, wrong ids, noise.
    fn adversarial_answer() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            (0usize..40).prop_map(|i| format!("[{i}]")),
            (0usize..40).prop_map(|i| format!("[-{i}]")),
            (0usize..40).prop_map(|i| format!("{i}")),
            Just(" > ".to_string()),
            Just("[[".to_string()),
            Just("]]".to_string()),
            Just("[".to_string()),
            Just("-".to_string()),
            Just("18446744073709551616".to_string()),
            Just("[99999999999999999999999]".to_string()),
            Just("passage ".to_string()),
            Just("é中文🙂".to_string()),
            Just("٣".to_string()),
            "\\PC{0,8}",
        ];
        prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_string_gives_a_permutation(answer in "\\PC*", n in 0usize..45) {
            let (order, rep) = parse_permutation(&answer, n);
            prop_assert!(is_permutation(&order, n));
            prop_assert!(rep.missing <= n);
        }

        #[test]
        fn adversarial_answers_give_a_permutation(answer in adversarial_answer(), n in 0usize..25) {
            let (order, rep) = parse_permutation(&answer, n);
            prop_assert!(is_permutation(&order, n), "{answer:?} -> {order:?}");
            // Every id read from the answer is either placed, a duplicate or out of range.
            let read = raw_ids(&answer).len();
            prop_assert_eq!(read, (n - rep.missing) + rep.duplicate + rep.out_of_range);
            if answer_is_complete(&answer, n) {
                prop_assert_eq!(rep.missing, 0);
            }
        }

        #[test]
        fn a_shuffled_valid_answer_is_read_exactly(perm in Just((0..20usize).collect::<Vec<_>>()).prop_shuffle()) {
            let answer = perm.iter().map(|i| format!("[{}]", i + 1)).collect::<Vec<_>>().join(" > ");
            prop_assert_eq!(parse_permutation(&answer, 20), (perm, Repairs::default()));
        }
    }
}
