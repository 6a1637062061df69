//! Resource exhaustion: a store on a small tmpfs. A pull that does not fit fails with a
//! clear "no space" error and leaves the store consistent: no temp file, no partial blob,
//! no record, earlier images intact; after freeing space the same pull succeeds.

mod common;

use common::{error_chain, pull_options};
use executor::pull::pull;
use executor::reference::ImageSource;
use executor::store::Store;
use integration_tests::{
    Compression, Entry, ImageSpec, LayerSpec, ManifestFormat, Registry, Tmpfs, busybox_layer,
    noise, push_layout, verify_store, write_image,
};

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn a_pull_that_does_not_fit_fails_with_no_space_and_keeps_the_store_consistent() {
    let registry = Registry::start().unwrap();
    let layout = tempfile::tempdir().unwrap();
    // ~1.3 MiB: fits.
    let small = ImageSpec::host(vec![busybox_layer(Compression::Gzip).unwrap()]);
    let small_built = write_image(layout.path(), "small", &small).unwrap();
    // Two 1 MiB layers of noise: does not fit next to the small image.
    let big = ImageSpec::host(vec![
        LayerSpec {
            entries: vec![Entry::file("a", noise(usize::try_from(MIB).unwrap(), 1))],
            compression: Compression::None,
        },
        LayerSpec {
            entries: vec![Entry::file("b", noise(usize::try_from(MIB).unwrap(), 2))],
            compression: Compression::None,
        },
    ]);
    write_image(layout.path(), "big", &big).unwrap();
    for tag in ["small", "big"] {
        push_layout(
            layout.path(),
            tag,
            &registry,
            &format!("space/app:{tag}"),
            ManifestFormat::Oci,
            None,
        )
        .unwrap();
    }

    let tmpfs = Tmpfs::mount(3 * MIB).unwrap();
    let root = tmpfs.path().join("store");
    let store = Store::open(&root).unwrap();
    let opts = pull_options(registry.addr());
    let small_ref = ImageSource::parse(&format!("{}/space/app:small", registry.addr())).unwrap();
    let big_ref = ImageSource::parse(&format!("{}/space/app:big", registry.addr())).unwrap();
    let small_record = pull(&store, &small_ref, &opts).await.unwrap();
    let before = verify_store(&root).unwrap();

    let err = error_chain(&pull(&store, &big_ref, &opts).await.unwrap_err());
    eprintln!("library error: {err}");
    assert!(err.contains("no space left"), "{err}");
    assert!(err.contains(&big_ref.to_string()), "{err}");
    assert!(!err.contains('\n'), "{err}");
    // No temp file, no corrupt or partial blob, no record of the failed pull; the small
    // image is whole (its blobs verify and its record is unchanged).
    let after = verify_store(&root).unwrap();
    assert_eq!(after.images, before.images);
    assert_eq!(store.image(&big_ref).unwrap(), None);
    assert_eq!(store.image(&small_ref).unwrap(), Some(small_record.clone()));
    // Pulling the small image again needs no space and works.
    let again = pull(&store, &small_ref, &opts).await.unwrap();
    assert_eq!(again.manifest_digest.to_string(), small_built.digest);

    // The CLI says the same in one line and exits non-zero.
    let output = std::process::Command::new(integration_tests::executor_bin().unwrap())
        .arg("--root")
        .arg(&root)
        .args(["pull", "--insecure-registry", registry.addr()])
        .arg(big_ref.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    eprintln!("cli error: {stderr}");
    assert!(stderr.contains("no space left"), "{stderr}");
    verify_store(&root).unwrap();

    // Free space: remove the small image and prune; now the big one fits.
    store.remove_image(&small_ref).unwrap();
    store.prune().await.unwrap();
    let record = pull(&store, &big_ref, &opts).await.unwrap();
    // (skopeo compressed the tar layers on push, so digests differ from the layout's.)
    assert_eq!(record.layers.len(), 2);
    let report = verify_store(&root).unwrap();
    assert_eq!(report.images, 1);
    drop(store);
    drop(tmpfs);
}
