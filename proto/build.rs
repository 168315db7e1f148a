//! Generates the weft.v1 client and server code and the file descriptor set that server
//! reflection serves. protoc comes from protoc-bin-vendored, never from the system.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("weft_v1_descriptor.bin"))
        .compile_with_config(config, &["proto/weft/v1/ledger.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/weft/v1/ledger.proto");
    Ok(())
}
