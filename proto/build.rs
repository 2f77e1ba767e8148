//! Generates the prost messages, tonic services and serde (proto3 JSON) impls from
//! `tapwire/v1/*.proto`. protoc comes from the `protoc-bin-vendored` crate, so the build
//! needs nothing installed.

use std::{env, path::PathBuf};

const PROTOS: [&str; 3] = [
    "tapwire/v1/pair.proto",
    "tapwire/v1/ingest.proto",
    "tapwire/v1/query.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the env.
    unsafe { env::set_var("PROTOC", protoc) };
    let well_known = protoc_bin_vendored::include_path()?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = out.join("tapwire_descriptor.bin");

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        // Well-known types from pbjson-types, so timestamps serialize as RFC 3339.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .bytes(".tapwire.v1")
        .compile_protos(
            &PROTOS.map(PathBuf::from),
            &[PathBuf::from("."), well_known],
        )?;

    let descriptor_set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)?
        .preserve_proto_field_names()
        .build(&[".tapwire.v1"])?;
    Ok(())
}
