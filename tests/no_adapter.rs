//! With no matching adapter, the context is an error that says how to get one.
//! (Its own test binary: it sets an environment variable.)

#[test]
fn no_adapter_is_a_clear_error() {
    std::env::set_var("WGPU_ADAPTER_NAME", "no-such-adapter-qfuse-test");
    let e = match qfuse::GpuContext::new() {
        Ok(_) => panic!("found an adapter named no-such-adapter-qfuse-test"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("no GPU adapter"), "{e}");
    assert!(e.contains("no-such-adapter-qfuse-test"), "{e}");
    assert!(e.contains("mesa-vulkan-drivers"), "{e}");
}
