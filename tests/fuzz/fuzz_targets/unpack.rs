//! Layer unpacking into a temporary root. Input: one selector byte (bits 0-1: 0 plain tar,
//! 1 gzip, 2 zstd; bit 2: use the userspace path walk instead of openat2), then the layer
//! blob. Unpacking never panics, errors are one line, and nothing outside the root changes:
//! the root's parent holds only the root and an untouched sentinel file.
#![no_main]

use executor::unpack::{Compression, UnpackOptions, unpack_stream};
use libfuzzer_sys::fuzz_target;

const SENTINEL: &[u8] = b"outside the root\n";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, layer)) = data.split_first() else {
        return;
    };
    let compression = match selector & 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Zstd,
        _ => return,
    };
    let opts = UnpackOptions {
        max_bytes: 64 << 20,
        max_entries: 10_000,
        path_walk: selector & 4 != 0,
    };
    let parent = tempfile::tempdir().expect("a temp dir");
    let root = parent.path().join("root");
    std::fs::create_dir(&root).expect("creating the root");
    std::fs::write(parent.path().join("sentinel"), SENTINEL).expect("writing the sentinel");
    if let Err(e) = unpack_stream(layer, compression, &root, &opts) {
        let text = e.to_string();
        assert!(!text.contains('\n'), "multi-line error: {text}");
    }
    let mut names: Vec<_> = std::fs::read_dir(parent.path())
        .expect("listing the parent")
        .map(|e| e.expect("a dir entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["root", "sentinel"],
        "something was created next to the root"
    );
    let sentinel = parent.path().join("sentinel");
    let meta = std::fs::symlink_metadata(&sentinel).expect("the sentinel");
    assert!(meta.is_file(), "the sentinel was replaced");
    assert_eq!(
        std::fs::read(&sentinel).expect("reading the sentinel"),
        SENTINEL
    );
    // Root (which fuzzes here) removes read-only directories too: the temp dir goes.
});
