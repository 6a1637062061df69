//! The runner args file, read as runners read it (`runner::input::read_args`: YAML of any
//! shape, handed over as a JSON value). Reading never panics, and what reads converts to
//! JSON and back without loss.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("args.yaml");
    std::fs::write(&path, data).expect("writing the args");
    if let Ok(args) = runner::input::read_args(&path) {
        let json = serde_json::to_vec(&args).expect("a JSON value serializes");
        let again: serde_json::Value =
            serde_json::from_slice(&json).expect("serialized JSON parses");
        assert_eq!(again, args);
    }
});
