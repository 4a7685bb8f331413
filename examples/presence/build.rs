//! Compiles the example's proto with protox (no system `protoc`): its
//! `FileDescriptorSet`, imports included, for discovery, and prost messages that
//! know their protobuf names so the SDK can pack them.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let own = manifest.join("proto");
    let strata = manifest.join("../../proto");
    println!("cargo:rerun-if-changed={}", own.display());
    let mut compiler = protox::Compiler::new([&own, &strata])?;
    compiler.include_imports(true);
    compiler.open_files(["presence.proto"])?;
    // Encoded by protox itself: prost_types would drop the custom options.
    fs::write(out.join("descriptors.bin"), compiler.encode_file_descriptor_set())?;
    let mut own_files = compiler.file_descriptor_set();
    own_files.file.retain(|file| file.package() == "com.example.presence");
    tonic_prost_build::Config::new()
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .compile_fds(own_files)?;
    Ok(())
}
