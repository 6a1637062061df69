//! The runner context file, read as runners read it (`runner::input::read_context`):
//! reading never panics, and a context that reads survives a YAML round trip unchanged
//! (durations included). Go durations are also fuzzed on their own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runner::{Context, GoDuration};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("context.yaml");
    std::fs::write(&path, data).expect("writing the context");
    if let Ok(context) = runner::input::read_context(&path) {
        let yaml = serde_norway::to_string(&context).expect("a context serializes");
        std::fs::write(&path, &yaml).expect("writing the context");
        let again: Context = runner::input::read_context(&path)
            .unwrap_or_else(|e| panic!("context does not round-trip through {yaml:?}: {e}"));
        assert_eq!(again, context);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(duration) = text.parse::<GoDuration>() {
            let printed = duration.to_string();
            let again: GoDuration = printed.parse().unwrap_or_else(|e| {
                panic!("{text:?} printed as {printed:?}, which does not parse: {e:?}")
            });
            assert_eq!(again, duration, "{text:?} -> {printed:?}");
        }
    }
});
