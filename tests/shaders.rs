//! Every WGSL file under `shaders/` parses and validates with naga (no GPU
//! needed): the prelude (`common.wgsl`) on its own, and every kernel file as
//! the module the context compiles (prelude + kernel, `Kernel::source()`).
//! (The benchmark's own kernels are checked in `qfuse-bench/tests/shaders.rs`.)
//! Every uniform/storage struct shared with the host has the same size as its
//! `#[repr(C)]` Rust twin.

use std::path::Path;

use qfuse::gpu::Kernel;

fn parse_str(name: &str, src: &str) -> naga::Module {
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

fn struct_size(module: &naga::Module, name: &str) -> u32 {
    for (_, ty) in module.types.iter() {
        if ty.name.as_deref() == Some(name) {
            if let naga::TypeInner::Struct { span, .. } = ty.inner {
                return span;
            }
        }
    }
    panic!("no struct {name}");
}

fn override_names(module: &naga::Module) -> Vec<String> {
    module
        .overrides
        .iter()
        .filter_map(|(_, o)| o.name.clone())
        .collect()
}

#[test]
fn every_shader_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "wgsl") {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let on_disk = std::fs::read_to_string(&p).unwrap();
            // The crate compiles in the files' text; it must be the same.
            assert_eq!(
                Kernel::file_source(&name),
                Some(on_disk.as_str()),
                "{name}: not a kernel or the prelude, or stale"
            );
            if name == Kernel::FLOAT_PRELUDE {
                parse_str(&name, &on_disk);
            } else if name == Kernel::PRELUDE {
                // the conv prelude calls the float prelude's ffma / fdiv
                let float = Kernel::file_source(Kernel::FLOAT_PRELUDE).unwrap();
                parse_str(&name, &format!("{float}\n{on_disk}"));
            } else {
                let k = Kernel::ALL.iter().find(|k| k.file() == name).unwrap();
                let m = parse_str(&name, &k.source());
                assert!(
                    m.entry_points.iter().any(|e| e.name == "main"),
                    "{name}: no entry point main"
                );
            }
            println!("valid: {}", p.display());
            n += 1;
        }
    }
    // Every kernel plus the two preludes, and each kernel's file exists.
    assert_eq!(
        n,
        Kernel::ALL.len() + 2,
        "shaders/ and Kernel::ALL disagree"
    );
    for k in Kernel::ALL {
        assert!(dir.join(k.file()).exists(), "{} missing", k.file());
    }
}

#[test]
fn host_structs_match_wgsl_layout() {
    use qfuse::gpu::__internal::*;
    for k in Kernel::ALL {
        let m = parse_str(k.file(), &k.source());
        let params = match k {
            Kernel::Quantize => std::mem::size_of::<QuantizeParams>(),
            Kernel::Lut => std::mem::size_of::<LutParams>(),
            Kernel::Add => std::mem::size_of::<AddParams>(),
            Kernel::Pool => std::mem::size_of::<PoolParams>(),
            Kernel::Binary => std::mem::size_of::<BinaryParams>(),
            Kernel::Gather => std::mem::size_of::<GatherParams>(),
            Kernel::Ort => std::mem::size_of::<OrtParams>(),
            Kernel::Resize => std::mem::size_of::<qfuse::ops::resize::ResizeParams>(),
            Kernel::ChannelLut => std::mem::size_of::<ChannelLutParams>(),
            Kernel::QSoftmax => std::mem::size_of::<QSoftmaxParams>(),
            Kernel::Inductor => std::mem::size_of::<InductorParams>(),
            Kernel::PoolF32 => std::mem::size_of::<F32PoolParams>(),
            _ => std::mem::size_of::<ConvParams>(),
        };
        assert_eq!(struct_size(&m, "Params") as usize, params, "{k:?}");
        if k.uses_prelude() {
            assert_eq!(
                struct_size(&m, "Chan") as usize,
                std::mem::size_of::<qfuse::quant::ChannelEpilogue>(),
                "{k:?}"
            );
        }
    }
}

#[test]
fn tiled_kernel_constants_match_the_host() {
    // The overrides the host sets (tiled and split-K) exist, and the host's workgroup-memory
    // figure is what the shader declares.
    let m = parse_str("tiled.wgsl", &Kernel::Tiled.source());
    let names = override_names(&m);
    for c in ["WG", "TM", "TN", "KT", "SPLITS"] {
        assert!(
            names.iter().any(|n| n == c),
            "tiled.wgsl has no override {c}"
        );
    }
    // Split-K pass 2 takes the same uniform block and its own overrides.
    let r = parse_str("splitk.wgsl", &Kernel::SplitK.source());
    let names = override_names(&r);
    for c in ["WG", "SPLITS"] {
        assert!(
            names.iter().any(|n| n == c),
            "splitk.wgsl has no override {c}"
        );
    }
    let bytes: u32 = m
        .global_variables
        .iter()
        .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
        .map(|(_, v)| m.types[v.ty].inner.size(m.to_ctx()))
        .sum();
    assert_eq!(bytes, qfuse::gpu::TileConfig::WORKGROUP_BYTES);
    for c in qfuse::gpu::TileConfig::PRESETS {
        c.check(&wgpu::Limits::default()).unwrap();
    }
}
