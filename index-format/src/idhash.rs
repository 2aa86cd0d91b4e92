//! The external-id lookup table of a segment (`doc_ids.hash`, format v5): an open-addressed hash
//! table from an external document id to its document number, so that reranking a first stage's
//! candidates by id costs one or two memory reads per id, without loading every id into memory.
//!
//! The table is `2^b` u32 slots (`b ≥ 1`, `2^b ≥ 2 · n_docs`, so at least half the slots are
//! empty and a probe always ends). Slot `s` holds a document number or [`EMPTY`]. Document `d`
//! with id bytes `x` sits in the first slot from `fnv1a64(x) mod 2^b` on (wrapping around) that
//! was empty when documents were inserted in increasing order. A lookup walks from the same
//! slot, comparing ids, until it finds the id or an empty slot.

/// An empty slot.
pub const EMPTY: u32 = u32::MAX;

/// FNV-1a, 64 bits, of `bytes`: the table's hash function.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Number of slots of the table of `n_docs` documents: the smallest power of two at least
/// `2 · n_docs` (and at least 2). `None` past what u32 document numbers allow.
pub fn table_len(n_docs: usize) -> Option<usize> {
    if n_docs >= EMPTY as usize {
        return None;
    }
    n_docs.checked_mul(2)?.max(2).checked_next_power_of_two()
}

/// Builds the table of `n_docs` documents whose ids are `id_of(d)`. Ids must be unique (a
/// repeated id is inserted again and never found under its second number).
pub fn build<'a>(n_docs: usize, id_of: impl Fn(usize) -> &'a [u8]) -> Option<Vec<u32>> {
    let len = table_len(n_docs)?;
    let mask = len - 1;
    let mut slots = vec![EMPTY; len];
    for d in 0..n_docs {
        let mut s = fnv1a64(id_of(d)) as usize & mask;
        while slots[s] != EMPTY {
            s = (s + 1) & mask;
        }
        slots[s] = d as u32;
    }
    Some(slots)
}

/// The slot where the search for `id` starts (`None` for a table that is empty or not a power
/// of two long, where [`lookup`] finds nothing): for a caller that loads it ahead of time.
pub fn home_slot(slots: &[u32], id: &[u8]) -> Option<usize> {
    (!slots.is_empty() && slots.len().is_power_of_two()).then(|| fnv1a64(id) as usize & (slots.len() - 1))
}

/// Looks `id` up in `slots` (a table as [`build`] makes it, whose length is a power of two).
/// `id_of` gives a document's id bytes, or `None` for a number that is not a document (corrupt
/// table: then the lookup fails). At most `slots.len()` probes.
pub fn lookup<'a>(slots: &[u32], id: &[u8], id_of: impl Fn(u32) -> Option<&'a [u8]>) -> Option<u32> {
    let mut s = home_slot(slots, id)?;
    let mask = slots.len() - 1;
    for _ in 0..slots.len() {
        let d = slots[s];
        if d == EMPTY {
            return None;
        }
        if id_of(d)? == id {
            return Some(d);
        }
        s = (s + 1) & mask;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_is_found_and_others_are_not() {
        for n in [0usize, 1, 2, 3, 7, 100, 1000] {
            let ids: Vec<String> = (0..n).map(|i| format!("doc-{i}")).collect();
            let slots = build(n, |d| ids[d].as_bytes()).unwrap();
            assert!(slots.len().is_power_of_two() && slots.len() >= 2 * n);
            let id_of = |d: u32| ids.get(d as usize).map(|s| s.as_bytes());
            for (d, id) in ids.iter().enumerate() {
                assert_eq!(lookup(&slots, id.as_bytes(), id_of), Some(d as u32));
            }
            assert_eq!(lookup(&slots, b"missing", id_of), None);
            assert_eq!(lookup(&slots, b"", id_of), None);
        }
    }

    #[test]
    fn corrupt_tables_fail_without_looping() {
        let ids = ["a", "b"];
        let id_of = |d: u32| ids.get(d as usize).map(|s| s.as_bytes());
        // Full of one document: the probe stops after one round.
        assert_eq!(lookup(&[0, 0, 0, 0], b"b", id_of), None);
        // Numbers that are not documents.
        assert_eq!(lookup(&[7, 7], b"a", id_of), None);
        // Not a power of two.
        assert_eq!(lookup(&[0, 1, EMPTY], b"a", id_of), None);
        assert_eq!(table_len(u32::MAX as usize), None);
        // FNV-1a test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
