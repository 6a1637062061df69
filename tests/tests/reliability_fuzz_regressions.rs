//! Inputs that crashed a fuzz target (`tests/fuzz`), replayed through the same checks
//! the target makes, so that the bugs they found stay fixed.

use executor::reference::ImageSource;
use executor::source::{parse_manifest, sha256_digest};

/// The `reference` target's check: what parses prints to text that parses back to the
/// same reference.
fn reference_round_trips(text: &str) {
    if let Ok(source) = ImageSource::parse(text) {
        let printed = source.to_string();
        let again = ImageSource::parse(&printed).unwrap_or_else(|e| {
            panic!("{text:?} printed as {printed:?}, which does not parse: {e}")
        });
        assert_eq!(again.to_string(), printed);
    }
}

#[test]
fn uppercase_first_component_is_refused_not_filed_under_docker_io() {
    // Found by `reference`: accepted as docker.io/G0bi7l/b/c:tui-bx, which does not parse.
    reference_round_trips("G0bi7l/b/c:tui-bx");
    let err = ImageSource::parse("G0bi7l/b/c:tui-bx").unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("G0bi7l/b/c:tui-bx"), "{text}");
    assert!(text.contains("lowercase"), "{text}");
    // Uppercase stays fine where the grammar allows it: registry hosts and tags.
    reference_round_trips("Registry.Example:5000/app:Tag");
    ImageSource::parse("Registry.Example:5000/app:Tag").unwrap();
}

#[test]
fn manifest_errors_quote_registry_text() {
    // Found by `manifest`: a media type with an embedded newline made a two-line error.
    let data = br#"{"schemaVersion":2,"mediaType":"applicati[cAtion/vnd.vnd.do\\\\\\\njson","manifests":[]}"#;
    let digest = sha256_digest(data);
    let err = parse_manifest(&digest, data).unwrap_err().to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains(digest.digest()), "{err}");
    assert!(err.contains("unsupported media type"), "{err}");
}

#[test]
fn layout_paths_that_would_read_back_as_a_tag_are_refused() {
    // Found by `reference`: the bare path "\0:\0\0\0layo../." normalized to ".../\0:\0\0\0layo..",
    // which reads back as path + tag.
    reference_round_trips("oci-layout:\0:\0\0\0layo../.");
    reference_round_trips("oci-layout:/srv/a:b/.");
    let err = ImageSource::parse("oci-layout:/srv/a:b/.")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ambiguous"), "{err}");
    assert!(err.contains(":TAG or @DIGEST"), "{err}");
    // With an explicit tag the same directory is fine, and round-trips.
    reference_round_trips("oci-layout:/srv/a:b:v1");
    assert_eq!(
        ImageSource::parse("oci-layout:/srv/a:b:v1")
            .unwrap()
            .to_string(),
        "oci-layout:/srv/a:b:v1"
    );
    // Found next: ".\n\n\n/." normalized to a path ending in newlines, which the
    // trimming of references dropped on the way back.
    reference_round_trips("oci-layout:.\n\n\n/.");
    reference_round_trips("oci-layout:.  /.");
    assert!(ImageSource::parse("oci-layout:.\n\n\n/.").is_err());
    // A plain path still needs nothing extra.
    reference_round_trips("oci-layout:/srv/layout");
    ImageSource::parse("oci-layout:/srv/layout").unwrap();
}

#[test]
fn manifest_parser_messages_quoting_the_document_stay_one_line() {
    // Found by `manifest`: serde's message quoted a digest holding a newline.
    let data = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:00\n00","size":2}]}"#;
    let digest = sha256_digest(data);
    let err = parse_manifest(&digest, data).unwrap_err().to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains(digest.digest()), "{err}");
    assert!(
        err.contains(r"00\n00"),
        "the bad value is shown escaped: {err}"
    );
}

#[test]
fn huge_numbers_in_runner_args_are_read_exactly() {
    // Found by `runner_args`: 76 digits of 5 followed by 0. What the SDK reads must be the
    // nearest f64 and be written out as exactly that (runners hand args on as JSON).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("args.yaml");
    let text = format!("{}0", "5".repeat(75));
    std::fs::write(&path, &text).unwrap();
    let args = runner::input::read_args(&path).unwrap();
    let expected: f64 = text.parse().unwrap();
    assert_eq!(args.as_f64(), Some(expected));
    let json = serde_json::to_string(&args).unwrap();
    assert_eq!(json.parse::<f64>().unwrap(), expected, "{json}");
}
