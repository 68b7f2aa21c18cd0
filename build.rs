fn main() {
    // Only the Node binding links against Node-API; the pure engine (tests, benches) does not.
    #[cfg(feature = "node")]
    napi_build::setup();
}
