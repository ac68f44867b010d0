//! Compiles the .proto files with protox (pure Rust), so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["trustpool/v1/attestation.proto", "trustpool/v1/admin.proto"],
        ["proto"],
    )?;
    // Every generated client and server uses the small-buffer codec
    // (src/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(fds)?;
    Ok(())
}
