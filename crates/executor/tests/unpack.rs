//! Unpacking single layers: file types and metadata, compression, diff IDs, limits, and a
//! corpus of hostile layers that must never touch anything outside the destination.

mod layers;

use executor::unpack::{Compression, UnpackError, UnpackOptions, unpack_layer, unpack_stream};
use layers::{Layer, sha256, tempdir, tree};
use oci_spec::image::MediaType;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

fn unpack(tar: &[u8], dest: &Path) -> Result<executor::unpack::UnpackStats, UnpackError> {
    unpack_stream(tar, Compression::None, dest, &UnpackOptions::default())
}

/// Unpacks with the userspace path walk that replaces `openat2` on old kernels.
fn unpack_walk(tar: &[u8], dest: &Path) -> Result<executor::unpack::UnpackStats, UnpackError> {
    let opts = UnpackOptions {
        path_walk: true,
        ..Default::default()
    };
    unpack_stream(tar, Compression::None, dest, &opts)
}

type UnpackFn = fn(&[u8], &Path) -> Result<executor::unpack::UnpackStats, UnpackError>;
const RESOLVERS: [(&str, UnpackFn); 2] = [("openat2", unpack), ("path walk", unpack_walk)];

#[test]
fn files_dirs_links_devices_keep_their_metadata() {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let tar = Layer::new()
        .dir_with("etc/", 0o750, 1_500_000_000)
        .file_with(
            "etc/tool",
            b"#!/bin/sh\n",
            0o4755,
            1234,
            5678,
            1_400_000_000,
        )
        .file("etc/conf", b"a=1\n")
        .symlink("etc/link", "/etc/conf")
        .hardlink("etc/hard", "etc/conf")
        .device("etc/null", tar::EntryType::Char, 1, 3)
        .device("etc/fifo", tar::EntryType::Fifo, 0, 0)
        .dir_with("shared/", 0o2775, 1_500_000_000)
        .file("shared/rootfile", b"root:root")
        .tar();
    let stats = unpack(&tar, &root).unwrap();
    assert_eq!(
        stats.diff_id,
        sha256(&tar),
        "diff id is the sha256 of the tar"
    );
    assert_eq!(stats.entries, 9);

    let tool = fs::metadata(root.join("etc/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!((tool.uid(), tool.gid()), (1234, 5678));
    assert_eq!(tool.mtime(), 1_400_000_000);
    assert_eq!(fs::read(root.join("etc/tool")).unwrap(), b"#!/bin/sh\n");

    assert_eq!(
        fs::read_link(root.join("etc/link")).unwrap(),
        Path::new("/etc/conf"),
        "symlink targets are stored verbatim"
    );
    let conf = fs::metadata(root.join("etc/conf")).unwrap();
    let hard = fs::metadata(root.join("etc/hard")).unwrap();
    assert_eq!(conf.ino(), hard.ino(), "hard link shares the inode");
    assert_eq!(conf.nlink(), 2);

    let null = fs::symlink_metadata(root.join("etc/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(
        fs::symlink_metadata(root.join("etc/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    // Give the setgid dir a group after the fact, then unpack into it again: the new file
    // must still be root:root as the tar says, not inherit the directory's group.
    std::os::unix::fs::chown(root.join("shared"), None, Some(50)).unwrap();
    let again = Layer::new().file("shared/second", b"x").tar();
    unpack(&again, &root).unwrap();
    let second = fs::metadata(root.join("shared/second")).unwrap();
    assert_eq!((second.uid(), second.gid()), (0, 0));

    let etc = fs::metadata(root.join("etc")).unwrap();
    assert_eq!(etc.permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        etc.mtime(),
        1_500_000_000,
        "dir mtime set after its children"
    );
}

#[test]
fn gzip_zstd_and_plain_layers_unpack_alike() {
    let tar = Layer::new()
        .dir("bin/", 0o755)
        .file("bin/hello", b"hello world")
        .tar();
    let tmp = tempdir();
    let mut trees = Vec::new();
    for (name, media_type, bytes) in [
        ("plain", MediaType::ImageLayer, tar.clone()),
        ("gzip", MediaType::ImageLayerGzip, layers::gzip(&tar)),
        ("zstd", MediaType::ImageLayerZstd, layers::zstd(&tar)),
        (
            "docker",
            MediaType::Other("application/vnd.docker.image.rootfs.diff.tar.gzip".into()),
            layers::gzip(&tar),
        ),
    ] {
        let blob = tmp.path().join(format!("{name}.blob"));
        fs::write(&blob, bytes).unwrap();
        let dest = tmp.path().join(name);
        fs::create_dir(&dest).unwrap();
        let stats = unpack_layer(&blob, &media_type, &dest, &UnpackOptions::default()).unwrap();
        assert_eq!(
            stats.diff_id,
            sha256(&tar),
            "{name}: diff id of the uncompressed tar"
        );
        assert_eq!(fs::read(dest.join("bin/hello")).unwrap(), b"hello world");
        trees.push(
            tree(&dest)
                .into_iter()
                .map(|(k, v)| (k, v.split(" ino=").next().unwrap().to_owned()))
                .collect::<Vec<_>>(),
        );
    }
    assert!(trees.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn corrupt_streams_and_unknown_media_types_fail_clearly() {
    let tmp = tempdir();
    let blob = tmp.path().join("blob");
    fs::write(&blob, b"definitely not gzip").unwrap();
    let err = unpack_layer(
        &blob,
        &MediaType::ImageLayerGzip,
        tmp.path(),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Read(_)), "{err}");
    let err = unpack_layer(
        &blob,
        &MediaType::Other("application/x-rar".into()),
        tmp.path(),
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported layer media type application/x-rar"
    );
    let err = unpack_layer(
        &tmp.path().join("missing"),
        &MediaType::ImageLayer,
        tmp.path(),
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("cannot open layer blob "),
        "{err}"
    );
}

#[test]
fn tar_bombs_hit_the_limits() {
    let tmp = tempdir();
    let mut layer = Layer::new();
    for i in 0..20 {
        layer.file(&format!("f{i}"), &[0u8; 4096]);
    }
    let tar = layer.tar();
    let err = unpack_stream(
        &tar[..],
        Compression::None,
        tmp.path(),
        &UnpackOptions {
            max_bytes: 16 * 1024,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer exceeds the limit of 16384 uncompressed bytes"
    );
    let err = unpack_stream(
        &tar[..],
        Compression::None,
        tmp.path(),
        &UnpackOptions {
            max_entries: 10,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "layer exceeds the limit of 10 entries");
}

#[test]
fn later_entries_replace_earlier_ones_and_write_through_symlinked_dirs() {
    for (_, unpack) in RESOLVERS {
        replace_and_write_through(unpack);
    }
}

fn replace_and_write_through(unpack: UnpackFn) {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let tar = Layer::new()
        .dir("usr/bin/", 0o755)
        .symlink("bin", "/usr/bin")
        .file("bin/tool", b"via absolute symlink")
        .symlink("lib", "usr/lib")
        .file("lib/libc.so", b"via relative symlink to a missing dir")
        .file("x", b"first")
        .file("x", b"second")
        .dir("y/", 0o755)
        .file("y/inner", b"gone with the dir")
        .file("y", b"a file now")
        .tar();
    let err = unpack(&tar, &root).unwrap_err();
    // `lib -> usr/lib` dangles: the entry below it cannot be placed and is named.
    assert!(err.to_string().contains("lib/libc.so"), "{err}");

    let root2 = tmp.path().join("root2");
    fs::create_dir(&root2).unwrap();
    let tar = Layer::new()
        .dir("usr/bin/", 0o755)
        .symlink("bin", "/usr/bin")
        .file("bin/tool", b"via absolute symlink")
        .file("x", b"first")
        .file("x", b"second")
        .dir("y/", 0o755)
        .file("y/inner", b"gone with the dir")
        .file("y", b"a file now")
        .dir("e/", 0o755)
        .dir("d/", 0o755)
        .file("d/a", b"in the dir")
        .symlink("d", "/e")
        .file("d/b", b"through the new symlink")
        .tar();
    unpack(&tar, &root2).unwrap();
    assert_eq!(
        fs::read(root2.join("e/b")).unwrap(),
        b"through the new symlink"
    );
    assert!(!root2.join("e/a").exists());
    assert_eq!(
        fs::read(root2.join("usr/bin/tool")).unwrap(),
        b"via absolute symlink"
    );
    assert!(
        fs::symlink_metadata(root2.join("bin"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(root2.join("x")).unwrap(), b"second");
    assert_eq!(fs::read(root2.join("y")).unwrap(), b"a file now");
}

/// Each hostile layer is unpacked into `root` next to a canary directory; whether it fails or
/// is contained, the canary and everything else outside `root` must be byte-for-byte the same.
#[test]
fn hostile_layers_never_touch_the_host() {
    type MakeLayer = Box<dyn Fn(&Path) -> Vec<u8>>;
    let cases: Vec<(&str, MakeLayer)> = vec![
        (
            "dot-dot file",
            Box::new(|_| Layer::new().file("../canary/pwned", b"x").tar()),
        ),
        (
            "deep dot-dot",
            Box::new(|_| Layer::new().file("a/../../../canary/secret", b"x").tar()),
        ),
        (
            "absolute host path",
            Box::new(|c| {
                Layer::new()
                    .file(&format!("{}/secret", c.display()), b"x")
                    .tar()
            }),
        ),
        (
            "relative symlink escape then write",
            Box::new(|_| {
                Layer::new()
                    .symlink("evil", "../canary")
                    .file("evil/pwned", b"x")
                    .tar()
            }),
        ),
        (
            "absolute symlink to host dir then write",
            Box::new(|c| {
                Layer::new()
                    .dir(&format!("{}/", c.display()), 0o755)
                    .symlink("evil", &c.display().to_string())
                    .file("evil/secret", b"overwritten?")
                    .tar()
            }),
        ),
        (
            "symlink to host file then file entry of the same name",
            Box::new(|c| {
                Layer::new()
                    .symlink("link", &c.join("secret").display().to_string())
                    .file("link", b"overwritten?")
                    .tar()
            }),
        ),
        (
            "directory swapped for a symlink then written into",
            Box::new(|c| {
                Layer::new()
                    .dir("d/", 0o755)
                    .file("d/ok", b"fine")
                    .symlink("d", &c.display().to_string())
                    .file("d/secret", b"overwritten?")
                    .tar()
            }),
        ),
        (
            "hard link to a host file",
            Box::new(|c| {
                Layer::new()
                    .hardlink("stolen", &c.join("secret").display().to_string())
                    .tar()
            }),
        ),
        (
            "hard link through dot-dot",
            Box::new(|_| Layer::new().hardlink("stolen", "../canary/secret").tar()),
        ),
        (
            "hard link to a symlink pointing out, then written",
            Box::new(|c| {
                Layer::new()
                    .symlink("out", &c.join("secret").display().to_string())
                    .hardlink("alias", "out")
                    .file("alias", b"overwritten?")
                    .tar()
            }),
        ),
        (
            "whiteout through an escaping symlink",
            Box::new(|c| {
                Layer::new()
                    .symlink("evil", &c.display().to_string())
                    .whiteout("evil/.wh.secret")
                    .whiteout("../canary/.wh.secret")
                    .tar()
            }),
        ),
        (
            "opaque whiteout through an escaping symlink",
            Box::new(|_| {
                Layer::new()
                    .symlink("evil", "../../canary")
                    .whiteout("evil/.wh..wh..opq")
                    .tar()
            }),
        ),
        (
            "whiteout of the parent",
            Box::new(|_| Layer::new().whiteout(".wh..").whiteout("a/.wh..").tar()),
        ),
        (
            "symlink loop then written through",
            Box::new(|_| {
                Layer::new()
                    .symlink("a", "b")
                    .symlink("b", "a")
                    .file("a/x", b"x")
                    .tar()
            }),
        ),
        (
            "path through a regular file",
            Box::new(|_| Layer::new().file("f", b"x").file("f/g", b"y").tar()),
        ),
        (
            "hard link to itself",
            Box::new(|_| Layer::new().hardlink("self", "self").tar()),
        ),
        (
            "hard link to a directory",
            Box::new(|_| Layer::new().dir("d/", 0o755).hardlink("x", "d").tar()),
        ),
    ];
    for ((name, make), (resolver, unpack)) in cases
        .iter()
        .flat_map(|c| RESOLVERS.iter().map(move |r| (c, r)))
    {
        let name = format!("{name} ({resolver})");
        let tmp = tempdir();
        let canary = tmp.path().join("canary");
        fs::create_dir(&canary).unwrap();
        fs::write(canary.join("secret"), b"host secret").unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        let before = tree(&canary);
        let tar = make(&canary);
        let result = unpack(&tar, &root);
        assert_eq!(tree(&canary), before, "{name}: canary changed ({result:?})");
        let outside: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            outside.len(),
            2,
            "{name}: something was created next to the root"
        );
        if let Err(err) = result {
            // Failures name the entry.
            assert!(err.to_string().starts_with("layer entry "), "{name}: {err}");
        }
    }
}

#[test]
fn contained_entries_land_inside_the_root() {
    for (_, unpack) in RESOLVERS {
        contained(unpack);
    }
}

fn contained(unpack: UnpackFn) {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let tar = Layer::new()
        .file("../../etc/passwd", b"image passwd")
        .symlink("abs", "/etc")
        .file("abs/group", b"image group")
        .tar();
    unpack(&tar, &root).unwrap();
    assert_eq!(fs::read(root.join("etc/passwd")).unwrap(), b"image passwd");
    assert_eq!(fs::read(root.join("etc/group")).unwrap(), b"image group");
}

#[test]
// lgetxattr, which std and nix do not wrap, reads what the unpack set.
#[allow(unsafe_code)]
fn long_names_pax_ids_and_safe_xattrs_are_applied() {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, &long, &b"long"[..]).unwrap();
    // PAX xattrs: a user one is applied, an overlayfs one (which could redirect lookups into
    // other layers) is dropped.
    let mut h = tar::Header::new_ustar();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_pax_extensions([
        ("SCHILY.xattr.user.note", &b"hello"[..]),
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
    ])
    .unwrap();
    b.append_data(&mut h, "tagged", &b"x"[..]).unwrap();
    // Ids beyond the header's octal fields come in PAX records (as Go's archive/tar writes).
    let mut h = tar::Header::new_ustar();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_pax_extensions([
        ("uid", &b"3000000"[..]),
        ("gid", &b"3000001"[..]),
        ("mtime", &b"1600000000.123456"[..]),
    ])
    .unwrap();
    b.append_data(&mut h, "big-ids", &b"x"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    unpack(&tar, &root).unwrap();
    assert_eq!(fs::read(root.join(&long)).unwrap(), b"long");
    let get = |name: &str| {
        let mut buf = [0u8; 64];
        let path = std::ffi::CString::new(root.join("tagged").to_str().unwrap()).unwrap();
        let name = std::ffi::CString::new(name).unwrap();
        // SAFETY: valid C strings and a buffer with its length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        usize::try_from(n).ok().map(|n| buf[..n].to_vec())
    };
    assert_eq!(get("user.note").as_deref(), Some(&b"hello"[..]));
    assert_eq!(get("trusted.overlay.redirect"), None);
    let big = fs::metadata(root.join("big-ids")).unwrap();
    assert_eq!(
        (big.uid(), big.gid(), big.mtime()),
        (3_000_000, 3_000_001, 1_600_000_000)
    );
}

const NON_ROOT_CHILD_ENV: &str = "EXECUTOR_TEST_NON_ROOT_UNPACK_CHILD";

/// Not a test by itself: the unprivileged process `not_root_skips_devices_and_ownership`
/// starts (this test binary again, as uid 65534, with the environment variable set).
#[test]
fn non_root_unpack_child() {
    let Ok(spec) = std::env::var(NON_ROOT_CHILD_ENV) else {
        return;
    };
    let (tar, dest) = spec.split_once('|').unwrap();
    let tar = fs::read(tar).unwrap();
    unpack(&tar, Path::new(dest)).unwrap();
}

#[test]
fn not_root_skips_devices_and_ownership() {
    use std::os::unix::process::CommandExt;
    let tmp = tempdir();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let dest = tmp.path().join("root");
    fs::create_dir(&dest).unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o777)).unwrap();
    let tar_path = tmp.path().join("layer.tar");
    let tar = Layer::new()
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .device("dev/fifo", tar::EntryType::Fifo, 0, 0)
        .file_with("owned", b"data", 0o640, 1234, 5678, 1_500_000_000)
        .tar();
    fs::write(&tar_path, &tar).unwrap();
    // The build directory may not be reachable for uid 65534 (a checkout under /root).
    let exe = tmp.path().join("test-binary");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let out = std::process::Command::new(&exe)
        .args(["non_root_unpack_child", "--exact", "--nocapture"])
        .env(
            NON_ROOT_CHILD_ENV,
            format!("{}|{}", tar_path.display(), dest.display()),
        )
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dest.join("dev/null").exists(),
        "device nodes need root: skipped"
    );
    assert!(
        fs::symlink_metadata(dest.join("dev/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let owned = fs::metadata(dest.join("owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid()),
        (65534, 65534),
        "ownership needs root"
    );
    assert_eq!(owned.permissions().mode() & 0o777, 0o640);
    assert_eq!(owned.mtime(), 1_500_000_000);
}

/// Files are created with their mode and chmod-ed only when the umask (022 here) would cut
/// bits or the mode has special bits: either way they end up with exactly the tar's mode.
#[test]
fn file_modes_survive_the_umask() {
    let modes = [
        0o666, 0o777, 0o640, 0o600, 0o755, 0o1755, 0o2711, 0o4700, 0o000,
    ];
    let mut layer = Layer::new();
    for mode in modes {
        layer.file_with(&format!("f{mode:o}"), b"x", mode, 0, 0, 1);
    }
    let tar = layer.tar();
    let tmp = tempdir();
    unpack(&tar, tmp.path()).unwrap();
    for mode in modes {
        let meta = fs::metadata(tmp.path().join(format!("f{mode:o}"))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "f{mode:o}");
    }
}

#[test]
fn an_upper_unpacked_before_its_lowers_lists_what_it_took_to_be_absent() {
    use executor::unpack::{lowers_lack, unpack_stream_before_lowers};
    let tar = Layer::new()
        .dir("listed/", 0o755)
        .file("listed/f", b"f")
        .file("x/y/z", b"z")
        .whiteout("gone/.wh.old")
        .tar();
    let tmp = tempdir();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let stats = unpack_stream_before_lowers(
        tar.as_slice(),
        Compression::None,
        &upper,
        &UnpackOptions::default(),
    )
    .unwrap();
    // The unlisted parents, and the directory of a whiteout this layer does not have.
    assert_eq!(
        stats.assumed_absent,
        [b"x".to_vec(), b"x/y".to_vec(), b"gone".to_vec()]
    );
    assert_eq!(fs::read(upper.join("x/y/z")).unwrap(), b"z");

    let lower = tmp.path().join("lower");
    fs::create_dir_all(lower.join("elsewhere")).unwrap();
    assert!(lowers_lack(
        &stats.assumed_absent,
        std::slice::from_ref(&lower)
    ));
    fs::create_dir_all(lower.join("x")).unwrap();
    assert!(!lowers_lack(
        &stats.assumed_absent,
        std::slice::from_ref(&lower)
    ));
    // A lower that cannot be opened counts as having everything.
    assert!(!lowers_lack(
        &stats.assumed_absent,
        &[tmp.path().join("missing")]
    ));
}
