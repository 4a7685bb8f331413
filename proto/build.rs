//! Compiles every `.proto` in this folder with protox (no system `protoc`) and
//! generates prost messages and tonic clients and servers for them.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "cloudstate/entity.proto",
    "cloudstate/event_sourced.proto",
    "cloudstate/value_entity.proto",
    "cloudstate/crdt.proto",
    "cloudstate/action.proto",
    "cloudstate/entity_key.proto",
    "cloudstate/legacy_entity_key.proto",
    "cloudstate/eventing.proto",
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    "strata/control_plane.proto",
    "strata/data_plane.proto",
    "strata/crdt_state.proto",
    "strata/timers.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true);
    compiler.open_files(PROTOS)?;
    // protox's own encoding keeps custom options, which prost_types would drop.
    fs::write(out.join("strata_protos.bin"), compiler.encode_file_descriptor_set())?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("_includes.rs")
        .compile_fds(fds)?;
    Ok(())
}
