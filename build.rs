//! Compiles `proto/` with protox (pure Rust, so no system `protoc` is needed) and generates
//! the tonic server and client with tonic-prost-build. The encoded file descriptor set is kept
//! in OUT_DIR for gRPC reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["chatsync/v1/chatsync.proto"], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("chatsync_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
