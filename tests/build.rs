//! Compiles the shopping cart's public protos into a gRPC client for the tests
//! (and the descriptor set the rogue function serves).

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let cart = root.join("../examples/shopping-cart/proto");
    let strata = root.join("../proto");
    println!("cargo:rerun-if-changed={}", cart.display());
    let mut compiler = protox::Compiler::new([&cart, &strata])?;
    compiler.include_imports(true);
    compiler.open_files(["shoppingcart.proto"])?;
    let fds = compiler.file_descriptor_set();
    // protox's own encoding keeps the custom options that prost_types would drop.
    fs::write(
        PathBuf::from(env::var("OUT_DIR")?).join("shoppingcart.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
