//! Inverted-file decoding: format v2 (plain u32 lists, copied) against v3 (Rice-coded lists,
//! decoded), on lists shaped like the 10k synthetic index (8192 lists of 1 to 42 of 10,000
//! documents: about 172k entries).
//!
//! `cargo bench --bench ivf` times decoding every list into one reused buffer (ns per entry), and
//! the candidate generation of one PLAID query: 128 lists appended to a fresh vector, sorted and
//! deduplicated, as `plaid.rs` does. Both forms are checked to give the same lists first.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use index_format::packed::{best_rice_param, put_rice_list, BitWriter, RiceLists};

const LISTS: usize = 8192;
const DOCS: u64 = 10_000;
const PROBED: usize = 128;

/// The engine's seeded generator, as a closure.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = engine::rng::Rng::new(seed);
    move || rng.next_u64()
}

struct Lists {
    offsets: Vec<u64>,
    docs: Vec<u32>,
    bit_offsets: Vec<u64>,
    params: Vec<u8>,
    stream: Vec<u8>,
    probes: Vec<usize>,
}

fn lists() -> Lists {
    let mut next = rng(42);
    let (mut offsets, mut docs) = (vec![0u64], Vec::new());
    let mut w = BitWriter::new(Vec::new());
    let (mut bit_offsets, mut params) = (vec![0u64], Vec::new());
    for _ in 0..LISTS {
        let n = 1 + next() % 42;
        let mut list: Vec<u32> = (0..n).map(|_| (next() % DOCS) as u32).collect();
        list.sort_unstable();
        list.dedup();
        let (k, _) = best_rice_param(&list);
        put_rice_list(&mut w, &list, k).unwrap();
        bit_offsets.push(w.bits());
        params.push(k as u8);
        docs.extend_from_slice(&list);
        offsets.push(docs.len() as u64);
    }
    let probes = (0..PROBED).map(|_| (next() % LISTS as u64) as usize).collect();
    Lists { offsets, docs, bit_offsets, params, stream: w.finish().unwrap(), probes }
}

fn main() {
    let l = lists();
    let rice = RiceLists::new(&l.bit_offsets, &l.params, &l.stream).unwrap();
    let plain = |c: usize, out: &mut Vec<u32>| {
        out.extend_from_slice(&l.docs[l.offsets[c] as usize..l.offsets[c + 1] as usize]);
    };
    let mut a = Vec::new();
    let mut b = Vec::new();
    for c in 0..LISTS {
        plain(c, &mut a);
        rice.decode_into(c, &mut b).unwrap();
    }
    assert_eq!(a, b, "the two forms hold the same lists");
    println!(
        "{} entries: v2 32 bits each, v3 {:.2} bits each (+ {} bytes of per-list offsets and parameters)",
        l.docs.len(),
        rice.total_bits() as f64 / l.docs.len() as f64,
        8 * l.bit_offsets.len() + l.params.len()
    );
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(20)
        .configure_from_args();
    let mut group = c.benchmark_group("ivf_all_lists");
    group.throughput(Throughput::Elements(l.docs.len() as u64));
    let mut out = Vec::with_capacity(l.docs.len());
    group.bench_function("v2_plain", |bch| {
        bch.iter(|| {
            out.clear();
            for c in 0..LISTS {
                plain(c, &mut out);
            }
            black_box(out.len())
        })
    });
    group.bench_function("v3_rice", |bch| {
        bch.iter(|| {
            out.clear();
            for c in 0..LISTS {
                rice.decode_into(c, &mut out).unwrap();
            }
            black_box(out.len())
        })
    });
    group.finish();
    let mut group = c.benchmark_group("ivf_query_candidates");
    let candidates = |decode: &dyn Fn(usize, &mut Vec<u32>)| {
        let mut out: Vec<u32> = Vec::new();
        for &p in &l.probes {
            decode(p, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out.len()
    };
    group.bench_function("v2_plain", |bch| bch.iter(|| black_box(candidates(&plain))));
    group.bench_function("v3_rice", |bch| {
        bch.iter(|| black_box(candidates(&|c, out: &mut Vec<u32>| rice.decode_into(c, out).unwrap())))
    });
    group.finish();
    c.final_summary();
}
