//! The LLM answer parser: the input's first byte is the window size (0 to 40), the rest the
//! model's answer. The parsed order must be a permutation of the window with consistent repair
//! counts, whatever the answer says.
#![no_main]

use engine::rerank::llm::parse::{answer_is_complete, parse_permutation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n) % 41;
    let answer = String::from_utf8_lossy(rest);
    let (order, repairs) = parse_permutation(&answer, n);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "not a permutation of {n}: {order:?}");
    assert!(repairs.missing <= n);
    if answer_is_complete(&answer, n) {
        assert_eq!(repairs.missing, 0, "a complete answer needed no ids appended");
    }
});
