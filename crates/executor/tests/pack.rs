//! `executor pack` against real tools: the layout it writes is read by skopeo and
//! unpacked by umoci, the same inputs give the same digest, and bad input leaves
//! nothing behind.

use executor::pack::{FileMapping, PackError, PackOptions, pack};
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tree to pack: an executable, a nested directory, a symbolic link.
fn host_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("tool");
    std::fs::write(&tool, "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("conf.d")).unwrap();
    std::fs::write(etc.join("conf.d/b.conf"), "b\n").unwrap();
    std::fs::write(etc.join("a.conf"), "a\n").unwrap();
    std::fs::set_permissions(etc.join("a.conf"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("a.conf", etc.join("link.conf")).unwrap();
    dir
}

fn options(host: &Path, layout: &Path, epoch: Option<u64>) -> PackOptions {
    PackOptions {
        layout: layout.to_owned(),
        tag: "v1".into(),
        files: vec![
            FileMapping::parse(&format!(
                "{}:/usr/local/bin/tool",
                host.join("tool").display()
            ))
            .unwrap(),
            FileMapping::parse(&format!("{}:/etc/sample", host.join("etc").display())).unwrap(),
        ],
        entrypoint: vec!["/usr/local/bin/tool".into()],
        cmd: vec!["--flag".into()],
        env: vec!["GREETING=hi".into()],
        workdir: Some("/work".into()),
        user: Some("0:0".into()),
        source_date_epoch: epoch,
        ..PackOptions::default()
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn tool(name: &str) -> Command {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(name).is_file());
    assert!(found, "{name} is not installed: run tests/install-deps.sh");
    Command::new(name)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn same_inputs_give_the_same_manifest_digest() {
    let host = host_tree();
    let out = tempfile::tempdir().unwrap();
    let a = pack(&options(
        host.path(),
        &out.path().join("a"),
        Some(1_700_000_000),
    ))
    .unwrap();
    let b = pack(&options(
        host.path(),
        &out.path().join("b"),
        Some(1_700_000_000),
    ))
    .unwrap();
    assert_eq!(a.manifest.digest(), b.manifest.digest());
    assert_eq!(a.layer, b.layer);
    // The time is part of the image: another SOURCE_DATE_EPOCH, another digest.
    let c = pack(&options(host.path(), &out.path().join("c"), Some(0))).unwrap();
    assert_ne!(a.manifest.digest(), c.manifest.digest());
    // Touching the host files does not change the image.
    std::fs::write(host.path().join("tool"), "#!/bin/sh\necho tool\n").unwrap();
    let d = pack(&options(
        host.path(),
        &out.path().join("d"),
        Some(1_700_000_000),
    ))
    .unwrap();
    assert_eq!(a.manifest.digest(), d.manifest.digest());
}

#[test]
fn writes_a_valid_layout_with_sorted_root_owned_entries() {
    let host = host_tree();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let packed = pack(&options(host.path(), &layout, Some(1_700_000_000))).unwrap();

    assert_eq!(
        read_json(&layout.join("oci-layout")),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    assert_eq!(manifests[0]["digest"], packed.manifest.digest().to_string());

    let manifest = read_json(&blob(&layout, packed.manifest.digest().as_ref()));
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let config = read_json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["rootfs"]["diff_ids"][0], packed.diff_id.to_string());
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/tool"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["--flag"]));
    assert_eq!(config["config"]["WorkingDir"], "/work");
    assert_eq!(config["config"]["User"], "0:0");
    let env = config["config"]["Env"].as_array().unwrap();
    assert!(env.contains(&serde_json::json!("GREETING=hi")));
    assert!(env.iter().any(|e| e.as_str().unwrap().starts_with("PATH=")));

    // The layer: parents before children, sorted, uid/gid 0, one mtime, modes kept.
    let layer = std::fs::File::open(blob(
        &layout,
        manifest["layers"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        assert_eq!(header.mtime().unwrap(), 1_700_000_000);
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        match path.as_str() {
            "usr/local/bin/tool" => {
                assert_eq!(header.mode().unwrap(), 0o755);
                let mut body = String::new();
                entry.read_to_string(&mut body).unwrap();
                assert_eq!(body, "#!/bin/sh\necho tool\n");
            }
            "etc/sample/a.conf" => assert_eq!(header.mode().unwrap(), 0o600),
            "etc/sample/link.conf" => {
                assert_eq!(header.entry_type(), tar::EntryType::Symlink);
                assert_eq!(entry.link_name().unwrap().unwrap(), Path::new("a.conf"));
            }
            _ => {}
        }
        seen.push(path);
    }
    assert_eq!(
        seen,
        [
            "etc",
            "etc/sample",
            "etc/sample/a.conf",
            "etc/sample/conf.d",
            "etc/sample/conf.d/b.conf",
            "etc/sample/link.conf",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/tool",
        ]
    );
}

#[test]
fn a_second_pack_moves_the_tag_and_keeps_other_tags() {
    let host = host_tree();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let first = pack(&options(host.path(), &layout, Some(1))).unwrap();
    let mut other = options(host.path(), &layout, Some(1));
    other.tag = "other".into();
    pack(&other).unwrap();
    let second = pack(&options(host.path(), &layout, Some(2))).unwrap();
    assert_ne!(first.manifest.digest(), second.manifest.digest());
    let index = read_json(&layout.join("index.json"));
    let mut tags: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("other".to_owned(), first.manifest.digest().to_string()),
            ("v1".to_owned(), second.manifest.digest().to_string()),
        ]
    );
    // No temporary file is left in the layout.
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "temporary file left: {name}");
    }
}

#[test]
fn skopeo_and_umoci_accept_the_layout() {
    let host = host_tree();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let packed = pack(&options(host.path(), &layout, None)).unwrap();

    let inspect: serde_json::Value = serde_json::from_str(&run_ok(
        tool("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:v1", layout.display())),
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], packed.manifest.digest().to_string());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1);

    let bundle = out.path().join("bundle");
    run_ok(
        tool("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:v1", layout.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    let tool_meta = std::fs::metadata(rootfs.join("usr/local/bin/tool")).unwrap();
    assert_eq!(tool_meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(tool_meta.uid(), 0);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/sample/link.conf")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/sample/conf.d/b.conf")).unwrap(),
        "b\n"
    );
}

#[test]
fn bad_inputs_are_named_and_leave_no_layout() {
    let host = host_tree();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");

    let mut missing = options(host.path(), &layout, None);
    missing.files.push(FileMapping {
        host: host.path().join("nope"),
        image: "/nope".into(),
    });
    let err = pack(&missing).unwrap_err();
    assert!(matches!(err, PackError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(!layout.exists(), "nothing may be written for bad input");

    let mut conflict = options(host.path(), &layout, None);
    conflict.files.push(FileMapping {
        host: host.path().join("etc/a.conf"),
        image: "/usr/local/bin/tool".into(),
    });
    let err = pack(&conflict).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("image path /usr/local/bin/tool is added twice"),
        "{err}"
    );

    let mut bad_tag = options(host.path(), &layout, None);
    bad_tag.tag = "no/slashes".into();
    assert!(matches!(pack(&bad_tag), Err(PackError::Tag(_))));

    let mut no_command = options(host.path(), &layout, None);
    no_command.entrypoint.clear();
    no_command.cmd.clear();
    assert!(matches!(pack(&no_command), Err(PackError::NoCommand)));
    assert!(!layout.exists());
}

#[test]
fn cli_packs_a_dynamic_binary_with_its_libraries_and_it_runs() {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let output = Command::new(env!("CARGO_BIN_EXE_executor"))
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["pack", "--tag", "echo", "--entrypoint", "/bin/echo"])
        .arg("--layout")
        .arg(&layout)
        .args(["--add-binary", "/bin/echo:/bin/echo"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let digest = String::from_utf8(output.stdout).unwrap();
    assert!(digest.trim().starts_with("sha256:"), "{digest}");

    let bundle = out.path().join("bundle");
    run_ok(
        tool("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:echo", layout.display()))
            .arg(&bundle),
    );
    // The binary runs inside the unpacked root: its loader and libraries came along.
    let said = run_ok(
        Command::new("chroot")
            .arg(bundle.join("rootfs"))
            .args(["/bin/echo", "from the image"]),
    );
    assert_eq!(said, "from the image\n");
}

#[test]
fn cli_rejects_a_bad_source_date_epoch() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_executor"))
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .args(["pack", "--tag", "x", "--entrypoint", "/x", "--layout"])
        .arg(out.path().join("layout"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SOURCE_DATE_EPOCH"), "{stderr}");
}
