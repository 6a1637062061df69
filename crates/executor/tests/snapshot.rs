//! Snapshots: whiteouts across layers, sharing by chain ID, unpack-once, crash leftovers,
//! and per-run root file systems that never modify a snapshot. Needs root (overlayfs).

mod layers;

use executor::snapshot::{
    RootfsKind, SnapshotError, Snapshotter, chain_ids, cleanup_rootfs, copy_rootfs, mount_rootfs,
};
use layers::{Layer, blob, is_mounted, tempdir, tree};
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
        .dir("d/sub/", 0o755)
        .file("d/sub/deep", b"deep")
        .dir("usr/bin/", 0o755)
        .symlink("bin", "usr/bin")
        .file("usr/bin/sh", b"shell")
        .tar()
}

fn change_layer() -> Vec<u8> {
    Layer::new()
        .whiteout("a/.wh.file1")
        .whiteout(".wh.b")
        .dir("d/", 0o755)
        .whiteout("d/.wh..wh..opq")
        .file("d/new", b"new")
        .file("same", b"added and whited out in one layer")
        .whiteout(".wh.same")
        // Merged /usr: written through the lower layer's `bin -> usr/bin`.
        .file("bin/tool", b"tool")
        // A hard link to a file of the lower layer.
        .hardlink("c/keep-link", "c/keep")
        .tar()
}

fn assert_merged_view(root: &Path) {
    assert!(
        !root.join("a/file1").exists(),
        "whiteout hides the lower file"
    );
    assert_eq!(fs::read(root.join("a/file2")).unwrap(), b"two");
    assert!(!root.join("b").exists(), "whiteout hides the lower dir");
    assert_eq!(fs::read(root.join("c/keep")).unwrap(), b"keep");
    assert_eq!(fs::read(root.join("c/keep-link")).unwrap(), b"keep");
    assert!(
        !root.join("d/old").exists(),
        "opaque dir hides lower content"
    );
    assert!(
        !root.join("d/sub").exists(),
        "opaque dir hides lower subdirs"
    );
    assert_eq!(fs::read(root.join("d/new")).unwrap(), b"new");
    assert_eq!(
        fs::read(root.join("same")).unwrap(),
        b"added and whited out in one layer",
        "a whiteout never hides an entry of its own layer"
    );
    assert!(
        fs::symlink_metadata(root.join("bin"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(root.join("usr/bin/tool")).unwrap(), b"tool");
    assert_eq!(fs::read(root.join("usr/bin/sh")).unwrap(), b"shell");
}

#[test]
fn whiteouts_apply_across_layers_in_overlay_and_copy_roots() {
    let tmp = tempdir();
    let snaps = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
    let layers = vec![
        blob(tmp.path(), &base_layer()),
        blob(tmp.path(), &change_layer()),
    ];
    let dirs = snaps.prepare(&layers).unwrap();
    assert_eq!(dirs.len(), 2);
    // The upper snapshot stores the deletions the overlayfs way.
    let wh = fs::symlink_metadata(dirs[1].join("b")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0/0 device"
    );

    let run = tmp.path().join("run-overlay");
    let rootfs = mount_rootfs(&dirs, &run).unwrap();
    assert_eq!(rootfs.kind(), RootfsKind::Overlay);
    assert_merged_view(rootfs.path());
    rootfs.unmount().unwrap();
    assert!(!run.join("rootfs").exists());

    let run = tmp.path().join("run-copy");
    let rootfs = copy_rootfs(&dirs, &run).unwrap();
    assert_eq!(rootfs.kind(), RootfsKind::Copy);
    assert!(!is_mounted(rootfs.path()));
    assert_merged_view(rootfs.path());
    rootfs.unmount().unwrap();
    assert!(!run.join("rootfs").exists());
}

/// A layer that lists every directory it writes in: unpacked straight into its snapshot.
fn direct_layer() -> Layer {
    let mut l = Layer::new();
    l.dir("a/", 0o755)
        .whiteout("a/.wh.file1")
        .whiteout(".wh.b")
        .dir("d/", 0o755)
        .whiteout("d/.wh..wh..opq")
        .file("d/new", b"new")
        .file("same", b"added and whited out in one layer")
        .whiteout(".wh.same");
    l
}

fn assert_direct_view(root: &Path) {
    assert!(!root.join("a/file1").exists());
    assert_eq!(fs::read(root.join("a/file2")).unwrap(), b"two");
    assert!(!root.join("b").exists());
    assert!(!root.join("d/old").exists() && !root.join("d/sub").exists());
    assert_eq!(fs::read(root.join("d/new")).unwrap(), b"new");
    assert_eq!(
        fs::read(root.join("same")).unwrap(),
        b"added and whited out in one layer"
    );
    assert_eq!(fs::read(root.join("usr/bin/sh")).unwrap(), b"shell");
}

// lgetxattr, which std and nix do not wrap, reads the opaque mark.
#[allow(unsafe_code)]
fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 1];
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path and name; buffer pointer and length passed together.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            1,
        )
    };
    n == 1 && value[0] == b'y'
}

#[test]
fn layers_are_unpacked_into_their_snapshot_with_overlayfs_whiteouts() {
    let tmp = tempdir();
    let snaps = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
    let layers = vec![
        blob(tmp.path(), &base_layer()),
        blob(tmp.path(), &direct_layer().tar()),
    ];
    let dirs = snaps.prepare(&layers).unwrap();
    // The opaque marker is an xattr only the direct unpack writes (through a mount the
    // lower entries are deleted one by one).
    assert!(is_opaque(&dirs[1].join("d")), "opaque whiteout as an xattr");
    let wh = fs::symlink_metadata(dirs[1].join("a/file1")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    for (name, copy) in [("overlay", false), ("copy", true)] {
        let run = tmp.path().join(name);
        let rootfs = if copy {
            copy_rootfs(&dirs, &run).unwrap()
        } else {
            mount_rootfs(&dirs, &run).unwrap()
        };
        assert_direct_view(rootfs.path());
        rootfs.unmount().unwrap();
    }
}

#[test]
fn layers_that_need_the_lower_layers_are_unpacked_through_an_overlay() {
    // Each layer adds one entry that only resolves against a lower layer; the result must be
    // what the merged view gives, whatever way the layer was unpacked.
    type AddEntries = fn(&mut Layer);
    let cases: [(&str, AddEntries); 3] = [
        ("merged /usr", |l| {
            l.file("bin/tool", b"tool");
        }),
        ("hard link to a lower file", |l| {
            l.dir("c/", 0o755).hardlink("c/keep-link", "c/keep");
        }),
        ("unlisted lower parent", |l| {
            l.file("p/q/new", b"new");
        }),
    ];
    for (what, add) in cases {
        let tmp = tempdir();
        let snaps = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
        let base = {
            let mut b = Layer::new();
            b.dir("a/", 0o755)
                .file("a/file1", b"one")
                .file("a/file2", b"two")
                .dir("b/", 0o755)
                .file("b/x", b"x")
                .dir("c/", 0o755)
                .file("c/keep", b"keep")
                .dir("d/", 0o755)
                .file("d/old", b"old")
                .dir("d/sub/", 0o755)
                .dir("usr/bin/", 0o755)
                .symlink("bin", "usr/bin")
                .file("usr/bin/sh", b"shell")
                .dir("p/", 0o700)
                .dir_with("p/q/", 0o750, 1_000_000);
            b.tar()
        };
        let mut top = direct_layer();
        add(&mut top);
        let layers = vec![blob(tmp.path(), &base), blob(tmp.path(), &top.tar())];
        let dirs = snaps.prepare(&layers).unwrap();
        let run = tmp.path().join("run");
        let rootfs = mount_rootfs(&dirs, &run).unwrap();
        let root = rootfs.path();
        assert_direct_view(root);
        match what {
            "merged /usr" => {
                assert!(fs::symlink_metadata(root.join("bin")).unwrap().is_symlink());
                assert_eq!(fs::read(root.join("usr/bin/tool")).unwrap(), b"tool");
            }
            "hard link to a lower file" => {
                assert_eq!(fs::read(root.join("c/keep-link")).unwrap(), b"keep");
            }
            _ => {
                assert_eq!(fs::read(root.join("p/q/new")).unwrap(), b"new");
                // The lower directories' modes survive, as an overlay copy-up keeps them.
                let mode = |p: &str| fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
                assert_eq!((mode("p"), mode("p/q")), (0o700, 0o750), "{what}");
            }
        }
        rootfs.unmount().unwrap();
    }
}

#[test]
fn images_sharing_base_layers_share_snapshots_and_a_second_prepare_unpacks_nothing() {
    let tmp = tempdir();
    let snaps = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
    let base = blob(tmp.path(), &base_layer());
    let top_a = blob(tmp.path(), &change_layer());
    let top_b = blob(tmp.path(), &Layer::new().file("only-in-b", b"b").tar());
    let a = snaps.prepare(&[base.clone(), top_a.clone()]).unwrap();
    let b = snaps.prepare(&[base.clone(), top_b.clone()]).unwrap();
    assert_eq!(a[0], b[0], "the base snapshot is shared");
    assert_ne!(a[1], b[1]);
    assert_eq!(snaps.snapshots().unwrap().len(), 3);
    assert_eq!(
        a,
        chain_ids([&base.diff_id, &top_a.diff_id])
            .iter()
            .map(|c| snaps.snapshot_dir(c))
            .collect::<Vec<_>>()
    );

    let before: Vec<u64> = a.iter().map(|d| fs::metadata(d).unwrap().ino()).collect();
    let trees: Vec<_> = a.iter().map(|d| tree(d)).collect();
    // The blobs are gone: a prepare that unpacked anything would fail to open them.
    for l in [&base, &top_a] {
        fs::remove_file(&l.path).unwrap();
    }
    let again = snaps.prepare(&[base, top_a]).unwrap();
    assert_eq!(again, a);
    let after: Vec<u64> = again
        .iter()
        .map(|d| fs::metadata(d).unwrap().ino())
        .collect();
    assert_eq!(before, after, "the same directories, not re-created");
    assert_eq!(trees, again.iter().map(|d| tree(d)).collect::<Vec<_>>());
}

#[test]
fn a_wrong_diff_id_leaves_no_snapshot() {
    let tmp = tempdir();
    let root = tmp.path().join("snapshots");
    let snaps = Snapshotter::new(&root).unwrap();
    let mut layer = blob(tmp.path(), &base_layer());
    layer.diff_id = layers::sha256(b"something else");
    let err = snaps.prepare(std::slice::from_ref(&layer)).unwrap_err();
    assert!(matches!(err, SnapshotError::DiffIdMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    assert!(snaps.snapshots().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "no temp left"
    );

    // A corrupt upper layer: the lower snapshot stays, the failed one leaves no mount or dir.
    let good = blob(tmp.path(), &base_layer());
    let mut bad = blob(tmp.path(), &change_layer());
    fs::write(&bad.path, b"garbage").unwrap();
    bad.digest = layers::sha256(b"garbage");
    let err = snaps.prepare(&[good, bad]).unwrap_err();
    assert!(matches!(err, SnapshotError::Unpack { .. }), "{err}");
    assert_eq!(snaps.snapshots().unwrap().len(), 1);
    assert_eq!(
        fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "no temp left"
    );
}

#[test]
fn leftovers_of_a_killed_unpack_are_removed_at_open() {
    let tmp = tempdir();
    let root = tmp.path().join("snapshots");
    let snaps = Snapshotter::new(&root).unwrap();
    let dirs = snaps.prepare(&[blob(tmp.path(), &base_layer())]).unwrap();
    // What a process killed mid-unpack leaves: a temp dir with a half-written upper and the
    // overlay still mounted.
    let stale = root.join("tmp/unpack-killed");
    for d in ["upper", "work", "merged"] {
        fs::create_dir_all(stale.join(d)).unwrap();
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        dirs[0].display(),
        stale.join("upper").display(),
        stale.join("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &stale.join("merged"),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .unwrap();
    fs::write(stale.join("merged/half"), b"half").unwrap();
    assert!(is_mounted(&stale.join("merged")));

    let snaps = Snapshotter::new(&root).unwrap();
    assert!(!stale.exists());
    assert!(!is_mounted(&stale.join("merged")));
    assert_eq!(
        snaps.snapshots().unwrap().len(),
        1,
        "complete snapshots stay"
    );
}

#[test]
fn a_run_never_modifies_a_snapshot() {
    let tmp = tempdir();
    let snaps = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
    let dirs = snaps
        .prepare(&[
            blob(tmp.path(), &base_layer()),
            blob(tmp.path(), &change_layer()),
        ])
        .unwrap();
    let before: Vec<_> = dirs.iter().map(|d| tree(d)).collect();
    for (kind, run) in [("overlay", "run1"), ("copy", "run2")] {
        let run = tmp.path().join(run);
        let rootfs = if kind == "overlay" {
            mount_rootfs(&dirs, &run).unwrap()
        } else {
            copy_rootfs(&dirs, &run).unwrap()
        };
        let r = rootfs.path().to_owned();
        fs::write(r.join("a/file2"), b"changed").unwrap();
        fs::write(r.join("new-file"), b"new").unwrap();
        fs::remove_file(r.join("c/keep")).unwrap();
        fs::remove_dir_all(r.join("usr")).unwrap();
        fs::set_permissions(
            r.join("a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        assert!(!r.join("c/keep").exists());
        rootfs.unmount().unwrap();
        let after: Vec<_> = dirs.iter().map(|d| tree(d)).collect();
        assert_eq!(before, after, "{kind}: snapshots unchanged");
    }
}

#[test]
fn cleanup_rootfs_unmounts_a_leftover_mount() {
    let tmp = tempdir();
    let snaps = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
    let dirs = snaps.prepare(&[blob(tmp.path(), &base_layer())]).unwrap();
    let run = tmp.path().join("run");
    let rootfs = mount_rootfs(&dirs, &run).unwrap();
    fs::write(rootfs.path().join("scratch"), b"x").unwrap();
    // The executor died: only the run directory is known.
    let _ = rootfs.detach();
    assert!(is_mounted(&run.join("rootfs")));
    cleanup_rootfs(&run).unwrap();
    assert!(!is_mounted(&run.join("rootfs")));
    for d in ["rootfs", "upper", "work"] {
        assert!(!run.join(d).exists(), "{d} removed");
    }
    cleanup_rootfs(&run).unwrap();
    let files: Vec<PathBuf> = fs::read_dir(&dirs[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.iter().any(|f| f.ends_with("scratch")));
}

#[test]
fn concurrent_prepares_of_the_same_image_all_succeed_with_one_snapshot() {
    let tmp = tempdir();
    let root = tmp.path().join("snapshots");
    let layers = vec![
        blob(tmp.path(), &base_layer()),
        blob(tmp.path(), &change_layer()),
    ];
    // Without the per-chain lock, the losers' renames onto a finished snapshot would fail.
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let snaps = Snapshotter::new(&root).unwrap();
                    snaps.prepare(&layers)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = results[0].as_ref().unwrap();
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), first);
    }
    let snaps = Snapshotter::new(&root).unwrap();
    assert_eq!(snaps.snapshots().unwrap().len(), 2);
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

#[test]
fn layer_blobs_pair_manifest_layers_with_diff_ids() {
    use oci_spec::image::{DescriptorBuilder, ImageConfiguration, MediaType};
    let tmp = tempdir();
    let l0 = blob(tmp.path(), &base_layer());
    let l1 = blob(tmp.path(), &change_layer());
    let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [l0.diff_id.to_string(), l1.diff_id.to_string()]},
    }))
    .unwrap();
    let descs: Vec<_> = [&l0, &l1]
        .iter()
        .map(|l| {
            DescriptorBuilder::default()
                .media_type(MediaType::ImageLayerGzip)
                .digest(l.digest.clone())
                .size(fs::metadata(&l.path).unwrap().len())
                .build()
                .unwrap()
        })
        .collect();
    let blobs =
        executor::snapshot::layer_blobs(&config, &descs, |d| tmp.path().join(d.digest())).unwrap();
    assert_eq!(blobs, vec![l0.clone(), l1]);
    let err =
        executor::snapshot::layer_blobs(&config, &descs[..1], |d| tmp.path().join(d.digest()))
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "image has 1 layers but 2 diff ids in its config"
    );
}

#[test]
fn images_with_many_layers_mount() {
    let tmp = tempdir();
    // Deep temp paths make each lowerdir long: 80 layers exceed one page of mount options.
    let deep = tmp
        .path()
        .join("a-rather-long-directory-name-to-make-paths-long".repeat(2));
    let snaps = Snapshotter::new(deep.join("snapshots")).unwrap();
    let layers: Vec<_> = (0..80)
        .map(|i| {
            let tar = Layer::new()
                .file(&format!("layer-{i}"), format!("{i}").as_bytes())
                .file("top", format!("{i}").as_bytes())
                .tar();
            blob(tmp.path(), &tar)
        })
        .collect();
    let dirs = snaps.prepare(&layers).unwrap();
    let run = tmp.path().join("run");
    let rootfs = mount_rootfs(&dirs, &run).unwrap();
    assert_eq!(rootfs.kind(), RootfsKind::Overlay);
    assert_eq!(fs::read_to_string(rootfs.path().join("top")).unwrap(), "79");
    assert_eq!(
        fs::read_to_string(rootfs.path().join("layer-0")).unwrap(),
        "0"
    );
    rootfs.unmount().unwrap();
}

#[test]
fn removed_snapshots_are_gone_and_prepared_again_on_demand() {
    let tmp = tempdir();
    let snaps = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
    let layers = vec![
        blob(tmp.path(), &base_layer()),
        blob(tmp.path(), &change_layer()),
    ];
    let dirs = snaps.prepare(&layers).unwrap();
    let chains = chain_ids(layers.iter().map(|l| &l.diff_id));
    snaps.remove(&chains[1]).unwrap();
    assert!(!dirs[1].exists());
    assert!(dirs[0].exists(), "only the named snapshot goes");
    snaps.remove(&chains[1]).unwrap();
    assert_eq!(snaps.snapshots().unwrap(), vec![chains[0].clone()]);
    assert_eq!(snaps.prepare(&layers).unwrap(), dirs);
    let other = blob(tmp.path(), &Layer::new().file("other", b"o").tar());
    snaps.prepare(std::slice::from_ref(&other)).unwrap();
    assert_eq!(snaps.snapshots().unwrap().len(), 3);
    let keep = chains.iter().cloned().collect();
    assert_eq!(
        snaps.prune(&keep).unwrap(),
        1,
        "only the unreferenced chain goes"
    );
    let mut left = snaps.snapshots().unwrap();
    left.sort_by_key(|d| d.to_string());
    let mut expected = chains.clone();
    expected.sort_by_key(|d| d.to_string());
    assert_eq!(left, expected);
    assert_merged_view(&mount_and_keep(&dirs, &tmp.path().join("run")));
    cleanup_rootfs(&tmp.path().join("run")).unwrap();
}

fn mount_and_keep(dirs: &[PathBuf], run: &Path) -> PathBuf {
    mount_rootfs(dirs, run).unwrap().detach()
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Layers as another tool writes them: what `umoci repack` records for deletions must
/// unpack to the same tree `umoci unpack` produces.
#[test]
fn layers_made_by_umoci_unpack_as_umoci_unpacks_them() {
    use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
    let tmp = tempdir();
    let layout = tmp.path().join("layout");
    layers::write_oci_layout(&layout, "v1", &[base_layer()], serde_json::json!({}));
    let work = tmp.path().join("work");
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    run(
        "umoci",
        &[
            "unpack".as_ref(),
            "--image".as_ref(),
            image("v1").as_ref(),
            work.as_os_str(),
        ],
    );
    let r = work.join("rootfs");
    fs::remove_file(r.join("a/file1")).unwrap();
    fs::remove_dir_all(r.join("b")).unwrap();
    fs::remove_dir_all(r.join("d")).unwrap();
    fs::create_dir(r.join("d")).unwrap();
    fs::write(r.join("d/new"), b"new").unwrap();
    fs::remove_file(r.join("c/keep")).unwrap();
    std::os::unix::fs::symlink("/a/file2", r.join("c/keep")).unwrap();
    fs::write(r.join("usr/bin/tool"), b"tool").unwrap();
    run(
        "umoci",
        &[
            "repack".as_ref(),
            "--image".as_ref(),
            image("v2").as_ref(),
            work.as_os_str(),
        ],
    );

    let index = ImageIndex::from_file(layout.join("index.json")).unwrap();
    let desc = index
        .manifests()
        .iter()
        .find(|m| {
            m.annotations()
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                .is_some_and(|t| t == "v2")
        })
        .unwrap();
    let blob = |d: &oci_spec::image::Digest| layout.join("blobs/sha256").join(d.digest());
    let manifest = ImageManifest::from_file(blob(desc.digest())).unwrap();
    let config = ImageConfiguration::from_file(blob(manifest.config().digest())).unwrap();
    assert_eq!(manifest.layers().len(), 2, "umoci added one layer");
    let blobs = executor::snapshot::layer_blobs(&config, manifest.layers(), blob).unwrap();
    let snaps = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
    let dirs = snaps.prepare(&blobs).unwrap();
    let ours = mount_rootfs(&dirs, &tmp.path().join("run")).unwrap();

    let theirs = tmp.path().join("theirs");
    run(
        "umoci",
        &[
            "unpack".as_ref(),
            "--image".as_ref(),
            image("v2").as_ref(),
            theirs.as_os_str(),
        ],
    );
    // Inode numbers and mtimes of directories touched by the unpack naturally differ.
    let shape = |root: &Path| -> Vec<(PathBuf, String)> {
        tree(root)
            .into_iter()
            .map(|(k, v)| (k, v.split(" mtime=").next().unwrap().to_owned()))
            .collect()
    };
    let (a, b) = (shape(ours.path()), shape(&theirs.join("rootfs")));
    ours.unmount().unwrap();
    assert_eq!(a, b);
    assert!(a.iter().any(|(p, _)| p == Path::new("d/new")));
    assert!(!a.iter().any(|(p, _)| p == Path::new("b")));
}

const CHILD_ENV: &str = "EXECUTOR_TEST_KILLED_UNPACK_CHILD";

/// Not a test by itself: the process that `a_killed_unpack_leaves_nothing_that_looks_complete`
/// starts (this test binary again, with the environment variable set) and kills mid-unpack.
#[test]
fn killed_unpack_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let layer = |l: &serde_json::Value| executor::snapshot::LayerBlob {
        digest: l["digest"].as_str().unwrap().parse().unwrap(),
        diff_id: l["diff_id"].as_str().unwrap().parse().unwrap(),
        media_type: oci_spec::image::MediaType::from(l["media_type"].as_str().unwrap()),
        path: l["path"].as_str().unwrap().into(),
    };
    let layers: Vec<_> = v["layers"].as_array().unwrap().iter().map(layer).collect();
    let snaps = Snapshotter::new(v["root"].as_str().unwrap()).unwrap();
    snaps.prepare(&layers).unwrap();
}

#[test]
fn a_killed_unpack_leaves_nothing_that_looks_complete() {
    use std::io::Write;
    let tmp = tempdir();
    let root = tmp.path().join("snapshots");
    let base = blob(tmp.path(), &base_layer());
    let mut big = Layer::new();
    for i in 0..400 {
        big.file(&format!("big/f{i}"), &[b'x'; 1024]);
    }
    let big = big.tar();
    // The upper layer is read from a FIFO: the child blocks once it has what we wrote, so it
    // is certainly mid-unpack when it is killed, however loaded the machine is.
    let fifo = tmp.path().join("layer.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let top = executor::snapshot::LayerBlob {
        digest: layers::sha256(&big),
        diff_id: layers::sha256(&big),
        media_type: oci_spec::image::MediaType::ImageLayer,
        path: fifo.clone(),
    };
    let json = |l: &executor::snapshot::LayerBlob| {
        serde_json::json!({
            "digest": l.digest.to_string(), "diff_id": l.diff_id.to_string(),
            "media_type": l.media_type.to_string(), "path": l.path,
        })
    };
    let spec = serde_json::json!({"root": root, "layers": [json(&base), json(&top)]});
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["killed_unpack_child", "--exact", "--nocapture"])
        .env(CHILD_ENV, spec.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(&big[..big.len() / 2]).unwrap();
    // Wait until the child has written files of the half it got.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let started = || {
        fs::read_dir(root.join("tmp")).unwrap().any(|d| {
            let d = d.unwrap().path();
            d.join("upper/big/f50").exists()
        })
    };
    while !started() {
        assert!(
            std::time::Instant::now() < deadline,
            "child never started unpacking"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(writer);

    let chains = chain_ids([&base.diff_id, &top.diff_id]);
    let probe = root.join("sha256").join(chains[1].digest());
    assert!(!probe.exists(), "no snapshot for the killed layer");
    let leftovers: Vec<PathBuf> = fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(leftovers.len(), 1, "the killed unpack's temp dir is left");
    // This layer unpacks straight into its snapshot directory (no overlay mount); the
    // leftover is the half-written upper directory.
    assert!(leftovers[0].join("upper/big/f50").exists());

    let snaps = Snapshotter::new(&root).unwrap();
    assert!(!is_mounted(&leftovers[0].join("merged")));
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert_eq!(snaps.snapshots().unwrap(), vec![chains[0].clone()]);
    // The same layer from a complete blob now unpacks normally.
    let complete = blob(tmp.path(), &big);
    let dirs = snaps.prepare(&[base, complete]).unwrap();
    assert_eq!(fs::read_dir(dirs[1].join("big")).unwrap().count(), 400);
}

#[test]
fn without_overlayfs_snapshots_are_flattened_trees() {
    let tmp = tempdir();
    let probed = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
    assert!(
        probed.uses_overlay(),
        "overlayfs works on the test machines (as root)"
    );
    let snaps = probed.with_overlay(false);
    let base = blob(tmp.path(), &base_layer());
    let dirs = snaps
        .prepare(&[base.clone(), blob(tmp.path(), &change_layer())])
        .unwrap();
    assert_eq!(dirs.len(), 1, "one flattened tree");
    assert_merged_view(&dirs[0]);
    let before = tree(&dirs[0]);

    let run = tmp.path().join("run");
    let rootfs = copy_rootfs(&dirs, &run).unwrap();
    assert_merged_view(rootfs.path());
    fs::write(rootfs.path().join("a/file2"), b"changed").unwrap();
    rootfs.unmount().unwrap();
    assert_eq!(tree(&dirs[0]), before, "the run did not touch the snapshot");

    let other = snaps
        .prepare(&[
            base,
            blob(tmp.path(), &Layer::new().file("only-in-b", b"b").tar()),
        ])
        .unwrap();
    assert_eq!(
        snaps.snapshots().unwrap().len(),
        3,
        "the base tree is shared"
    );
    assert!(other[0].join("only-in-b").exists());
    assert!(
        other[0].join("a/file1").exists(),
        "b's chain has no whiteouts"
    );
}
