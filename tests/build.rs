//! Compiles the protos the tests use: the shopping cart's public API into a gRPC
//! client (and the descriptor set the rogue function serves), and the streamer's
//! and the value cart's messages (with type names, for strata-sdk), the streamer's
//! with a gRPC client.

use std::{env, fs, path::PathBuf};

fn compile(includes: &[PathBuf], file: &str) -> Result<protox::Compiler, Box<dyn std::error::Error>> {
    let mut compiler = protox::Compiler::new(includes)?;
    compiler.include_imports(true);
    compiler.open_files([file])?;
    Ok(compiler)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let cart = root.join("../examples/shopping-cart/proto");
    let own = root.join("proto");
    let strata = root.join("../proto");
    println!("cargo:rerun-if-changed={}", cart.display());
    println!("cargo:rerun-if-changed={}", own.display());

    // protox's own encoding keeps the custom options that prost_types would drop.
    let shopping_cart = compile(&[cart, strata.clone()], "shoppingcart.proto")?;
    fs::write(out.join("shoppingcart.bin"), shopping_cart.encode_file_descriptor_set())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(shopping_cart.file_descriptor_set())?;

    let streamer = compile(&[own.clone(), strata.clone()], "streamer.proto")?;
    fs::write(out.join("streamer.bin"), streamer.encode_file_descriptor_set())?;
    let mut messages = streamer.file_descriptor_set();
    messages.file.retain(|f| f.package() == "strata.test.streamer");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds_with_config(messages, {
            let mut config = tonic_prost_build::Config::new();
            config
                .enable_type_names()
                .type_name_domain(["."], "type.googleapis.com");
            config
        })?;

    let subscriber = compile(&[own.clone(), strata.clone()], "subscriber.proto")?;
    fs::write(out.join("subscriber.bin"), subscriber.encode_file_descriptor_set())?;

    let value_cart = compile(&[own, strata], "value_cart.proto")?;
    fs::write(out.join("value_cart.bin"), value_cart.encode_file_descriptor_set())?;
    let mut messages = value_cart.file_descriptor_set();
    messages.file.retain(|f| f.package() == "strata.test.valuecart");
    tonic_prost_build::Config::new()
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .compile_fds(messages)?;
    Ok(())
}
