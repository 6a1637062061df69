//! Unpack while fetching (`pull_and_unpack`): layers land in the same snapshots, with the
//! same whiteouts, as unpacking after the pull gives; a layer that fails verification
//! leaves no snapshot, no blob and no temp directory. Needs root (overlayfs).

mod layers;

use executor::error::error_chain;
use executor::pull::{PullError, PullOptions, pull, pull_and_unpack};
use executor::reference::ImageSource;
use executor::snapshot::{Snapshotter, chain_ids, layer_blobs};
use executor::store::Store;
use layers::{Layer, gzip, sha256, tempdir, tree};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("a/", 0o755)
        .file("a/file1", b"one")
        .file("a/file2", b"two")
        .dir("b/", 0o755)
        .file("b/x", b"x")
        .dir("c/", 0o755)
        .file("c/keep", b"keep")
        .dir("d/", 0o755)
        .file("d/old", b"old")
        .dir("e/", 0o711)
        .dir("usr/bin/", 0o755)
        .symlink("bin", "usr/bin")
        .file("usr/bin/sh", b"shell")
        .tar()
}

/// Several MiB that do not compress: the stream spans many writer batches.
fn big_layer() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let data: Vec<u8> = (0..6 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    Layer::new()
        .dir("big/", 0o755)
        .file("big/random.bin", &data)
        .tar()
}

/// Whiteouts of lower entries, in directories the layer lists: unpacked straight from
/// the stream.
fn whiteout_layer() -> Vec<u8> {
    Layer::new()
        .dir("a/", 0o755)
        .whiteout("a/.wh.file1")
        .whiteout(".wh.b")
        .dir("d/", 0o755)
        .whiteout("d/.wh..wh..opq")
        .file("d/new", b"new")
        .dir("big/", 0o755)
        .whiteout("big/.wh.random.bin")
        .tar()
}

/// Writes through the lower layer's `bin -> usr/bin` and hard-links a lower file: needs
/// an overlay mount, so it is unpacked from the verified blob instead of the stream.
fn mount_layer() -> Vec<u8> {
    Layer::new()
        .file("bin/tool", b"tool")
        .dir("c/", 0o755)
        .hardlink("c/keep-link", "c/keep")
        .tar()
}

/// Files in directories the layer does not list: `e` is a lower layer's (its mode 0711
/// comes from there, through an overlay mount), `fresh` nobody's. Unpacked before its
/// lowers are there, the layer takes both to be absent; `e` then sends it to its blob.
fn implicit_parents_layer() -> Vec<u8> {
    Layer::new()
        .file("e/file3", b"three")
        .file("fresh/f", b"f")
        .tar()
}

/// An OCI layout of one image (`v1`) with these layer tars, gzip-compressed; the config
/// lists `diff_ids` (the true ones when `None`).
fn write_layout(dir: &Path, tars: &[Vec<u8>], diff_ids: Option<Vec<String>>) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256(bytes);
        fs::write(blobs.join(digest.digest()), bytes).unwrap();
        (digest.to_string(), bytes.len())
    };
    let layers: Vec<_> = tars
        .iter()
        .map(|tar| {
            let (digest, size) = put(&gzip(tar));
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": size,
            })
        })
        .collect();
    let diff_ids = diff_ids.unwrap_or_else(|| tars.iter().map(|t| sha256(t).to_string()).collect());
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers,
    });
    let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn source(layout: &Path) -> ImageSource {
    ImageSource::parse(&format!("oci-layout:{}:v1", layout.display())).unwrap()
}

fn options() -> PullOptions {
    PullOptions {
        progress: None,
        ..PullOptions::default()
    }
}

/// A store and its snapshot cache, as `executor run` lays them out.
fn open(root: &Path) -> (Store, Snapshotter) {
    let store = Store::open(root).unwrap();
    let snaps = Snapshotter::new(root.join("snapshots")).unwrap();
    assert!(snaps.uses_overlay(), "these tests need overlayfs");
    (store, snaps)
}

/// Every snapshot's tree, without inode numbers and mtimes (directories touched while
/// unpacking differ in those whichever way they were written).
fn shapes(dirs: &[PathBuf]) -> Vec<Vec<(PathBuf, String)>> {
    dirs.iter()
        .map(|d| {
            tree(d)
                .into_iter()
                .map(|(k, v)| (k, v.split(" mtime=").next().unwrap().to_owned()))
                .collect()
        })
        .collect()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn layers_unpacked_while_fetching_match_unpacking_after_the_pull() {
    let tmp = tempdir();
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        &[
            base_layer(),
            big_layer(),
            whiteout_layer(),
            mount_layer(),
            implicit_parents_layer(),
        ],
        None,
    );

    let (store, snaps) = open(&tmp.path().join("streamed"));
    let record = pull_and_unpack(&store, &snaps, &source(&layout), &options())
        .await
        .unwrap();
    let config = store.read_config(&record).unwrap();
    let layers = layer_blobs(&config, &record.layers, |d| store.blob_path(d)).unwrap();
    let chains = chain_ids(layers.iter().map(|l| &l.diff_id));
    // Every layer is committed by the pull itself, and its blob stored.
    for (layer, chain) in layers.iter().zip(&chains) {
        assert!(snaps.snapshot_dir(chain).is_dir(), "{chain} not unpacked");
        assert!(layer.path.is_file(), "{} not stored", layer.digest);
    }
    assert_eq!(snaps.snapshots().unwrap().len(), 5);
    let streamed = snaps.prepare(&layers).unwrap();
    assert_eq!(
        snaps.snapshots().unwrap().len(),
        5,
        "prepare unpacked again"
    );
    // Whiteouts in overlayfs form: a 0/0 device and the opaque xattr's directory.
    let wh = fs::symlink_metadata(streamed[2].join("b")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let wh = fs::symlink_metadata(streamed[2].join("big/random.bin")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(fs::read(streamed[3].join("usr/bin/tool")).unwrap(), b"tool");
    assert_eq!(fs::read(streamed[4].join("e/file3")).unwrap(), b"three");
    assert_eq!(fs::read(streamed[4].join("fresh/f")).unwrap(), b"f");
    assert!(entries(&tmp.path().join("streamed/snapshots/tmp")).is_empty());
    assert!(entries(&tmp.path().join("streamed/tmp")).is_empty());

    // The same image fetched first and unpacked after.
    let (store_b, snaps_b) = open(&tmp.path().join("after"));
    let record_b = pull(&store_b, &source(&layout), &options()).await.unwrap();
    assert!(snaps_b.snapshots().unwrap().is_empty());
    let layers_b = layer_blobs(&config, &record_b.layers, |d| store_b.blob_path(d)).unwrap();
    let after = snaps_b.prepare(&layers_b).unwrap();
    assert_eq!(shapes(&streamed), shapes(&after));
}

#[tokio::test]
async fn blobs_fetched_earlier_are_unpacked_from_the_store() {
    let tmp = tempdir();
    let layout = tmp.path().join("layout");
    write_layout(&layout, &[base_layer(), whiteout_layer()], None);
    let (store, snaps) = open(&tmp.path().join("root"));
    pull(&store, &source(&layout), &options()).await.unwrap();
    assert!(snaps.snapshots().unwrap().is_empty());
    pull_and_unpack(&store, &snaps, &source(&layout), &options())
        .await
        .unwrap();
    assert_eq!(snaps.snapshots().unwrap().len(), 2);
}

#[tokio::test]
async fn a_layer_failing_its_diff_id_leaves_no_snapshot_no_blob_and_no_temp_directory() {
    let tmp = tempdir();
    let layout = tmp.path().join("layout");
    let tars = [base_layer(), big_layer()];
    // The config claims other content for the big layer than its blob has.
    let wrong = sha256(b"not this layer").to_string();
    write_layout(
        &layout,
        &tars,
        Some(vec![sha256(&tars[0]).to_string(), wrong.clone()]),
    );
    let big_blob = sha256(&gzip(&tars[1]));

    let root = tmp.path().join("root");
    let (store, snaps) = open(&root);
    let err = pull_and_unpack(&store, &snaps, &source(&layout), &options())
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Unpack { .. }), "{err:?}");
    let text = error_chain(&err);
    assert!(
        text.contains(&big_blob.to_string()) && text.contains(&wrong),
        "error names neither the layer nor the diff id: {text}"
    );
    assert!(!text.contains('\n'), "{text}");
    // The bad layer: neither its blob nor its snapshot; the good base layer is kept.
    assert!(
        !store.blob_path(&big_blob).exists(),
        "bad layer's blob stored"
    );
    assert!(store.has_blob(&sha256(&gzip(&tars[0])), gzip(&tars[0]).len() as u64));
    assert_eq!(snaps.snapshots().unwrap().len(), 1, "only the base layer");
    assert!(
        entries(&root.join("snapshots/tmp")).is_empty(),
        "temp snapshot left"
    );
    assert!(entries(&root.join("tmp")).is_empty(), "temp blob left");
    assert!(store.images().unwrap().is_empty(), "failed pull recorded");
}
