//! Compiles the cart's protos with protox (no system `protoc`): writes their
//! `FileDescriptorSet`, imports included, for discovery, and prost messages that know
//! their protobuf names so the SDK can pack them into `Any`.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &["shoppingcart.proto", "domain.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let own = manifest.join("proto");
    // strata-proto's folder holds cloudstate/entity_key.proto and google/api/*.
    let strata = manifest.join("../../proto");
    println!("cargo:rerun-if-changed={}", own.display());
    println!("cargo:rerun-if-changed={}", strata.display());

    let mut compiler = protox::Compiler::new([&own, &strata])?;
    compiler.include_imports(true);
    compiler.open_files(PROTOS)?;
    // Encoded by protox itself: prost_types would drop the custom options
    // (entity_key, google.api.http) that the proxy reads.
    fs::write(out.join("descriptors.bin"), compiler.encode_file_descriptor_set())?;
    let descriptors = compiler.file_descriptor_set();

    // Generate only the cart's own files; the imports are described, not used as types.
    let mut own_files = descriptors;
    own_files
        .file
        .retain(|file| file.package().starts_with("com.example.shoppingcart"));
    tonic_prost_build::Config::new()
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .include_file("_includes.rs")
        .compile_fds(own_files)?;
    Ok(())
}
