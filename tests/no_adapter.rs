//! With no matching adapter, the context is an error that names the adapters
//! there are, each with its backend, or, when there is none at all, says how
//! to get one. (Its own test binary: it sets an environment variable.)

#[test]
fn no_adapter_is_a_clear_error() {
    std::env::set_var("WGPU_ADAPTER_NAME", "no-such-adapter-qfuse-test");
    let e = match qfuse::GpuContext::new() {
        Ok(_) => panic!("found an adapter named no-such-adapter-qfuse-test"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("no GPU adapter"), "{e}");
    assert!(e.contains("no-such-adapter-qfuse-test"), "{e}");
    if e.contains("wgpu finds none on any backend") {
        // No adapter at all: how to get one.
        assert!(e.contains("mesa-vulkan-drivers"), "{e}");
    } else {
        // Adapters exist: each named with its backend, and no install advice.
        assert!(e.contains("The adapters wgpu finds: "), "{e}");
        assert!(
            ["[Vulkan, ", "[Metal, ", "[Dx12, ", "[Gl, "]
                .iter()
                .any(|b| e.contains(b)),
            "{e}"
        );
        assert!(!e.contains("apt-get"), "{e}");
    }
}
