//! Compiles `proto/` with protox (pure Rust, so no system `protoc` is needed) and generates
//! the tonic server and client with tonic-prost-build. The encoded file descriptor set is kept
//! in OUT_DIR for gRPC reflection, and pbjson-build generates from it the serde impls of the
//! protobuf JSON mapping (`chatsync.v1.serde.rs`, for the CLI's `--json`). The well-known types
//! (`google.protobuf.Timestamp`) come from `pbjson_types`, which has them with serde impls.
//!
//! Also lists every file under `samples/` into `OUT_DIR/samples.rs` (`include_bytes!` of
//! each), so the binary carries the demo exports (see `src/samples.rs`).
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["chatsync/v1/chatsync.proto"], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = prost::Message::encode_to_vec(&fds);
    std::fs::write(out_dir.join("chatsync_descriptor.bin"), &descriptors)?;
    // The generated code encodes with a smaller first buffer than tonic's (see
    // `chatsync::grpc::codec`): an open subscription holds its buffer for its whole life.
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::SmallBufferCodec")
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    // Every field is written, default values too (as `buf curl --emit-defaults` prints).
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .emit_fields()
        .build(&[".chatsync.v1"])?;
    embed_samples(&out_dir)?;
    Ok(())
}

/// Writes `samples.rs`: `pub static FILES: &[(&str, &[u8])]`, each file's path relative to
/// `samples/` (with `/` separators) and its bytes, sorted by path.
fn embed_samples(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // A directory: cargo re-runs this script when anything under it changes.
    println!("cargo:rerun-if-changed=samples");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("samples");
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path
                    .strip_prefix(&root)?
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push((relative, path));
            }
        }
    }
    files.sort();
    let mut code = String::from("pub static FILES: &[(&str, &[u8])] = &[\n");
    for (relative, path) in &files {
        let absolute = path.to_str().ok_or("a sample's path is not UTF-8")?;
        code.push_str(&format!(
            "    ({relative:?}, include_bytes!({absolute:?})),\n"
        ));
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("samples.rs"), code)?;
    Ok(())
}
