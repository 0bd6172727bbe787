//! One `GpuModel` shared by many threads: every call gets exactly its own
//! result (bit for bit what a sequential run gives); per-batch-size memory
//! stays bounded; batches past the storage-binding limit are split (exactly)
//! or refused with an error naming the tensor, the limit and the largest
//! batch that fits.

mod common;

use std::path::Path;

use common::{first_mismatch_bits, gpu, Rng};
use qfuse::builder::{FloatOp, ModelBuilder, ObserverKind};
use qfuse::{Error, GpuModel, Requant, Value};

/// The bundled digits model's held-out images (360 x [1, 8, 8]).
fn images() -> (Vec<f32>, usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/digits/test_images.npy");
    let (x, shape) = qfuse::npy::read_f32(path).unwrap();
    assert_eq!(&shape[1..], &[1, 8, 8]);
    assert!(x.iter().any(|&v| v != 0.0));
    (x, shape[0])
}

/// `n` images starting at image `start` (wrapping), as one batch.
fn batch(x: &[f32], count: usize, start: usize, n: usize) -> Vec<Value> {
    let data = (0..n)
        .flat_map(|i| {
            let k = (start + i) % count;
            x[k * 64..(k + 1) * 64].iter().copied()
        })
        .collect();
    vec![Value::F32 {
        data,
        shape: vec![n, 1, 8, 8],
    }]
}

fn f32s(v: &[Value]) -> Vec<f32> {
    v[0].to_f32()
}

#[test]
fn context_and_model_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() -> &'static str {
        std::any::type_name::<T>()
    }
    assert!(send_sync::<GpuModel>().ends_with("GpuModel"));
    assert!(send_sync::<qfuse::GpuContext>().ends_with("GpuContext"));
}

#[test]
fn eight_threads_share_one_model_and_get_their_own_results() {
    let seed = 0x7e4d_5eed;
    println!("seed {seed:#x}");
    let (x, count) = images();
    let ctx = gpu();
    let model = qfuse::bundled::digits_model().unwrap();
    let g = GpuModel::new(&ctx, &model).unwrap();
    const THREADS: usize = 8;
    const RUNS: usize = 20;
    // Each (thread, run): a batch size of 1..=4 and a start image, seeded.
    let mut rng = Rng(seed);
    let jobs: Vec<Vec<(usize, usize)>> = (0..THREADS)
        .map(|_| {
            (0..RUNS)
                .map(|_| (rng.range(1, 5), rng.range(0, count)))
                .collect()
        })
        .collect();
    // Sequential references, on the same model.
    let want: Vec<Vec<Vec<f32>>> = jobs
        .iter()
        .map(|runs| {
            runs.iter()
                .map(|&(n, s)| f32s(&g.run(&ctx, &batch(&x, count, s, n)).unwrap()))
                .collect()
        })
        .collect();
    let got: Vec<Vec<Vec<f32>>> = std::thread::scope(|sc| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|runs| {
                let (g, ctx, x) = (&g, &ctx, &x);
                sc.spawn(move || {
                    runs.iter()
                        .map(|&(n, s)| f32s(&g.run(ctx, &batch(x, count, s, n)).unwrap()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, (got, want)) in got.iter().zip(&want).enumerate() {
        for (r, (a, b)) in got.iter().zip(want).enumerate() {
            assert_eq!(a.len(), jobs[t][r].0 * 10);
            if let Some(m) = first_mismatch_bits(a, b) {
                panic!(
                    "thread {t} run {r} (batch {}, start {}): differs from the sequential run at {m}",
                    jobs[t][r].0, jobs[t][r].1
                );
            }
        }
    }
    println!(
        "{THREADS} threads x {RUNS} runs: every output bit-exact; {} bytes of per-batch buffers held",
        g.memory_bytes()
    );
}

#[test]
fn memory_for_many_batch_sizes_stays_bounded() {
    let (x, count) = images();
    let ctx = gpu();
    let model = qfuse::bundled::digits_model().unwrap();
    const LARGEST: usize = 48;
    // One instance of the largest batch alone.
    let one = GpuModel::new(&ctx, &model).unwrap();
    one.run(&ctx, &batch(&x, count, 0, LARGEST)).unwrap();
    let largest = one.memory_bytes();
    assert!(largest > 0);

    let g = GpuModel::new(&ctx, &model).unwrap();
    assert_eq!(g.memory_limit(), qfuse::gpu::DEFAULT_MEMORY_LIMIT);
    let limit = 2 * largest;
    g.set_memory_limit(limit);
    let first = f32s(&g.run(&ctx, &batch(&x, count, 5, 1)).unwrap());
    let mut unbounded = 0;
    let mut peak = 0;
    for n in 1..=LARGEST {
        g.run(&ctx, &batch(&x, count, n, n)).unwrap();
        unbounded += one_instance_bytes(&ctx, &model, &x, count, n);
        peak = peak.max(g.memory_bytes());
        assert!(
            g.memory_bytes() <= limit + largest,
            "batch {n}: {} bytes held, limit {limit} + one instance {largest}",
            g.memory_bytes()
        );
    }
    println!(
        "{LARGEST} batch sizes: at most {peak} bytes held (limit {limit}); without eviction {unbounded}"
    );
    assert!(peak < unbounded, "nothing was evicted");
    // Evicted instances are rebuilt and give the same results.
    let again = f32s(&g.run(&ctx, &batch(&x, count, 5, 1)).unwrap());
    if let Some(m) = first_mismatch_bits(&again, &first) {
        panic!("batch 1 after eviction differs at {m}");
    }
    // Lowering the limit frees idle instances at once.
    g.set_memory_limit(0);
    assert!(g.memory_bytes() <= largest);
}

fn one_instance_bytes(
    ctx: &qfuse::GpuContext,
    model: &qfuse::Model,
    x: &[f32],
    count: usize,
    n: usize,
) -> u64 {
    let g = GpuModel::new(ctx, model).unwrap();
    g.run(ctx, &batch(x, count, 0, n)).unwrap();
    g.memory_bytes()
}

/// The per-sample bytes of the model's largest tensor (what must fit one
/// storage binding): its largest planned buffer at batch 1, or the float32 input.
fn per_sample_bytes(ctx: &qfuse::GpuContext, g: &GpuModel, f32_input: u64) -> u64 {
    let plan = g.plan(ctx, 1).unwrap();
    plan.buffers.iter().copied().max().unwrap().max(f32_input)
}

#[test]
fn a_batch_past_the_binding_limit_is_split_bit_exactly() {
    let (x, count) = images();
    let ctx = gpu();
    let model = qfuse::bundled::digits_model().unwrap();
    let g = GpuModel::new(&ctx, &model).unwrap();
    let per = per_sample_bytes(&ctx, &g, 64 * 4);
    let input = batch(&x, count, 17, 10);
    let whole = g.run(&ctx, &input).unwrap();
    g.set_binding_limit_for_testing(Some(3 * per + per / 2));
    assert_eq!(g.max_batch(&ctx).unwrap(), (3, true));
    let split = g.run(&ctx, &input).unwrap();
    assert_eq!(split[0].shape(), whole[0].shape());
    if let Some(m) = first_mismatch_bits(&f32s(&split), &f32s(&whole)) {
        panic!("batch 10 in pieces of 3 differs from one run at {m}");
    }
    // run_timed splits the same way (GPU time summed over the pieces).
    let (_, t) = g.run_timed(&ctx, &input).unwrap();
    println!("batch 10 in pieces of 3: bit-exact; GPU time {t:?} ns");
    // Not even one sample fits: refused, naming the tensor and the limit.
    g.set_binding_limit_for_testing(Some(per - 1));
    let e = g.run(&ctx, &batch(&x, count, 0, 1)).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::TooLarge { limit, .. } if limit == per - 1),
        "{msg}"
    );
    assert!(
        msg.contains("tensor") && msg.contains("not even one sample"),
        "{msg}"
    );
}

#[test]
fn a_batch_that_cannot_be_split_exactly_is_refused_with_the_largest_that_fits() {
    // fbgemm hardswish on a 3x5x5 tensor (75 elements a sample, not a
    // multiple of 64): ATen's vector/scalar split falls differently in pieces.
    let mut b = ModelBuilder::new(Requant::Fbgemm, "x", &[3, 5, 5]);
    b.op("hs", FloatOp::Hardswish, &["x"]);
    let mut rng = Rng(99);
    let calib: Vec<f32> = (0..4 * 75).map(|_| 8.0 * rng.f32() - 4.0).collect();
    let model = b
        .calibrate(&[(calib.clone(), vec![4, 3, 5, 5])], ObserverKind::MinMax)
        .unwrap();
    let ctx = gpu();
    let g = GpuModel::new(&ctx, &model).unwrap();
    let input = vec![Value::F32 {
        data: calib,
        shape: vec![4, 3, 5, 5],
    }];
    let whole = g.run(&ctx, &input).unwrap();
    let per = per_sample_bytes(&ctx, &g, 75 * 4);
    g.set_binding_limit_for_testing(Some(2 * per));
    assert_eq!(g.max_batch(&ctx).unwrap(), (2, false));
    let e = g.run(&ctx, &input).unwrap_err();
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        matches!(e, Error::TooLarge { limit, .. } if limit == 2 * per),
        "{msg}"
    );
    for want in [
        "tensor",
        "largest batch that fits is 2",
        "\"hs\"",
        "vector/scalar split",
    ] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    // Within the limit it still runs, and the same as before.
    g.set_binding_limit_for_testing(None);
    let again = g.run(&ctx, &input).unwrap();
    assert_eq!(f32s(&again), f32s(&whole));
    // The CPU reference agrees (the test model is real, not degenerate).
    let cpu = model.run_cpu(&input).unwrap();
    if let Some(m) = first_mismatch_bits(&f32s(&whole), &f32s(&cpu)) {
        panic!("GPU differs from CPU at {m}");
    }
}
