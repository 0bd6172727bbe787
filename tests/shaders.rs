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

/// Bytes of workgroup memory a module declares.
fn workgroup_bytes(m: &naga::Module) -> u32 {
    m.global_variables
        .iter()
        .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
        .map(|(_, v)| m.types[v.ty].inner.size(m.to_ctx()))
        .sum()
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
            } else if name == Kernel::COOP_BODY {
                // the body of the two coop kernels, validated with each below
                continue;
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
    // Every kernel's file plus the two preludes, and each kernel's file
    // exists (coop.wgsl, the coop kernels' body, is not counted; Coop and
    // Coop8 share coop_hw.wgsl).
    let files: std::collections::HashSet<&str> = Kernel::ALL.iter().map(|k| k.file()).collect();
    assert_eq!(files.len(), Kernel::ALL.len() - 1);
    assert_eq!(n, files.len() + 2, "shaders/ and Kernel::ALL disagree");
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
    let bytes = workgroup_bytes(&m);
    assert_eq!(bytes, qfuse::gpu::TileConfig::WORKGROUP_BYTES);
    for c in qfuse::gpu::TileConfig::PRESETS {
        c.check(&wgpu::Limits::default()).unwrap();
    }
}

/// The tensor-core kernels (16x16x16 and 8x8x8 fragments) and their emulated
/// twin validate, naga writes their SPIR-V (what wgpu's Vulkan backend hands
/// the driver; `QFUSE_WRITE_SPIRV=DIR` keeps it: `tools/coop_lavapipe.sh`
/// runs it through a spirv-val new enough for cooperative matrices), and
/// their workgroup memory fits the 48 KiB Vulkan drivers of NVIDIA offer.
/// The constants the host relies on are those of the WGSL.
#[test]
fn coop_kernel_validates_and_writes_spirv() {
    for k in [Kernel::Coop, Kernel::Coop8, Kernel::CoopEmulated] {
        let src = k.source();
        let m = parse_str(k.file(), &src);
        assert!(override_names(&m).iter().any(|n| n == "SPLIT"));
        let bytes = workgroup_bytes(&m);
        let want = if k != Kernel::CoopEmulated {
            qfuse::gpu::COOP_WORKGROUP_BYTES
        } else {
            qfuse::gpu::COOP_WORKGROUP_BYTES + 2 * 2048 * 2
        };
        assert_eq!(bytes, want, "{}: workgroup bytes", k.file());
        assert!(
            bytes <= 48 * 1024,
            "{}: {bytes} bytes of workgroup memory",
            k.file()
        );
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&m)
        .unwrap();
        // As wgpu does: the overrides resolved (split-K pass 1 here), then SPIR-V.
        let constants = naga::back::PipelineConstants::from([("SPLIT".to_string(), 1.0)]);
        let (m, info) = naga::back::pipeline_constants::process_overrides(
            &m,
            &info,
            Some((naga::ShaderStage::Compute, "main")),
            &constants,
        )
        .unwrap_or_else(|e| panic!("{}: overrides: {e}", k.file()));
        let opts = naga::back::spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        let pipe = naga::back::spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: "main".into(),
        };
        let words = naga::back::spv::write_vec(&m, &info, &opts, Some(&pipe))
            .unwrap_or_else(|e| panic!("{}: SPIR-V: {e}", k.file()));
        assert!(words.len() > 100 && words[0] == 0x0723_0203);
        // QFUSE_WRITE_SPIRV=DIR keeps the modules (for spirv-val).
        if let Ok(dir) = std::env::var("QFUSE_WRITE_SPIRV") {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            std::fs::write(Path::new(&dir).join(format!("{k:?}.spv")), bytes).unwrap();
        }
        if k != Kernel::CoopEmulated {
            // OpTypeCooperativeMatrixKHR (4456) and OpCooperativeMatrixMulAddKHR (4459).
            let ops: std::collections::HashSet<u32> = spirv_opcodes(&words).collect();
            assert!(
                ops.contains(&4456) && ops.contains(&4459),
                "no cooperative-matrix SPIR-V"
            );
        }
    }
    for (name, v) in [("CHUNK_STAGES", 16u32), ("KC", 32)] {
        assert!(
            Kernel::file_source(Kernel::COOP_BODY)
                .unwrap()
                .contains(&format!("const {name}: u32 = {v}u;")),
            "coop.wgsl: {name} is not {v}"
        );
    }
    assert_eq!(16 * 32, qfuse::gpu::COOP_CHUNK);
}

/// The opcodes of a SPIR-V module's instructions.
fn spirv_opcodes(words: &[u32]) -> impl Iterator<Item = u32> + '_ {
    let mut i = 5;
    std::iter::from_fn(move || {
        let w = *words.get(i)?;
        i += (w >> 16).max(1) as usize;
        Some(w & 0xffff)
    })
}
