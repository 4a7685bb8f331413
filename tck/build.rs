//! Compiles the kit's model protos (with protox, no system `protoc`): messages
//! with type names for strata-sdk, gRPC clients for the proxy cases, and the
//! descriptor set the model function serves.

use std::{env, fs, path::PathBuf};

const MODELS: &[&str] = &[
    "cloudstate/tck/model/eventsourced.proto",
    "cloudstate/tck/model/valueentity.proto",
    "cloudstate/tck/model/action.proto",
    "cloudstate/tck/model/crdt.proto",
    "cloudstate/tck/model/eventlogeventing.proto",
    "strata/tck/model/timers.proto",
];

/// The packages generated here: the models, the published timer messages the
/// timers model embeds, and the well-known types they use (prost_types').
const KEPT: &[&str] = &[
    "cloudstate.tck.model",
    "strata.tck.model",
    "strata.timers",
    "google.protobuf",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let own = root.join("proto");
    let strata = root.join("../proto");
    println!("cargo:rerun-if-changed={}", own.display());
    let mut compiler = protox::Compiler::new([own, strata])?;
    compiler.include_imports(true);
    compiler.open_files(MODELS)?;
    // protox's own encoding keeps the custom options that prost_types would drop.
    fs::write(out.join("tck_model.bin"), compiler.encode_file_descriptor_set())?;
    let mut models = compiler.file_descriptor_set();
    models.file.retain(|f| KEPT.iter().any(|p| f.package().starts_with(p)));
    let mut config = tonic_prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .include_file("tck_model.rs")
        .compile_fds_with_config(models, config)?;
    Ok(())
}
