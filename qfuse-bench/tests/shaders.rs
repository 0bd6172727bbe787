//! The benchmark's WGSL kernels (`qfuse-bench/shaders/`) parse and validate
//! with naga (no GPU needed), the harness compiles in the files' current
//! text, their uniform blocks have the size of the `#[repr(C)]` Rust twins,
//! and the overrides the harness sets exist.

use std::path::Path;

use qfuse::gpu::CustomKernel;
use qfuse_bench::ceilings::CEILING_KERNEL;
use qfuse_bench::layers::{F32_KERNEL, F32_TILED_KERNEL};

const KERNELS: [CustomKernel<'static>; 3] = [CEILING_KERNEL, F32_KERNEL, F32_TILED_KERNEL];

fn parse(name: &str, src: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    module
}

fn struct_size(module: &naga::Module, name: &str) -> usize {
    for (_, ty) in module.types.iter() {
        if ty.name.as_deref() == Some(name) {
            if let naga::TypeInner::Struct { span, .. } = ty.inner {
                return span as usize;
            }
        }
    }
    panic!("no struct {name}");
}

fn overrides(module: &naga::Module) -> Vec<String> {
    module
        .overrides
        .iter()
        .filter_map(|(_, o)| o.name.clone())
        .collect()
}

#[test]
fn every_bench_shader_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "wgsl") {
            let name = p.file_name().unwrap().to_str().unwrap();
            let on_disk = std::fs::read_to_string(&p).unwrap();
            let k = KERNELS
                .iter()
                .find(|k| k.name == name)
                .unwrap_or_else(|| panic!("{name}: not a kernel of the harness"));
            // The harness compiles in the file's text; it must be the same.
            assert_eq!(k.source, on_disk, "{name}: stale");
            let m = parse(name, &on_disk);
            assert!(
                m.entry_points.iter().any(|e| e.name == "main"),
                "{name}: no entry point main"
            );
            println!("valid: {}", p.display());
            n += 1;
        }
    }
    assert_eq!(
        n,
        KERNELS.len(),
        "shaders/ and the harness's kernels disagree"
    );
}

#[test]
fn bench_structs_and_overrides_match_the_host() {
    let ceil = parse(CEILING_KERNEL.name, CEILING_KERNEL.source);
    assert_eq!(
        struct_size(&ceil, "CeilParams"),
        std::mem::size_of::<qfuse_bench::CeilParams>()
    );
    let f = parse(F32_KERNEL.name, F32_KERNEL.source);
    assert_eq!(
        struct_size(&f, "F32Params"),
        std::mem::size_of::<qfuse_bench::F32Params>()
    );
    let ft = parse(F32_TILED_KERNEL.name, F32_TILED_KERNEL.source);
    assert_eq!(
        struct_size(&ft, "F32Params"),
        std::mem::size_of::<qfuse_bench::F32Params>()
    );
    for (m, names) in [
        (&ceil, &["WG", "MODE"][..]),
        (&f, &["WG", "OP", "RELU"][..]),
        (&ft, &["WG", "TM", "TN", "KT", "RELU"][..]),
    ] {
        let have = overrides(m);
        for c in names {
            assert!(have.iter().any(|h| h == c), "no override {c} in {have:?}");
        }
    }
}
