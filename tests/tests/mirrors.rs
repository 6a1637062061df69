//! Mirrors and blocked registries from `registries.conf`, against real `docker-registry`
//! processes: the primary and its mirror are two registries (or a port nobody listens on).

mod common;

use common::{empty_store, pull_error, pull_options, source};
use executor::pull::{PullOptions, pull};
use executor::source::registries_conf::RegistriesConf;
use integration_tests::{BuiltImage, Fault, FaultProxy, Registry, Times, push_marked_image};
use std::path::Path;
use std::sync::Arc;

fn push_image(registry: &Registry, image: &str) -> BuiltImage {
    push_marked_image(registry, image).unwrap()
}

/// `127.0.0.1:PORT` where nothing listens (connections are refused).
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Pull options with `conf` as the registries configuration (written to a file in
/// `dir` and loaded as the CLI does).
fn options_with(dir: &Path, conf: &str) -> PullOptions {
    let path = dir.join("registries.conf");
    std::fs::write(&path, conf).unwrap();
    let mut options = pull_options("unused.invalid");
    options.registry.registries = Arc::new(RegistriesConf::load(&[path]).unwrap());
    options
}

/// A configuration mirroring `primary/team` at `mirror/cache/team`, both plain HTTP,
/// with `extra` appended to the mirror's table.
fn mirrored(primary: &str, mirror: &str, extra: &str) -> String {
    format!(
        "[[registry]]\nprefix = \"{primary}/team\"\nlocation = \"{primary}/team\"\ninsecure = true\n\
         [[registry.mirror]]\nlocation = \"{mirror}/cache/team\"\ninsecure = true\n{extra}"
    )
}

#[tokio::test]
async fn the_mirror_serves_when_the_primary_is_down() {
    let mirror = Registry::start().unwrap();
    let built = push_image(&mirror, "cache/team/app:v1");
    let primary = dead_address();
    let dir = tempfile::tempdir().unwrap();
    let options = options_with(dir.path(), &mirrored(&primary, mirror.addr(), ""));
    let (_root, store) = empty_store();
    // The image is recorded under the name asked for, not the mirror's.
    let reference = format!("{primary}/team/app:v1");
    let record = pull(&store, &source(&reference), &options).await.unwrap();
    assert_eq!(record.manifest_digest.to_string(), built.digest);
    assert_eq!(record.reference, reference);
    assert!(store.has_blob(record.layers[1].digest(), record.layers[1].size()));
}

#[tokio::test]
async fn a_mirror_without_the_image_or_down_falls_back_to_the_primary() {
    let primary = Registry::start().unwrap();
    let built = push_image(&primary, "team/app:v1");
    let empty_mirror = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference = source(&format!("{}/team/app:v1", primary.addr()));
    for mirror in [empty_mirror.addr().to_owned(), dead_address()] {
        let options = options_with(dir.path(), &mirrored(primary.addr(), &mirror, ""));
        let (_root, store) = empty_store();
        let record = pull(&store, &reference, &options).await.unwrap();
        assert_eq!(
            record.manifest_digest.to_string(),
            built.digest,
            "mirror {mirror}"
        );
    }
}

#[tokio::test]
async fn blobs_missing_from_the_mirror_come_from_the_primary() {
    let primary = Registry::start().unwrap();
    let built = push_image(&primary, "team/app:v1");
    let mirror = Registry::start().unwrap();
    push_image(&mirror, "cache/team/app:v1");
    // The mirror has the manifest but answers 404 for every blob.
    let proxy = FaultProxy::start_with(mirror.addr(), "/blobs/", Fault::Status(404), Times::Always)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = options_with(dir.path(), &mirrored(primary.addr(), proxy.addr(), ""));
    let (_root, store) = empty_store();
    let record = pull(
        &store,
        &source(&format!("{}/team/app:v1", primary.addr())),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(record.manifest_digest.to_string(), built.digest);
    // Config and two layers were asked of the mirror first.
    assert!(proxy.faults() >= 3, "{} faults", proxy.faults());
}

#[tokio::test]
async fn a_digest_only_mirror_is_skipped_for_tags() {
    let mirror = Registry::start().unwrap();
    let built = push_image(&mirror, "cache/team/app:v1");
    let primary = dead_address();
    let dir = tempfile::tempdir().unwrap();
    let options = options_with(
        dir.path(),
        &mirrored(
            &primary,
            mirror.addr(),
            "pull-from-mirror = \"digest-only\"\n",
        ),
    );
    let (_root, store) = empty_store();
    // By tag: only the (dead) primary is tried, and the error is its own.
    let err = pull_error(&store, &source(&format!("{primary}/team/app:v1")), &options).await;
    assert!(
        err.contains(&format!("registry {primary} is unreachable")),
        "{err}"
    );
    assert!(!err.contains(mirror.addr()), "{err}");
    // By digest: the mirror serves it.
    let by_digest = format!("{primary}/team/app@{}", built.digest);
    let record = pull(&store, &source(&by_digest), &options).await.unwrap();
    assert_eq!(record.manifest_digest.to_string(), built.digest);
}

#[tokio::test]
async fn when_every_endpoint_fails_each_is_named_on_one_line() {
    let primary = Registry::start().unwrap();
    let mirror = dead_address();
    let dir = tempfile::tempdir().unwrap();
    let options = options_with(dir.path(), &mirrored(primary.addr(), &mirror, ""));
    let (_root, store) = empty_store();
    let err = pull_error(
        &store,
        &source(&format!("{}/team/missing:v1", primary.addr())),
        &options,
    )
    .await;
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("every endpoint failed"), "{err}");
    assert!(
        err.contains(&format!(
            "mirror {mirror}/cache/team/missing:v1: registry {mirror} is unreachable"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "primary {}/team/missing:v1: image",
            primary.addr()
        )) && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn a_blocked_registry_is_refused_with_one_line() {
    let registry = Registry::start().unwrap();
    push_image(&registry, "team/app:v1");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n[[registry]]\nprefix = \"{0}/team\"\nlocation = \"{0}/team\"\ninsecure = true\nblocked = true\n",
            registry.addr()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(integration_tests::executor_bin().unwrap())
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["--log-level", "warn", "pull"])
        .arg(format!("{}/team/app:v1", registry.addr()))
        .arg("--registries-conf")
        .arg(&conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("registry {}/team is blocked by", registry.addr()))
            && stderr.contains(conf.to_str().unwrap()),
        "{stderr}"
    );
}
