//! MaxSim kernel throughput, as GFLOP/s and as a fraction of this core's FMA peak.
//!
//! `cargo bench --bench maxsim` prints the single-core FMA peak for each vector width, then a
//! table of GFLOP/s per kernel, dimension and document length (32 query tokens, documents hot in
//! cache; one document costs 2·qlen·doclen·dim flops), then runs the criterion benchmarks, whose
//! `elem/s` throughput is flops per second. Every kernel's score is checked against the scalar
//! oracle before it is timed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use engine::maxsim::{calibrate, scalar, Kernel, PreparedQuery, Scorer};
use half::f16;

const QLEN: usize = 32;
const DIMS: [usize; 3] = [96, 128, 384];
const DOC_LENS: [usize; 3] = [32, 100, 180];
/// Distinct documents cycled through per measurement: enough to vary the data, few enough to stay
/// in L2 (8 × 180 × 384 × 2 B = 1.1 MB at the largest).
const DOCS: usize = 8;

struct Case {
    dim: usize,
    doclen: usize,
    query: PreparedQuery,
    docs: Vec<Vec<f16>>,
}

impl Case {
    fn new(dim: usize, doclen: usize) -> Self {
        let mut state = (dim * 1000 + doclen) as u64;
        let mut unit_rows = |rows: usize| -> Vec<f32> {
            let mut v: Vec<f32> = (0..rows * dim)
                .map(|_| {
                    state =
                        state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect();
            for t in v.chunks_exact_mut(dim) {
                let norm = t.iter().map(|x| x * x).sum::<f32>().sqrt();
                t.iter_mut().for_each(|x| *x /= norm);
            }
            v
        };
        let query = PreparedQuery::new(&unit_rows(QLEN), dim);
        let docs = (0..DOCS).map(|_| unit_rows(doclen).into_iter().map(f16::from_f32).collect()).collect();
        Self { dim, doclen, query, docs }
    }

    fn flops_per_doc(&self) -> u64 {
        (2 * QLEN * self.doclen * self.dim) as u64
    }

    /// Scores every document with `kernel` and checks it against the scalar oracle.
    fn check(&self, kernel: Kernel) {
        let mut scorer = Scorer::with_kernel(&self.query, kernel);
        for doc in &self.docs {
            let got = scorer.score_f16(doc);
            let want = scalar::maxsim_f16(self.query.tokens(), doc, self.dim);
            // Unit vectors: every |q·d| <= 1, so the rounding error is tiny next to this bound.
            assert!(
                (got - want).abs() <= 1e-4 * QLEN as f32 * want.abs().max(1.0),
                "{} dim {} doclen {}: {got} vs oracle {want}",
                kernel.name(),
                self.dim,
                self.doclen
            );
        }
    }

    /// Scores all documents once; returns a value depending on every score.
    fn run(&self, scorer: &mut Scorer<'_>) -> f32 {
        self.docs.iter().map(|d| scorer.score_f16(black_box(d))).sum()
    }

    /// Best-of-5 GFLOP/s of `kernel`, each sample about `budget / 5` long.
    fn gflops(&self, kernel: Kernel, budget: Duration) -> f64 {
        let mut scorer = Scorer::with_kernel(&self.query, kernel);
        let per_round = self.flops_per_doc() * DOCS as u64;
        let started = Instant::now();
        let mut rounds = 0u64;
        while started.elapsed() < budget / 20 {
            black_box(self.run(&mut scorer));
            rounds += 1;
        }
        let rounds = (rounds * 4).max(1);
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..rounds {
                    black_box(self.run(&mut scorer));
                }
                (rounds * per_round) as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max)
    }
}

fn cases() -> Vec<Case> {
    DIMS.iter().flat_map(|&dim| DOC_LENS.iter().map(move |&n| Case::new(dim, n))).collect()
}

/// Peak FMA rate and the GFLOP/s table, printed.
fn report(cases: &[Case]) {
    println!("== single-core FMA peak (12 independent FMA chains, best of 3) ==");
    let mut peak = 0.0f64;
    for kernel in Kernel::available() {
        let best_of_3 =
            (0..3).filter_map(|_| calibrate::fma_peak_gflops(kernel, 200_000_000 / 12)).reduce(f64::max);
        if let Some(g) = best_of_3 {
            println!("fma peak {:<7} {g:7.1} GFLOP/s", kernel.name());
            peak = peak.max(g);
        }
    }
    println!("== MaxSim f16 docs, qlen {QLEN}, {DOCS} docs hot in cache, best of 5 ==");
    for case in cases {
        for kernel in Kernel::available() {
            let budget = if kernel == Kernel::Scalar { 100 } else { 250 };
            let g = case.gflops(kernel, Duration::from_millis(budget));
            let share = if peak > 0.0 { format!("{:5.1}% of peak", 100.0 * g / peak) } else { String::new() };
            println!(
                "maxsim {:<7} dim {:>3} doclen {:>3}: {g:7.2} GFLOP/s {share}",
                kernel.name(),
                case.dim,
                case.doclen
            );
        }
    }
}

fn criterion_benches(c: &mut Criterion, cases: &[Case]) {
    for case in cases.iter().filter(|c| c.doclen != 100) {
        let mut group = c.benchmark_group(format!("maxsim_f16/dim{}/q{QLEN}", case.dim));
        group.throughput(Throughput::Elements(case.flops_per_doc() * DOCS as u64));
        for kernel in Kernel::available() {
            let mut scorer = Scorer::with_kernel(&case.query, kernel);
            group.bench_function(BenchmarkId::new(kernel.name(), case.doclen), |b| {
                b.iter(|| case.run(&mut scorer))
            });
        }
        group.finish();
    }
}

fn main() {
    let cases = cases();
    for case in &cases {
        for kernel in Kernel::available() {
            case.check(kernel);
        }
    }
    // `cargo test --benches` runs this binary without `--bench`: checks only, no timing.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if benchmarking {
        report(&cases);
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700))
        .sample_size(10)
        .configure_from_args();
    criterion_benches(&mut c, &cases);
    c.final_summary();
}
