//! A faulty registry: every fault of the fault-injecting proxy, on the root manifest,
//! the platform manifest, the config and a layer, injected once (the pull must recover
//! with verified content) and on every request (the pull must fail with a clear error).
//! After each case the store holds no corrupt blob, no temp file and no record of a
//! failed pull, and a later pull through the healed proxy succeeds. The layer cases run
//! again with unpack while fetching (`pull_and_unpack`, as `executor run` pulls): a layer
//! whose bytes fail verification mid-stream leaves no snapshot and no temp directory.

mod common;

use common::{error_chain, pull_options};
use executor::pull::{PullOptions, pull, pull_and_unpack};
use executor::reference::ImageSource;
use executor::snapshot::Snapshotter;
use executor::store::Store;
use integration_tests::{
    BuiltImage, Compression, Entry, Fault, FaultProxy, ImageSpec, LayerSpec, ManifestFormat,
    Registry, Times, busybox_layer, push_layout, verify_store, write_index,
};
use std::time::Duration;

/// The image under test: a two-platform index over busybox + a marker layer.
struct Fixture {
    registry: Registry,
    index: BuiltImage,
    host: BuiltImage,
    _layout: tempfile::TempDir,
}

fn fixture(repo: &str) -> Fixture {
    let registry = Registry::start().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let layers = vec![
        busybox_layer(Compression::Gzip).unwrap(),
        LayerSpec {
            entries: vec![Entry::file("etc/marker", "faulty registry\n")],
            compression: Compression::Gzip,
        },
    ];
    let host = ImageSpec::host(layers.clone());
    let mut other = ImageSpec::host(layers);
    other.architecture = if host.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
    .into();
    let (index, images) = write_index(layout.path(), "v1", &[host, other]).unwrap();
    push_layout(
        layout.path(),
        "v1",
        &registry,
        &format!("{repo}:v1"),
        ManifestFormat::Oci,
        None,
    )
    .unwrap();
    Fixture {
        registry,
        index,
        host: images[0].clone(),
        _layout: layout,
    }
}

/// [`pull_options`] through `proxy`, with a short stall timeout for the stall faults.
fn options(proxy: &FaultProxy) -> PullOptions {
    PullOptions {
        stall_timeout: Duration::from_secs(2),
        ..pull_options(proxy.addr())
    }
}

/// Where a fault goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    RootManifest,
    PlatformManifest,
    Config,
    Layer,
}

/// Every fault, with body offsets inside the target's body (`half`: some progress is
/// possible on each try, so a blob can still complete by resuming; `0`: none is).
fn faults(body_size: usize) -> Vec<Fault> {
    let half = body_size / 2;
    vec![
        Fault::ResetAfter(half),
        Fault::ResetAfter(0),
        Fault::CutAfter(half),
        Fault::CutAfter(0),
        Fault::ContentLength(64),
        Fault::ContentLength(-16),
        Fault::Status(500),
        Fault::Status(429),
        Fault::NoResponse,
        Fault::StallAfter(half),
        Fault::WrongDigestHeader,
        Fault::CorruptBody,
    ]
}

/// What a pull must end in.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Success with verified content.
    Pulled,
    /// Success, and it took at least one `Range` request (a resumed blob).
    Resumed,
    /// A failure whose message names the thing fetched and, if given, says this.
    Fails(Option<&'static str>),
}

fn expect(fault: Fault, target: Target, times: Times) -> Expect {
    if times == Times::Once {
        return Expect::Pulled;
    }
    let blob = matches!(target, Target::Config | Target::Layer);
    match fault {
        // Each try gets further; a blob resumes from where the last one stopped.
        Fault::ResetAfter(n) | Fault::CutAfter(n) | Fault::StallAfter(n) if blob && n > 0 => {
            Expect::Resumed
        }
        // Blobs are verified by content; the header and a broken framing after the last
        // byte do not matter.
        Fault::WrongDigestHeader | Fault::ContentLength(64) if blob => Expect::Pulled,
        Fault::Status(500) => Expect::Fails(Some("HTTP 500")),
        Fault::Status(429) => Expect::Fails(Some("HTTP 429")),
        Fault::NoResponse | Fault::StallAfter(_) => Expect::Fails(Some("stalled")),
        Fault::CorruptBody | Fault::WrongDigestHeader => Expect::Fails(Some("digest mismatch")),
        Fault::ContentLength(-16) if blob => Expect::Fails(Some("response ended after")),
        Fault::ContentLength(-16) => Expect::Fails(Some("digest mismatch")),
        // Resets and truncations: the HTTP stack's wording varies; the thing is named.
        _ => Expect::Fails(None),
    }
}

/// Runs every fault against `target`, `times` often. Returns (cases, failures seen).
async fn run_cases(repo: &str, target: Target, times: Times) -> (usize, usize) {
    run_cases_with(repo, target, times, false).await
}

/// Entries of a directory (none if it does not exist).
fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// [`run_cases`], pulling with `pull_and_unpack` when `unpack` is set; then the snapshot
/// cache is checked too: nothing unpacked and no temp directory after a failed pull, every
/// layer unpacked after the healed one.
async fn run_cases_with(repo: &str, target: Target, times: Times, unpack: bool) -> (usize, usize) {
    let fx = fixture(repo);
    let path_part = match target {
        Target::RootManifest => "/manifests/v1".to_owned(),
        Target::PlatformManifest => format!("/manifests/{}", fx.host.digest),
        Target::Config => fx.host.config.clone(),
        Target::Layer => fx.host.layers[0].clone(),
    };
    let body_size = match target {
        Target::RootManifest => blob_len(&fx.registry, &fx.index.digest),
        Target::PlatformManifest => blob_len(&fx.registry, &fx.host.digest),
        Target::Config => blob_len(&fx.registry, &fx.host.config),
        Target::Layer => blob_len(&fx.registry, &fx.host.layers[0]),
    };
    let named = match target {
        Target::RootManifest => format!("{repo}:v1"),
        Target::PlatformManifest => fx.host.digest.clone(),
        Target::Config => fx.host.config.clone(),
        Target::Layer => fx.host.layers[0].clone(),
    };
    let mut cases = 0;
    let mut failed = 0;
    for fault in faults(body_size) {
        let what = format!("{fault:?} {times:?} on {target:?}");
        let proxy = FaultProxy::start_with(fx.registry.addr(), &path_part, fault, times).unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let snaps = Snapshotter::new(root.path().join("snapshots")).unwrap();
        let opts = options(&proxy);
        let reference = ImageSource::parse(&format!("{}/{repo}:v1", proxy.addr())).unwrap();
        let result = if unpack {
            pull_and_unpack(&store, &snaps, &reference, &opts).await
        } else {
            pull(&store, &reference, &opts).await
        };
        assert!(proxy.faults() >= 1, "{what}: the fault was never injected");
        match (expect(fault, target, times), result) {
            (Expect::Pulled, Ok(record)) => {
                assert_eq!(record.manifest_digest.to_string(), fx.host.digest, "{what}");
            }
            (Expect::Resumed, Ok(record)) => {
                assert_eq!(record.manifest_digest.to_string(), fx.host.digest, "{what}");
                assert!(proxy.range_requests() >= 1, "{what}: no range request");
            }
            (Expect::Fails(cause), Err(e)) => {
                failed += 1;
                let text = error_chain(&e);
                assert!(
                    !text.contains('\n'),
                    "{what}: error is not one line: {text}"
                );
                assert!(
                    text.contains(&named),
                    "{what}: error does not name {named}: {text}"
                );
                if let Some(cause) = cause {
                    assert!(
                        text.contains(cause),
                        "{what}: error does not say {cause:?}: {text}"
                    );
                }
                assert_eq!(
                    store.images().unwrap(),
                    vec![],
                    "{what}: a failed pull was recorded"
                );
                if unpack {
                    // The faulty layer is the base: nothing can be unpacked.
                    assert_eq!(snaps.snapshots().unwrap(), vec![], "{what}: snapshot left");
                    let faulty = fx.host.layers[0].trim_start_matches("sha256:");
                    assert!(
                        !root.path().join("blobs/sha256").join(faulty).exists(),
                        "{what}: the faulty blob was stored"
                    );
                }
            }
            (Expect::Fails(_), Ok(_)) => panic!("{what}: the pull succeeded"),
            (_, Err(e)) => panic!("{what}: the pull failed: {}", error_chain(&e)),
        }
        verify_store(root.path()).unwrap_or_else(|e| panic!("{what}: store inconsistent: {e:#}"));
        if unpack {
            let tmp = root.path().join("snapshots/tmp");
            assert_eq!(
                entries(&tmp),
                Vec::<std::path::PathBuf>::new(),
                "{what}: temp snapshot left"
            );
        }

        // The same reference through the healed path: whatever the failed pull left
        // behind must not get in the way.
        proxy.heal();
        // Generous limits here: a loaded machine must not fail the healthy pull.
        let healthy = PullOptions {
            stall_timeout: Duration::from_secs(30),
            retries: 4,
            ..opts.clone()
        };
        let record = if unpack {
            pull_and_unpack(&store, &snaps, &reference, &healthy).await
        } else {
            pull(&store, &reference, &healthy).await
        }
        .unwrap_or_else(|e| panic!("{what}: pull after healing failed: {}", error_chain(&e)));
        if unpack {
            assert_eq!(
                snaps.snapshots().unwrap().len(),
                2,
                "{what}: layers not unpacked"
            );
        }
        assert_eq!(record.manifest_digest.to_string(), fx.host.digest, "{what}");
        assert_eq!(
            record.index_digest.map(|d| d.to_string()),
            Some(fx.index.digest.clone())
        );
        let report = verify_store(root.path())
            .unwrap_or_else(|e| panic!("{what}: store inconsistent after healing: {e:#}"));
        // index + manifest + config + 2 layers.
        assert_eq!(report.blobs, 5, "{what}: {report:?}");
        assert_eq!(report.images, 1, "{what}");
        cases += 1;
    }
    eprintln!("{target:?} {times:?}: {cases} cases, {failed} failed cleanly");
    assert_eq!(cases, 12);
    (cases, failed)
}

fn blob_len(registry: &Registry, digest: &str) -> usize {
    std::fs::metadata(registry.blob_data_path(digest))
        .unwrap_or_else(|e| panic!("{digest} in the registry: {e}"))
        .len()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn one_off_faults_on_the_root_manifest_are_survived() {
    run_cases("faults/root-once", Target::RootManifest, Times::Once).await;
}

#[tokio::test]
async fn one_off_faults_on_the_platform_manifest_are_survived() {
    run_cases(
        "faults/platform-once",
        Target::PlatformManifest,
        Times::Once,
    )
    .await;
}

#[tokio::test]
async fn one_off_faults_on_the_config_are_survived() {
    run_cases("faults/config-once", Target::Config, Times::Once).await;
}

#[tokio::test]
async fn one_off_faults_on_a_layer_are_survived() {
    run_cases("faults/layer-once", Target::Layer, Times::Once).await;
}

#[tokio::test]
async fn lasting_faults_on_the_root_manifest_fail_cleanly() {
    let (cases, failed) =
        run_cases("faults/root-always", Target::RootManifest, Times::Always).await;
    assert_eq!(failed, cases);
}

#[tokio::test]
async fn lasting_faults_on_the_platform_manifest_fail_cleanly() {
    let (cases, failed) = run_cases(
        "faults/platform-always",
        Target::PlatformManifest,
        Times::Always,
    )
    .await;
    assert_eq!(failed, cases);
}

#[tokio::test]
async fn lasting_faults_on_the_config_fail_cleanly_or_resume() {
    let (_, failed) = run_cases("faults/config-always", Target::Config, Times::Always).await;
    // Resets, cuts and stalls that let each try progress resume to the end; a wrong
    // digest header and an over-long Content-Length do not matter to verified content.
    assert_eq!(failed, 7);
}

#[tokio::test]
async fn lasting_faults_on_a_layer_fail_cleanly_or_resume() {
    let (_, failed) = run_cases("faults/layer-always", Target::Layer, Times::Always).await;
    assert_eq!(failed, 7);
}

#[tokio::test]
async fn one_off_faults_on_a_layer_unpacked_while_fetching_are_survived() {
    run_cases_with("faults/stream-once", Target::Layer, Times::Once, true).await;
}

#[tokio::test]
async fn lasting_faults_on_a_layer_unpacked_while_fetching_leave_nothing_behind() {
    let (_, failed) =
        run_cases_with("faults/stream-always", Target::Layer, Times::Always, true).await;
    assert_eq!(failed, 7);
}
