//! Regenerate `src/onnx/proto/onnx.rs` from `src/onnx/proto/onnx.proto`.
//!
//! Usage: `cargo run --manifest-path tools/onnx/gen_proto/Cargo.toml -- <repo root>`
//! (`tools/onnx/gen_proto.sh` does it). protox parses the .proto file (no protoc needed),
//! prost-build writes the Rust types. The output is committed so that building qfuse
//! needs neither.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let dir = root.join("src/onnx/proto");
    let fds = protox::compile([dir.join("onnx.proto")], [&dir]).unwrap_or_else(|e| {
        eprintln!("cannot compile onnx.proto: {e}");
        std::process::exit(1)
    });
    let mut cfg = prost_build::Config::new();
    cfg.out_dir(&dir);
    cfg.compile_fds(fds).unwrap_or_else(|e| {
        eprintln!("prost-build failed: {e}");
        std::process::exit(1)
    });
    // prost-build names the file after the package: onnx.rs
    println!("wrote {}", dir.join("onnx.rs").display());
}
