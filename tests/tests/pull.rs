//! `executor pull` against a real `docker-registry` and real OCI layouts.

mod common;

use common::{empty_store, error_chain, pull_error, pull_options, source, tmp_is_empty};
use executor::pull::{PullOptions, pull};
use executor::store::{ImageRecord, Store};
use integration_tests::{
    BuiltImage, Compression, Entry, Fault, FaultProxy, ImageSpec, LayerSpec, ManifestFormat,
    Registry, RegistryConfig, TokenAuth, busybox_layer, push_layout, run_executor, write_image,
    write_index,
};
use std::path::Path;
use std::time::Duration;

/// Pull options for a test registry (or proxy) at `addr`.
fn options(addr: &str) -> PullOptions {
    pull_options(addr)
}

/// A busybox image with one extra layer holding a marker file.
fn busybox_image(layout: &Path, tag: &str, compression: Compression) -> BuiltImage {
    let spec = ImageSpec::host(vec![
        busybox_layer(compression).unwrap(),
        LayerSpec {
            entries: vec![Entry::file("etc/marker", format!("image {tag}\n"))],
            compression,
        },
    ]);
    write_image(layout, tag, &spec).unwrap()
}

/// Pushes busybox plus a marker layer (gzip, OCI manifest, anonymous) as `image`
/// (`repo:tag`); returns the layout it was written to and what was built.
fn push_busybox(registry: &Registry, image: &str) -> (tempfile::TempDir, BuiltImage) {
    push_busybox_as(
        registry,
        image,
        Compression::Gzip,
        ManifestFormat::Oci,
        None,
    )
}

/// [`push_busybox`] with the layer compression, manifest format and push credentials
/// (`user:password`) given.
fn push_busybox_as(
    registry: &Registry,
    image: &str,
    compression: Compression,
    format: ManifestFormat,
    credentials: Option<&str>,
) -> (tempfile::TempDir, BuiltImage) {
    let (_, tag) = image.rsplit_once(':').expect("test images are repo:tag");
    let layout = tempfile::tempdir().unwrap();
    let built = busybox_image(layout.path(), tag, compression);
    push_layout(layout.path(), tag, registry, image, format, credentials).unwrap();
    (layout, built)
}

/// Every blob of `record` is in the store, with its size and digest.
fn assert_blobs_stored(store: &Store, record: &ImageRecord) {
    for descriptor in std::iter::once(&record.config).chain(&record.layers) {
        let path = store.blob_path(descriptor.digest());
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(data.len() as u64, descriptor.size());
        let actual = format!("sha256:{}", sha256_hex(&data));
        assert_eq!(actual, descriptor.digest().to_string());
    }
}

/// `record` is the image that was `built`, and all its blobs are stored intact.
fn assert_pulled(store: &Store, record: &ImageRecord, built: &BuiltImage) {
    assert_eq!(record.manifest_digest.to_string(), built.digest);
    assert_blobs_stored(store, record);
}

/// Writes `content` to `dir/name`; returns the path.
fn write_file(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// The blob lock files under `root/locks` (`store.lock` is not one).
fn blob_locks(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("locks"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "store.lock")
                .collect()
        })
        .unwrap_or_default()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test]
async fn pulls_by_tag_then_by_digest() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox(&registry, "tools/busybox:v1");
    let (root, store) = empty_store();

    let by_tag = source(&format!("{}/tools/busybox:v1", registry.addr()));
    let record = pull(&store, &by_tag, &options(registry.addr()))
        .await
        .unwrap();
    assert_eq!(record.manifest_digest.to_string(), built.digest);
    assert_eq!(
        record.reference,
        format!("{}/tools/busybox:v1", registry.addr())
    );
    let layers: Vec<String> = record
        .layers
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    assert_eq!(layers, built.layers, "layers in order, base first");
    assert_blobs_stored(&store, &record);
    assert!(store.blob_path(&record.manifest_digest).is_file());
    let config = store.read_config(&record).unwrap();
    assert_eq!(config.os().to_string(), "linux");
    assert_eq!(store.image(&by_tag).unwrap(), Some(record.clone()));

    let by_digest = source(&format!(
        "{}/tools/busybox@{}",
        registry.addr(),
        built.digest
    ));
    let pinned = pull(&store, &by_digest, &options(registry.addr()))
        .await
        .unwrap();
    assert_eq!(pinned.manifest_digest, record.manifest_digest);
    let listed: Vec<String> = store
        .images()
        .unwrap()
        .into_iter()
        .map(|r| r.reference)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(tmp_is_empty(root.path()));
}

#[tokio::test]
async fn picks_the_platform_from_an_index() {
    let registry = Registry::start().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let host = ImageSpec::host(vec![busybox_layer(Compression::Gzip).unwrap()]);
    let marker = |arch: &str| LayerSpec {
        entries: vec![Entry::file("etc/arch", arch)],
        compression: Compression::Gzip,
    };
    let arm64 = ImageSpec {
        layers: vec![marker("arm64")],
        architecture: "arm64".into(),
        variant: Some("v8".into()),
        ..host.clone()
    };
    let armv7 = ImageSpec {
        layers: vec![marker("armv7")],
        architecture: "arm".into(),
        variant: Some("v7".into()),
        ..host.clone()
    };
    let (index, images) =
        write_index(layout.path(), "multi", &[host.clone(), arm64, armv7]).unwrap();
    push_layout(
        layout.path(),
        "multi",
        &registry,
        "multi/app:1",
        ManifestFormat::Oci,
        None,
    )
    .unwrap();
    let (_root, store) = empty_store();
    let reference = source(&format!("{}/multi/app:1", registry.addr()));

    let default = pull(&store, &reference, &options(registry.addr()))
        .await
        .unwrap();
    assert_eq!(default.manifest_digest.to_string(), images[0].digest);
    assert_eq!(
        default.index_digest.as_ref().map(ToString::to_string),
        Some(index.digest.clone())
    );
    assert_blobs_stored(&store, &default);

    let mut opts = options(registry.addr());
    opts.platform = Some("linux/arm".parse().unwrap());
    let arm = pull(&store, &reference, &opts).await.unwrap();
    assert_eq!(arm.manifest_digest.to_string(), images[2].digest);
    assert_eq!(arm.platform.as_deref(), Some("linux/arm/v7"));

    opts.platform = Some("linux/s390x".parse().unwrap());
    let err = pull_error(&store, &reference, &opts).await;
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    assert!(err.contains("linux/arm64/v8"), "{err}");
    assert!(err.contains("linux/arm/v7"), "{err}");
    assert!(
        !err.contains("unknown"),
        "attestation listed as a platform: {err}"
    );
}

#[tokio::test]
async fn picks_the_platform_from_a_docker_manifest_list() {
    let registry = Registry::start().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let host = ImageSpec::host(vec![busybox_layer(Compression::Gzip).unwrap()]);
    let arm64 = ImageSpec {
        architecture: "arm64".into(),
        layers: vec![LayerSpec {
            entries: vec![Entry::file("etc/arch", "arm64")],
            compression: Compression::Gzip,
        }],
        ..host.clone()
    };
    write_index(layout.path(), "multi", &[arm64, host]).unwrap();
    push_layout(
        layout.path(),
        "multi",
        &registry,
        "list/app:1",
        ManifestFormat::DockerV2,
        None,
    )
    .unwrap();
    let (_root, store) = empty_store();
    let mut opts = options(registry.addr());
    opts.platform = Some("linux/arm64".parse().unwrap());
    let record = pull(
        &store,
        &source(&format!("{}/list/app:1", registry.addr())),
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(
        record.manifest_media_type.to_string(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let index = store
        .read_blob(record.index_digest.as_ref().unwrap())
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(record.platform.as_deref(), Some("linux/arm64"));
    assert_blobs_stored(&store, &record);
}

#[tokio::test]
async fn pulls_docker_schema2_images() {
    let registry = Registry::start().unwrap();
    let _layout = push_busybox_as(
        &registry,
        "docker/app:v1",
        Compression::Gzip,
        ManifestFormat::DockerV2,
        None,
    );
    let (_root, store) = empty_store();
    let record = pull(
        &store,
        &source(&format!("{}/docker/app:v1", registry.addr())),
        &options(registry.addr()),
    )
    .await
    .unwrap();
    assert_eq!(
        record.manifest_media_type.to_string(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        record.layers[0].media_type().to_string(),
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_blobs_stored(&store, &record);
}

#[tokio::test]
async fn pulls_zstd_layers() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox_as(
        &registry,
        "z/app:zstd",
        Compression::Zstd,
        ManifestFormat::Oci,
        None,
    );
    let (_root, store) = empty_store();
    let record = pull(
        &store,
        &source(&format!("{}/z/app:zstd", registry.addr())),
        &options(registry.addr()),
    )
    .await
    .unwrap();
    assert_eq!(record.manifest_digest.to_string(), built.digest);
    assert_eq!(
        record.layers[0].media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_blobs_stored(&store, &record);
}

#[tokio::test]
async fn tampered_blob_fails_naming_the_digest_and_stores_nothing() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox(&registry, "bad/app:v1");
    // Flip one byte of the base layer in the registry's storage (same size).
    let data_path = registry.blob_data_path(&built.layers[0]);
    let mut data = std::fs::read(&data_path).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&data_path, &data).unwrap();

    let (root, store) = empty_store();
    let reference = source(&format!("{}/bad/app:v1", registry.addr()));
    let err = pull_error(&store, &reference, &options(registry.addr())).await;
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(err.contains(&built.layers[0]), "{err}");
    let tampered: executor::reference::ImageSource = reference.clone();
    assert_eq!(store.image(&tampered).unwrap(), None, "no image recorded");
    let hex = built.layers[0].trim_start_matches("sha256:");
    assert!(!root.path().join("blobs/sha256").join(hex).exists());
    assert!(tmp_is_empty(root.path()), "temp file left behind");
    assert_eq!(
        blob_locks(root.path()),
        Vec::<String>::new(),
        "lock left behind"
    );
}

#[tokio::test]
async fn missing_tag_is_a_clear_error() {
    let registry = Registry::start().unwrap();
    let _layout = push_busybox(&registry, "some/app:v1");
    let (_root, store) = empty_store();
    let reference = format!("{}/some/app:nope", registry.addr());
    let err = pull_error(&store, &source(&reference), &options(registry.addr())).await;
    assert!(err.contains("not found"), "{err}");
    assert!(err.contains(&reference), "{err}");
    assert!(store.images().unwrap().is_empty());
}

#[tokio::test]
async fn unreachable_registry_fails_fast() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (_root, store) = empty_store();
    let mut opts = PullOptions {
        progress: None,
        ..PullOptions::default()
    };
    opts.registry.insecure_registries = vec![addr.clone()];
    let started = std::time::Instant::now();
    let err = pull_error(&store, &source(&format!("{addr}/app:v1")), &opts).await;
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains(&addr), "{err}");
    // Connection refused is not retried with backoff (that would take 30s+).
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn plain_http_only_when_asked() {
    let registry = Registry::start().unwrap();
    let (_root, store) = empty_store();
    let opts = PullOptions {
        progress: None,
        retries: 0,
        ..PullOptions::default()
    };
    let err = pull(
        &store,
        &source(&format!("{}/a/b:c", registry.addr())),
        &opts,
    )
    .await
    .unwrap_err();
    // An HTTPS handshake with a plain-HTTP server fails; nothing falls back to HTTP.
    assert!(error_chain(&err).contains(registry.addr()), "{err}");
}

#[tokio::test]
async fn concurrent_pulls_download_each_blob_once_and_all_succeed() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox(&registry, "conc/app:v1");
    // Count the downloads of the base layer on the way.
    let proxy = FaultProxy::start(registry.addr(), &built.layers[0], Fault::None).unwrap();
    let root = tempfile::tempdir().unwrap();
    let reference = source(&format!("{}/conc/app:v1", proxy.addr()));
    let mut opts = options(registry.addr());
    opts.registry.insecure_registries = vec![proxy.addr().to_owned()];
    let mut tasks = Vec::new();
    for _ in 0..4 {
        // Each task opens the store itself, as separate processes would: separate lock
        // file descriptions, so flock serializes them like processes.
        let (root, reference, opts) = (root.path().to_owned(), reference.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let store = Store::open(&root).unwrap();
            pull(&store, &reference, &opts).await
        }));
    }
    for task in tasks {
        let record = task.await.unwrap().unwrap();
        assert_eq!(record.manifest_digest.to_string(), built.digest);
    }
    assert_eq!(
        proxy.requests(),
        1,
        "the base layer was downloaded more than once"
    );
    let store = Store::open(root.path()).unwrap();
    // Pulling again fetches no blob: they are all in the store.
    pull(&store, &reference, &opts).await.unwrap();
    assert_eq!(proxy.requests(), 1, "a stored blob was downloaded again");
    let record = store.image(&reference).unwrap().unwrap();
    assert_blobs_stored(&store, &record);
    assert!(tmp_is_empty(root.path()));
}

#[tokio::test]
async fn pulls_from_an_oci_layout() {
    let layout = tempfile::tempdir().unwrap();
    let v1 = busybox_image(layout.path(), "v1", Compression::Gzip);
    let v2 = busybox_image(layout.path(), "v2", Compression::Zstd);
    let (_root, store) = empty_store();
    let opts = PullOptions {
        progress: None,
        ..PullOptions::default()
    };
    let dir = layout.path().display();

    let record = pull(&store, &source(&format!("oci-layout:{dir}:v2")), &opts)
        .await
        .unwrap();
    assert_eq!(record.manifest_digest.to_string(), v2.digest);
    assert_blobs_stored(&store, &record);
    let pinned = pull(
        &store,
        &source(&format!("oci-layout:{dir}@{}", v1.digest)),
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(pinned.manifest_digest.to_string(), v1.digest);

    let err = pull_error(&store, &source(&format!("oci-layout:{dir}:v3")), &opts).await;
    assert!(err.contains("no image tagged \"v3\""), "{err}");
    assert!(err.contains("v1, v2"), "{err}");
    let err = pull_error(&store, &source(&format!("oci-layout:{dir}")), &opts).await;
    assert!(err.contains("holds 2 images"), "{err}");
    // A multi-platform index in the layout, as `skopeo copy --all ... oci:DIR:TAG` writes.
    let host = ImageSpec::host(vec![busybox_layer(Compression::Gzip).unwrap()]);
    let arm64 = ImageSpec {
        architecture: "arm64".into(),
        ..host.clone()
    };
    let (index, images) = write_index(layout.path(), "multi", &[arm64, host]).unwrap();
    let record = pull(&store, &source(&format!("oci-layout:{dir}:multi")), &opts)
        .await
        .unwrap();
    assert_eq!(record.manifest_digest.to_string(), images[1].digest);
    assert_eq!(
        record.index_digest.map(|d| d.to_string()),
        Some(index.digest)
    );

    let err = pull_error(&store, &source("oci-layout:/nonexistent/layout:v1"), &opts).await;
    assert!(err.contains("/nonexistent/layout"), "{err}");
}

#[tokio::test]
async fn layout_with_a_corrupt_blob_is_refused() {
    let layout = tempfile::tempdir().unwrap();
    let built = busybox_image(layout.path(), "v1", Compression::Gzip);
    let blob = layout
        .path()
        .join("blobs/sha256")
        .join(built.layers[1].trim_start_matches("sha256:"));
    let mut data = std::fs::read(&blob).unwrap();
    data[0] ^= 0xff;
    std::fs::write(&blob, data).unwrap();
    let (root, store) = empty_store();
    let opts = PullOptions {
        progress: None,
        ..PullOptions::default()
    };
    let err = pull_error(
        &store,
        &source(&format!("oci-layout:{}:v1", layout.path().display())),
        &opts,
    )
    .await;
    assert!(err.contains(&built.layers[1]), "{err}");
    assert!(store.images().unwrap().is_empty());
    assert!(tmp_is_empty(root.path()));
}

#[tokio::test]
async fn auth_protected_registry_needs_credentials() {
    let registry = Registry::start_with(&RegistryConfig {
        basic_auth: Some(("tester".into(), "t0ps3cret".into())),
        ..RegistryConfig::default()
    })
    .unwrap();
    let (_layout, built) = push_busybox_as(
        &registry,
        "private/app:v1",
        Compression::Gzip,
        ManifestFormat::Oci,
        Some("tester:t0ps3cret"),
    );
    let (root, store) = empty_store();
    let reference = source(&format!("{}/private/app:v1", registry.addr()));

    // An empty auth file: anonymous, refused.
    let mut opts = options(registry.addr());
    opts.registry.auth_file = Some(write_file(root.path(), "empty-auth.json", "{}"));
    let err = pull_error(&store, &reference, &opts).await;
    assert!(err.contains("not authorized"), "{err}");

    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("tester:t0ps3cret");
    let auth_json = format!(
        r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
        registry.addr()
    );
    opts.registry.auth_file = Some(write_file(root.path(), "auth.json", &auth_json));
    let record = pull(&store, &reference, &opts).await.unwrap();
    assert_pulled(&store, &record, &built);
}

#[tokio::test]
async fn interrupted_blob_resumes_with_a_range_request() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox(&registry, "resume/app:v1");
    let base = &built.layers[0];
    let proxy = FaultProxy::start(registry.addr(), base, Fault::CutAfter(100_000)).unwrap();
    let (root, store) = empty_store();
    let opts = options(proxy.addr());
    let reference = source(&format!("{}/resume/app:v1", proxy.addr()));
    let record = pull(&store, &reference, &opts).await.unwrap();
    assert_eq!(proxy.faults(), 1, "the fault was not injected");
    assert!(
        proxy.range_requests() >= 1,
        "the retry did not ask for a range"
    );
    assert_pulled(&store, &record, &built);
    assert!(tmp_is_empty(root.path()));
}

#[tokio::test]
async fn stalled_transfer_times_out_and_is_retried() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox(&registry, "stall/app:v1");
    let base = &built.layers[0];
    let proxy = FaultProxy::start(registry.addr(), base, Fault::StallAfter(50_000)).unwrap();
    let (_root, store) = empty_store();
    let mut opts = options(proxy.addr());
    opts.stall_timeout = Duration::from_secs(2);
    let reference = source(&format!("{}/stall/app:v1", proxy.addr()));
    let record = pull(&store, &reference, &opts).await.unwrap();
    assert_eq!(proxy.faults(), 1);
    assert_blobs_stored(&store, &record);
}

#[tokio::test]
async fn https_registry_with_an_extra_ca() {
    let registry = Registry::start_with(&RegistryConfig {
        tls: true,
        ..RegistryConfig::default()
    })
    .unwrap();
    let (_layout, built) = push_busybox(&registry, "tls/app:v1");
    let (_root, store) = empty_store();
    let reference = source(&format!("{}/tls/app:v1", registry.addr()));
    let mut opts = PullOptions {
        progress: None,
        retries: 0,
        ..PullOptions::default()
    };
    // Without the CA the certificate is untrusted.
    let err = pull_error(&store, &reference, &opts).await;
    assert!(err.contains(registry.addr()), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(store.images().unwrap().is_empty());

    opts.registry.cert_dir = Some(registry.ca_dir());
    let record = pull(&store, &reference, &opts).await.unwrap();
    assert_pulled(&store, &record, &built);
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox(&registry, "flaky/app:v1");
    for (path_part, code) in [("/manifests/v1", 503), (built.layers[1].as_str(), 429)] {
        let proxy = FaultProxy::start(registry.addr(), path_part, Fault::Status(code)).unwrap();
        let (_root, store) = empty_store();
        let mut opts = options(proxy.addr());
        let reference = source(&format!("{}/flaky/app:v1", proxy.addr()));
        let started = std::time::Instant::now();
        let record = pull(&store, &reference, &opts).await.unwrap_or_else(|e| {
            panic!(
                "HTTP {code} on {path_part} not retried: {}",
                error_chain(&e)
            )
        });
        assert_eq!(proxy.faults(), 1, "HTTP {code} was not injected");
        if code == 429 {
            // The proxy said `Retry-After: 1`; the 50ms backoff must not apply.
            assert!(
                started.elapsed() >= Duration::from_millis(950),
                "Retry-After ignored"
            );
        }
        assert_pulled(&store, &record, &built);

        // With no retries allowed the same fault fails the pull, naming the status.
        let proxy = FaultProxy::start(registry.addr(), path_part, Fault::Status(code)).unwrap();
        let (root, store) = empty_store();
        opts.registry.insecure_registries = vec![proxy.addr().to_owned()];
        opts.retries = 0;
        let reference = source(&format!("{}/flaky/app:v1", proxy.addr()));
        let err = pull_error(&store, &reference, &opts).await;
        assert!(err.contains(&code.to_string()), "{err}");
        assert!(tmp_is_empty(root.path()));
    }
}

/// `executor --root root pull image --insecure-registry insecure`, to spawn.
fn executor_pull(root: &Path, image: &str, insecure: &str) -> std::process::Command {
    let mut command = std::process::Command::new(integration_tests::executor_bin().unwrap());
    command
        .arg("--root")
        .arg(root)
        .args(["--log-level", "warn", "pull", image])
        .args(["--insecure-registry", insecure]);
    command
}

#[test]
fn cli_pull_images_rmi_prune() {
    let registry = Registry::start().unwrap();
    let (layout, built) = push_busybox(&registry, "cli/app:v1");
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/cli/app:v1", registry.addr());

    let (code, stdout, stderr) = run_executor(
        root.path(),
        &["pull", &image, "--insecure-registry", registry.addr()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), built.digest);
    let layout_ref = format!("oci-layout:{}:v1", layout.path().display());
    let (code, _, stderr) = run_executor(root.path(), &["pull", &layout_ref]);
    assert_eq!(code, 0, "{stderr}");

    let (code, table, _) = run_executor(root.path(), &["images"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("REFERENCE"), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        table.contains(&image) && table.contains(&layout_ref),
        "{table}"
    );
    assert!(table.contains(&built.digest), "{table}");

    let (code, json, _) = run_executor(root.path(), &["images", "--format", "json"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(rows[0]["digest"], built.digest.as_str());
    assert!(rows[0]["size"].as_u64().unwrap() > 500_000, "{json}");

    // Both references share every blob: removing one prunes nothing.
    let (code, _, stderr) = run_executor(root.path(), &["rmi", &image]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = run_executor(root.path(), &["prune"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("removed 0 blobs"), "{stdout}");
    let (code, _, _) = run_executor(root.path(), &["rmi", &layout_ref]);
    assert_eq!(code, 0);
    let (code, stdout, _) = run_executor(root.path(), &["prune"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("removed 4 blobs"), "{stdout}");
    let blobs = std::fs::read_dir(root.path().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
    assert_eq!(
        blob_locks(root.path()),
        Vec::<String>::new(),
        "locks of pruned blobs"
    );

    // Errors: one line, exit 125, naming what was wrong.
    let (code, _, stderr) = run_executor(root.path(), &["rmi", &image]);
    assert_eq!(code, 125);
    assert!(
        stderr.contains(&image) && stderr.contains("not in the store"),
        "{stderr}"
    );
    let (code, _, stderr) = run_executor(root.path(), &["pull", "Not/Valid"]);
    assert_eq!(code, 125);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("executor: invalid image reference \"Not/Valid\""),
        "{stderr}"
    );
}

#[test]
fn concurrent_processes_download_each_blob_once() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox(&registry, "procs/app:v1");
    let proxy = FaultProxy::start(registry.addr(), &built.layers[0], Fault::None).unwrap();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/procs/app:v1", proxy.addr());
    let children: Vec<_> = (0..3)
        .map(|_| {
            executor_pull(root.path(), &image, proxy.addr())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), built.digest);
    }
    assert_eq!(
        proxy.requests(),
        1,
        "the base layer was downloaded more than once"
    );
    assert_eq!(
        blob_locks(root.path()),
        Vec::<String>::new(),
        "lock left behind"
    );
}

#[test]
fn killed_pull_leaves_nothing_that_survives_the_next_start() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox(&registry, "kill/app:v1");
    // The base layer stalls half-way, so the pull is mid-blob when killed.
    let proxy = FaultProxy::start(
        registry.addr(),
        &built.layers[0],
        Fault::StallAfter(300_000),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/kill/app:v1", proxy.addr());
    let mut child = executor_pull(root.path(), &image, proxy.addr())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = root.path().join("tmp");
    let base_hex = built.layers[0].trim_start_matches("sha256:").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let found = std::fs::read_dir(&tmp).ok().and_then(|entries| {
            entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&base_hex))
            })
        });
        if let Some(path) = found
            && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
        {
            break path;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pull never started the base layer"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(partial.exists());

    let store = Store::open(root.path()).unwrap();
    assert!(
        !partial.exists(),
        "the killed pull's temp file survived the next start"
    );
    assert!(tmp_is_empty(root.path()));
    assert!(store.images().unwrap().is_empty());
    assert!(!root.path().join("blobs/sha256").join(&base_hex).exists());
    assert!(
        !blob_locks(root.path()).contains(&format!("{base_hex}.lock")),
        "the killed pull's lock of a blob never stored survived the next start"
    );
}

#[tokio::test]
async fn token_protected_registry_gets_a_bearer_token() {
    let registry = Registry::start_with(&RegistryConfig {
        token_auth: Some(TokenAuth {
            user: "robot".into(),
            password: "t0k3n-pass".into(),
            repositories: vec!["bearer/app".into()],
        }),
        ..RegistryConfig::default()
    })
    .unwrap();
    let (_layout, built) = push_busybox_as(
        &registry,
        "bearer/app:v1",
        Compression::Gzip,
        ManifestFormat::Oci,
        Some("robot:t0k3n-pass"),
    );
    let (root, store) = empty_store();
    let reference = source(&format!("{}/bearer/app:v1", registry.addr()));

    let mut opts = options(registry.addr());
    opts.registry.auth_file = Some(write_file(root.path(), "empty-auth.json", "{}"));
    let err = pull_error(&store, &reference, &opts).await;
    assert!(err.contains("not authorized"), "{err}");

    let auth_json = format!(
        r#"{{"auths":{{"{}":{{"username":"robot","password":"t0k3n-pass"}}}}}}"#,
        registry.addr()
    );
    opts.registry.auth_file = Some(write_file(root.path(), "auth.json", &auth_json));
    let issued_before = registry.token_server().unwrap().issued();
    let record = pull(&store, &reference, &opts).await.unwrap();
    assert_pulled(&store, &record, &built);
    assert!(registry.token_server().unwrap().issued() > issued_before);
}

#[test]
fn registries_conf_marks_a_registry_insecure() {
    let registry = Registry::start().unwrap();
    let (_layout, built) = push_busybox(&registry, "conf/app:v1");
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/conf/app:v1", registry.addr());
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("registries.conf");
    let conf_arg = conf.to_str().unwrap();
    let pull = |root: &Path| run_executor(root, &["pull", &image, "--registries-conf", conf_arg]);

    // Another registry is insecure, not this one: HTTPS, which it cannot answer.
    std::fs::write(
        &conf,
        "[[registry]]\nlocation = \"quay.io\"\ninsecure = true\n",
    )
    .unwrap();
    let (code, _, stderr) = pull(root.path());
    assert_eq!(code, 125, "{stderr}");

    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            registry.addr()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = pull(root.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), built.digest);

    std::fs::write(&conf, "[[registry]\n").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let (code, _, stderr) = pull(fresh.path());
    assert_eq!(code, 125, "{stderr}");
    assert!(
        stderr.contains("invalid registries configuration") && stderr.contains(conf_arg),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
