//! Compiles the example's proto and the shopping cart's events (which the
//! projection reads) with protox (no system `protoc`): the `FileDescriptorSet`,
//! imports included, for discovery, and prost messages that know their protobuf
//! names so the SDK can pack and unpack them.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let own = manifest.join("proto");
    let cart = manifest.join("../shopping-cart/proto");
    let strata = manifest.join("../../proto");
    println!("cargo:rerun-if-changed={}", own.display());
    println!("cargo:rerun-if-changed={}", cart.join("domain.proto").display());
    let mut compiler = protox::Compiler::new([&own, &cart, &strata])?;
    compiler.include_imports(true);
    compiler.open_files(["carttotals.proto", "domain.proto"])?;
    // Encoded by protox itself: prost_types would drop the custom options.
    fs::write(out.join("descriptors.bin"), compiler.encode_file_descriptor_set())?;
    let mut own_files = compiler.file_descriptor_set();
    own_files.file.retain(|file| {
        matches!(
            file.package(),
            "com.example.carttotals" | "com.example.shoppingcart.persistence"
        )
    });
    tonic_prost_build::Config::new()
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .compile_fds(own_files)?;
    Ok(())
}
