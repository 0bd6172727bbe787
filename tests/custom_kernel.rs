//! The hook for kernels that are not the library's own
//! (`GpuContext::custom_pipeline` / `dispatch_custom`, what the benchmark's
//! baselines use): a small WGSL kernel is compiled through the context's
//! pipeline cache, dispatched, and what it wrote is read back and compared.

mod common;

use qfuse::gpu::CustomKernel;
use qfuse::{Error, GpuContext};
use wgpu::util::DeviceExt;

/// Writes `base + i * MUL` to `out[i]` for `i < n`; the index spans a 2-D
/// grid as `dispatch_size` lays it out.
const FILL: CustomKernel<'static> = CustomKernel {
    name: "test_fill.wgsl",
    source: r#"
struct Params { base: u32, n: u32, _pad0: u32, _pad1: u32 }
override WG: u32 = 64u;
override MUL: u32 = 1u;
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.x + gid.y * nw.x * WG;
    if (i >= p.n) { return; }
    out[i] = p.base + i * MUL;
}
"#,
};

const SENTINEL: u32 = 0xdead_beef;

/// Runs FILL with `mul` over `n` of `len` words (the rest keep the sentinel).
fn fill(ctx: &GpuContext, kernel: CustomKernel<'_>, mul: u32, n: u32, len: u32) -> Vec<u32> {
    let buf = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("custom kernel test"),
            contents: bytemuck::cast_slice(&vec![SENTINEL; len as usize]),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
    let base = 7u32;
    let d = ctx
        .dispatch_custom(
            kernel,
            &[("WG", 64.0), ("MUL", mul as f64)],
            bytemuck::cast_slice(&[base, n, 0, 0]),
            &[(1, &buf)],
            n,
            64,
        )
        .expect("custom dispatch");
    assert_eq!(d.label, kernel.name);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        d.record(&mut pass);
    }
    ctx.submit_and_wait(enc).unwrap();
    let bytes = ctx.read_buffer(&buf, 4 * len as u64).unwrap();
    bytemuck::cast_slice(&bytes).to_vec()
}

fn check(got: &[u32], mul: u32, n: usize) {
    for (i, &v) in got.iter().enumerate() {
        let want = if i < n { 7 + mul * i as u32 } else { SENTINEL };
        assert_eq!(v, want, "word {i} (MUL={mul}, n={n})");
    }
}

#[test]
fn custom_kernel_runs_and_is_cached() {
    let ctx = common::gpu();
    let before = ctx.cached_pipelines();
    // 1000 is not a multiple of the workgroup size: the tail stays untouched.
    let got = fill(&ctx, FILL, 3, 1000, 1024);
    check(&got, 3, 1000);
    assert_eq!(ctx.cached_pipelines(), before + 1);
    // The same kernel and constants: the cached pipeline, same result.
    check(&fill(&ctx, FILL, 3, 1000, 1024), 3, 1000);
    assert_eq!(ctx.cached_pipelines(), before + 1);
    // Other override values: a second pipeline of the same module.
    check(&fill(&ctx, FILL, 5, 1000, 1024), 5, 1000);
    assert_eq!(ctx.cached_pipelines(), before + 2);
    // custom_pipeline alone hands back the cached pipeline.
    ctx.custom_pipeline(FILL, &[("WG", 64.0), ("MUL", 5.0)])
        .unwrap();
    assert_eq!(ctx.cached_pipelines(), before + 2);
}

#[test]
fn custom_kernel_errors_name_the_kernel() {
    let ctx = common::gpu();
    check(&fill(&ctx, FILL, 1, 64, 64), 1, 64);
    // One name, one source.
    let other = CustomKernel {
        name: FILL.name,
        source: "@compute @workgroup_size(1) fn main() {}",
    };
    match ctx.custom_pipeline(other, &[]) {
        Err(Error::Config { what, detail }) => {
            assert!(what.contains("test_fill.wgsl"), "{what}");
            assert!(detail.contains("different WGSL source"), "{detail}");
        }
        r => panic!("expected Error::Config, got {:?}", r.map(|_| ())),
    }
    // WGSL that does not compile: a GPU error naming the kernel, and the
    // name stays free for a source that does.
    let bad = CustomKernel {
        name: "test_bad.wgsl",
        source: "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
    };
    match ctx.custom_pipeline(bad, &[]) {
        Err(e @ Error::Gpu(_)) => assert!(e.to_string().contains("test_bad.wgsl"), "{e}"),
        r => panic!("expected Error::Gpu, got {:?}", r.map(|_| ())),
    }
    let fixed = CustomKernel {
        name: "test_bad.wgsl",
        source: FILL.source,
    };
    check(&fill(&ctx, fixed, 2, 100, 128), 2, 100);
}
