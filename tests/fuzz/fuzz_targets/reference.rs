//! Image references: parsing never panics, and a parsed reference prints to text that
//! parses back to the same reference (normalization is idempotent).
#![no_main]

use executor::reference::ImageSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(source) = ImageSource::parse(text) {
        let printed = source.to_string();
        let again = ImageSource::parse(&printed).unwrap_or_else(|e| {
            panic!("{text:?} printed as {printed:?}, which does not parse: {e}")
        });
        assert_eq!(
            again.to_string(),
            printed,
            "normalizing {text:?} is not idempotent"
        );
    }
});
