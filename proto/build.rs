//! Compiles `proto/switchboard/v1/*.proto` with protox, a pure-Rust protobuf compiler, so that
//! `cargo build` needs nothing but cargo on a fresh machine (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "switchboard/v1/node.proto",
        "switchboard/v1/chat.proto",
        "switchboard/v1/log.proto",
        "switchboard/v1/reporting.proto",
        "switchboard/v1/analytics.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .bytes(".switchboard.v1")
        .codec_path("crate::codec::ContiguousCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
