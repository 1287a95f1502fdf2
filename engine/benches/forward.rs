//! Forward-pass benches on the tiny preset (fastest kernel variant): tracing off against the same pass compiled without
//! any trace call (they must be within noise), and every trace point on with values written
//! (the overhead ratio). Run: `cargo bench -p bitnet-engine --bench forward`; for regressions,
//! `-- --save-baseline main` then `-- --baseline main`.

use criterion::{criterion_group, criterion_main, Criterion};

use bitnet_engine::forward::{Session, Tracer};
use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::Model;
use bitnet_engine::synth::{build, preset};
use bitnet_engine::trace::PointFilter;

fn forward(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    build(&preset("tiny").unwrap())
        .unwrap()
        .write(&path)
        .unwrap();
    let model = Model::load(&path).unwrap();
    let tokens: Vec<u32> = (0..16).map(|i| (i * 37 % 512) as u32).collect();
    let mut g = c.benchmark_group("tiny_prefill16");
    g.bench_function("tracing_off", |b| {
        b.iter(|| {
            Session::new(&model, 1, Kernel::best())
                .forward(&tokens, false, None)
                .unwrap()
        })
    });
    g.bench_function("no_trace_calls", |b| {
        b.iter(|| {
            Session::new(&model, 1, Kernel::best())
                .forward_without_trace_calls(&tokens, false)
                .unwrap()
        })
    });
    let out = dir.path().join("trace");
    g.bench_function("all_points_with_values", |b| {
        b.iter(|| {
            let mut t = Tracer::new(PointFilter::all(), &out, true).unwrap();
            let r = Session::new(&model, 1, Kernel::best())
                .forward(&tokens, false, Some(&mut t))
                .unwrap();
            t.finish().unwrap();
            r
        })
    });
    g.bench_function("all_points_records_only", |b| {
        b.iter(|| {
            let mut t = Tracer::new(PointFilter::all(), &out, false).unwrap();
            let r = Session::new(&model, 1, Kernel::best())
                .forward(&tokens, false, Some(&mut t))
                .unwrap();
            t.finish().unwrap();
            r
        })
    });
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
