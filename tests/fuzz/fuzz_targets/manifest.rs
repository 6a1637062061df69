//! Manifests and indexes as a registry or layout may serve them: parsing never panics,
//! and picking a platform from any index that parses never panics either.
#![no_main]

use executor::source::{Manifest, Platform, parse_manifest, select_platform, sha256_digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let digest = sha256_digest(data);
    match parse_manifest(&digest, data) {
        Ok(Manifest::Index(index)) => {
            for wanted in [
                "linux/amd64",
                "linux/arm64/v8",
                "linux/arm",
                "windows/amd64",
            ] {
                let wanted: Platform = wanted.parse().expect("a valid platform");
                if let Ok(chosen) = select_platform(&index, &wanted, "fuzz") {
                    // The choice is one of the index's entries.
                    assert!(index.manifests().iter().any(|d| d == chosen));
                }
            }
        }
        Ok(Manifest::Image(manifest, _)) => {
            let _ = manifest.layers().len();
        }
        Err(e) => {
            // Errors are one line and name the manifest.
            let text = e.to_string();
            assert!(!text.contains('\n'), "multi-line error: {text}");
            assert!(
                text.contains(digest.digest()),
                "error does not name the manifest: {text}"
            );
        }
    }
});
