//! Compiles `proto/echo.proto` (the baselines' tiny echo service) with protox, a pure-Rust
//! protobuf compiler, exactly as `proto/build.rs` does, so the bench needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["echo.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".switchboard.bench.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
