//! Truncated SVD at rank 16: exact (thin SVD, truncated) against the
//! partial methods, on the weight shapes of MiniLM/BERT-base/large.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use loraxs_svd::{SvdMethod, truncated_svd_row_major};

fn svd(c: &mut Criterion) {
    let mut group = c.benchmark_group("svd_r16");
    group.sample_size(10);
    for (rows, cols) in [(384, 384), (1024, 1024), (1024, 4096)] {
        let w = loraxs_benches::weight(rows, cols, 7);
        for (name, method) in [
            ("exact", SvdMethod::Exact),
            ("krylov", SvdMethod::Krylov),
            ("randomized", SvdMethod::randomized()),
        ] {
            group.bench_with_input(BenchmarkId::new(name, format!("{rows}x{cols}")), &w, |b, w| {
                b.iter(|| truncated_svd_row_major(w, rows, cols, 16, method).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, svd);
criterion_main!(benches);
