//! Compiles `checkout.proto` (which imports the cart's public API) with protox:
//! the `FileDescriptorSet` for discovery, and prost messages for the checkout's
//! own package (the cart's come from the shopping-cart crate).

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let own = manifest.join("proto");
    let cart = manifest.join("../shopping-cart/proto");
    let strata = manifest.join("../../proto");
    println!("cargo:rerun-if-changed={}", own.display());
    let mut compiler = protox::Compiler::new([&own, &cart, &strata])?;
    compiler.include_imports(true);
    compiler.open_files(["checkout.proto"])?;
    fs::write(out.join("descriptors.bin"), compiler.encode_file_descriptor_set())?;
    let mut own_files = compiler.file_descriptor_set();
    own_files.file.retain(|file| file.package() == "com.example.checkout");
    tonic_prost_build::Config::new()
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .extern_path(".com.example.shoppingcart", "::shopping_cart::api")
        .compile_fds(own_files)?;
    Ok(())
}
