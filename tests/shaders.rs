//! Every WGSL file under `shaders/` parses and validates with naga (no GPU
//! needed), and every uniform/storage struct shared with the host has the same
//! size as its `#[repr(C)]` Rust twin.

use std::path::Path;

fn parse(path: &Path) -> naga::Module {
    let src = std::fs::read_to_string(path).unwrap();
    let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&src)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&src)));
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

#[test]
fn every_shader_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "wgsl") {
            parse(&p);
            println!("valid: {}", p.display());
            n += 1;
        }
    }
    assert!(n >= 1, "no shaders found in {}", dir.display());
    // Every file is also registered as a kernel the context can compile.
    assert_eq!(n, qfuse::gpu::Kernel::ALL.len(), "shaders/ and Kernel::ALL disagree");
    for k in qfuse::gpu::Kernel::ALL {
        assert!(dir.join(k.file()).exists(), "{} missing", k.file());
    }
}

#[test]
fn host_structs_match_wgsl_layout() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let conv = parse(&dir.join("conv2d.wgsl"));
    assert_eq!(struct_size(&conv, "Params") as usize, std::mem::size_of::<qfuse::gpu::ConvParams>());
    assert_eq!(struct_size(&conv, "Chan") as usize, std::mem::size_of::<qfuse::quant::ChannelEpilogue>());
}

#[test]
fn bench_structs_match_wgsl_layout() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let ceil = parse(&dir.join("bench_ceiling.wgsl"));
    assert_eq!(struct_size(&ceil, "CeilParams") as usize, std::mem::size_of::<qfuse::bench::CeilParams>());
    let f = parse(&dir.join("conv2d_f32.wgsl"));
    assert_eq!(struct_size(&f, "F32Params") as usize, std::mem::size_of::<qfuse::bench::F32Params>());
}
