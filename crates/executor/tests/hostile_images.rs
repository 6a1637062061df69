//! Hostile images (issue 8): manifests, indexes, configs and layers that lie about
//! themselves or attack the host, written into an OCI layout and fed to the `executor` CLI
//! (`pull`, then `bundle`). Each is refused with a clear one-line error at the stage that can
//! tell, or contained inside the bundle's root; either way the host outside the store is
//! byte-for-byte unchanged (the layout itself included), the store holds no image record or
//! temp file for a refused pull, and a refused bundle leaves no snapshot or bundle dir.
//! Layer-level cases (traversal, link escapes, bombs, corrupt streams) are in `unpack.rs`.
//! Needs root (overlayfs).

mod layers;

use layers::{Layer, gzip, sha256, tempdir, tree};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// An OCI layout under construction, with ways to lie.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: PathBuf) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir }
    }

    /// Stores a blob under its true digest; returns its descriptor (no media type).
    fn put(&self, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        self.put_as(digest.as_ref(), bytes);
        json!({"digest": digest.to_string(), "size": bytes.len()})
    }

    /// Stores `bytes` under a name that may not be their digest.
    fn put_as(&self, digest: &str, bytes: &[u8]) {
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs::write(self.dir.join("blobs/sha256").join(hex), bytes).unwrap();
    }

    /// A gzip layer blob; returns (descriptor, diff id).
    fn layer(&self, tar: &[u8]) -> (Value, String) {
        let mut desc = self.put(&gzip(tar));
        desc["mediaType"] = json!(GZIP_LAYER);
        (desc, sha256(tar).to_string())
    }

    fn config(&self, diff_ids: &[String]) -> Value {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let mut desc = self.put(&serde_json::to_vec(&config).unwrap());
        desc["mediaType"] = json!(CONFIG);
        desc
    }

    fn manifest_bytes(config: &Value, layers: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config,
            "layers": layers,
        }))
        .unwrap()
    }

    /// A manifest over `layers` with a config listing `diff_ids`; returns its descriptor.
    fn manifest(&self, layers: &[Value], diff_ids: &[String]) -> Value {
        let config = self.config(diff_ids);
        let mut desc = self.put(&Self::manifest_bytes(&config, layers));
        desc["mediaType"] = json!(MANIFEST);
        desc
    }

    /// The usual image: one layer from `tar`.
    fn image(&self, tar: &[u8]) -> Value {
        let (layer, diff_id) = self.layer(tar);
        self.manifest(&[layer], &[diff_id])
    }

    /// Points tag `v1` of `index.json` at `desc`.
    fn tag(&self, mut desc: Value) {
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [desc]});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A small image: a shell and a passwd.
fn base_tar() -> Layer {
    let mut layer = Layer::new();
    layer
        .dir("bin/", 0o755)
        .file_with("bin/sh", b"#!not really a shell\n", 0o755, 0, 0, 1)
        .dir("etc/", 0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n");
    layer
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Pull,
    Bundle,
}

enum Expect {
    /// Refused at this stage with an error containing this text.
    Refused(Stage, &'static str),
    /// The bundle is written; the check looks at its root file system.
    Contained(fn(&Path, &Path)),
    /// Either refused at bundle time or contained; only the host check matters.
    RefusedOrContained,
}

type Build = fn(&Layout, &Path);

fn cases() -> Vec<(&'static str, Build, Expect)> {
    vec![
        (
            "manifest whose digest lies",
            |l, _| {
                let real = l.image(&base_tar().tar());
                let other = Layout::manifest_bytes(&l.config(&[]), &[]);
                l.put_as(real["digest"].as_str().unwrap(), &other);
                l.tag(real);
            },
            Expect::Refused(Stage::Pull, "digest mismatch"),
        ),
        (
            "manifest whose size lies",
            |l, _| {
                let mut desc = l.image(&base_tar().tar());
                desc["size"] = json!(desc["size"].as_u64().unwrap() - 7);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "its descriptor says"),
        ),
        (
            "layer whose size is smaller than it is",
            |l, _| {
                let (mut layer, diff_id) = l.layer(&base_tar().tar());
                layer["size"] = json!(layer["size"].as_u64().unwrap() - 100);
                let desc = l.manifest(&[layer], &[diff_id]);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "size mismatch"),
        ),
        (
            "layer whose size is larger than it is",
            |l, _| {
                let (mut layer, diff_id) = l.layer(&base_tar().tar());
                layer["size"] = json!(layer["size"].as_u64().unwrap() + 100);
                let desc = l.manifest(&[layer], &[diff_id]);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "size mismatch"),
        ),
        (
            "layer whose content is not its digest",
            |l, _| {
                let (layer, diff_id) = l.layer(&base_tar().tar());
                let evil = gzip(&Layer::new().file("evil", b"swapped").tar());
                let mut evil_padded = evil.clone();
                evil_padded.resize(usize::try_from(layer["size"].as_u64().unwrap()).unwrap(), 0);
                l.put_as(layer["digest"].as_str().unwrap(), &evil_padded);
                let desc = l.manifest(&[layer], &[diff_id]);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "digest mismatch"),
        ),
        (
            "config whose content is not its digest",
            |l, _| {
                let (layer, diff_id) = l.layer(&base_tar().tar());
                let config = l.config(std::slice::from_ref(&diff_id));
                // Same length, other content: only the digest can tell.
                let other = l.config(&[sha256(b"another layer").to_string()]);
                let other_bytes = fs::read(
                    l.dir
                        .join("blobs/sha256")
                        .join(&other["digest"].as_str().unwrap()[7..]),
                )
                .unwrap();
                l.put_as(config["digest"].as_str().unwrap(), &other_bytes);
                let mut desc = l.put(&Layout::manifest_bytes(&config, &[layer]));
                desc["mediaType"] = json!(MANIFEST);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "digest mismatch for blob"),
        ),
        (
            "config whose diff_ids do not match the layers",
            |l, _| {
                let (layer, _) = l.layer(&base_tar().tar());
                let lie = sha256(b"some other layer").to_string();
                let desc = l.manifest(&[layer], &[lie]);
                l.tag(desc);
            },
            Expect::Refused(Stage::Bundle, "does not match diff id"),
        ),
        (
            "config with fewer diff_ids than layers",
            |l, _| {
                let (a, diff_a) = l.layer(&base_tar().tar());
                let (b, _) = l.layer(&Layer::new().file("b", b"b").tar());
                let desc = l.manifest(&[a, b], &[diff_a]);
                l.tag(desc);
            },
            Expect::Refused(Stage::Bundle, "2 layers but 1 diff ids"),
        ),
        (
            "huge manifest",
            |l, _| {
                let (layer, diff_id) = l.layer(&base_tar().tar());
                let config = l.config(&[diff_id]);
                let bytes = serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": MANIFEST,
                    "config": config,
                    "layers": [layer],
                    "annotations": {"padding": "x".repeat(5 << 20)},
                }))
                .unwrap();
                let mut desc = l.put(&bytes);
                desc["mediaType"] = json!(MANIFEST);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "bytes a manifest may have"),
        ),
        (
            "config that claims to be a gigabyte",
            |l, _| {
                let (layer, diff_id) = l.layer(&base_tar().tar());
                let mut config = l.config(&[diff_id]);
                config["size"] = json!(1u64 << 30);
                let mut desc = l.put(&Layout::manifest_bytes(&config, &[layer]));
                desc["mediaType"] = json!(MANIFEST);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "config of 1073741824 bytes"),
        ),
        (
            "index that points at itself",
            |l, _| {
                // Content addressing makes a true cycle impossible; the only way to point
                // at yourself is to lie about your digest.
                let name = sha256(b"the index's claimed name").to_string();
                let index = serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": INDEX,
                    "manifests": [{
                        "mediaType": INDEX, "digest": name, "size": 1000,
                        "platform": {"os": "linux", "architecture": "amd64"},
                    }],
                }))
                .unwrap();
                l.put_as(&name, &index);
                l.tag(json!({"mediaType": INDEX, "digest": name, "size": index.len()}));
            },
            Expect::Refused(Stage::Pull, "digest mismatch"),
        ),
        (
            "index whose platform entry is another index",
            |l, _| {
                let image = l.image(&base_tar().tar());
                let inner = serde_json::to_vec(&json!({
                    "schemaVersion": 2, "mediaType": INDEX, "manifests": [image],
                }))
                .unwrap();
                let mut inner_desc = l.put(&inner);
                inner_desc["mediaType"] = json!(INDEX);
                inner_desc["platform"] = json!({"os": "linux", "architecture": "amd64"});
                let outer = serde_json::to_vec(&json!({
                    "schemaVersion": 2, "mediaType": INDEX, "manifests": [inner_desc],
                }))
                .unwrap();
                let mut desc = l.put(&outer);
                desc["mediaType"] = json!(INDEX);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "itself an index"),
        ),
        (
            "layer with an unknown media type",
            |l, _| {
                let (mut layer, diff_id) = l.layer(&base_tar().tar());
                layer["mediaType"] = json!("application/x-shell-script");
                let desc = l.manifest(&[layer], &[diff_id]);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "unsupported media type"),
        ),
        (
            "layer digest with an unsupported algorithm",
            |l, _| {
                let (mut layer, diff_id) = l.layer(&base_tar().tar());
                layer["digest"] = json!(format!("sha512:{}", "ab".repeat(64)));
                let desc = l.manifest(&[layer], &[diff_id]);
                l.tag(desc);
            },
            Expect::Refused(Stage::Pull, "sha512"),
        ),
        (
            "truncated gzip layer with a true digest",
            |l, _| {
                let tar = base_tar().tar();
                let mut blob = gzip(&tar);
                blob.truncate(blob.len() / 2);
                let mut layer = l.put(&blob);
                layer["mediaType"] = json!(GZIP_LAYER);
                let desc = l.manifest(&[layer], &[sha256(&tar).to_string()]);
                l.tag(desc);
            },
            Expect::Refused(Stage::Bundle, "cannot unpack layer"),
        ),
        (
            "whiteouts that target paths outside the root",
            |l, canary| {
                let mut layer = base_tar();
                layer
                    .whiteout("../canary/.wh.secret")
                    // From the unpack's upper dir (root/snapshots/tmp/unpack-*/upper), five
                    // levels up is the test's temp dir, where the canary lives.
                    .whiteout("../../../../../canary/.wh.secret")
                    .whiteout("../../../../../.wh.canary")
                    .whiteout(&format!("{}/.wh.secret", canary.display()))
                    .symlink("out", &canary.display().to_string())
                    .whiteout("out/.wh.secret")
                    .whiteout("out/.wh..wh..opq");
                let desc = l.image(&layer.tar());
                l.tag(desc);
            },
            Expect::RefusedOrContained,
        ),
        (
            "whiteout in a second layer through a symlink to the host",
            |l, canary| {
                let (a, diff_a) = l.layer(
                    &base_tar()
                        .symlink("host", &canary.display().to_string())
                        .tar(),
                );
                let (b, diff_b) = l.layer(
                    &Layer::new()
                        .whiteout("host/.wh.secret")
                        .file("host/planted", b"x")
                        .tar(),
                );
                let desc = l.manifest(&[a, b], &[diff_a, diff_b]);
                l.tag(desc);
            },
            Expect::RefusedOrContained,
        ),
        (
            "setuid root file",
            |l, _| {
                let mut layer = base_tar();
                layer.file_with("bin/su", b"#!setuid\n", 0o4755, 0, 0, 1);
                let desc = l.image(&layer.tar());
                l.tag(desc);
            },
            // Allowed, as the image spec says; contained by the bundle's
            // noNewPrivileges (setuid does not raise privileges inside).
            Expect::Contained(|bundle, _| {
                let meta = fs::metadata(bundle.join("rootfs/bin/su")).unwrap();
                assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
                let config: Value =
                    serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
                assert_eq!(config["process"]["noNewPrivileges"], json!(true));
            }),
        ),
        (
            "device nodes for host memory and disks",
            |l, _| {
                let mut layer = base_tar();
                layer.device("mem", tar::EntryType::Char, 1, 1).device(
                    "sda",
                    tar::EntryType::Block,
                    8,
                    0,
                );
                let desc = l.image(&layer.tar());
                l.tag(desc);
            },
            // Created inside the root only (a runtime gives the container its own /dev and
            // a device cgroup that denies them).
            Expect::Contained(|bundle, _| {
                let meta = fs::symlink_metadata(bundle.join("rootfs/mem")).unwrap();
                assert!(meta.file_type().is_char_device());
            }),
        ),
        (
            "dot-dot and absolute paths in an image layer",
            |l, canary| {
                let mut layer = base_tar();
                layer
                    .file("../../canary/planted", b"x")
                    .file(&format!("{}/planted", canary.display()), b"x");
                let desc = l.image(&layer.tar());
                l.tag(desc);
            },
            Expect::Contained(|bundle, canary| {
                let inside = bundle
                    .join("rootfs")
                    .join(canary.strip_prefix("/").unwrap());
                assert!(
                    inside.join("planted").is_file(),
                    "absolute path lands inside"
                );
                assert!(bundle.join("rootfs/canary/planted").is_file());
            }),
        ),
        (
            "symlink to the host written through in a later layer",
            |l, canary| {
                let (a, diff_a) = l.layer(
                    &base_tar()
                        .symlink("etc/host", &canary.display().to_string())
                        .tar(),
                );
                let (b, diff_b) =
                    l.layer(&Layer::new().file("etc/host/secret", b"overwritten?").tar());
                let desc = l.manifest(&[a, b], &[diff_a, diff_b]);
                l.tag(desc);
            },
            Expect::RefusedOrContained,
        ),
    ]
}

/// Runs the executor with a deadline (a loop in resolving must not hang the test).
fn executor(root: &Path, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_executor"))
        .arg("--root")
        .arg(root)
        .args(["--log-level", "error"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("executor {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    if !status.success() {
        assert_eq!(status.code(), Some(125), "{stderr}");
    }
    (status.success(), stderr)
}

fn host_view(tmp: &Path) -> BTreeMap<PathBuf, String> {
    // Everything but the store and the bundle, which are the executor's to write.
    tree(tmp)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("root") && !p.starts_with("bundle"))
        .collect()
}

fn list(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn hostile_images_are_refused_or_contained() {
    let cases = cases();
    assert!(cases.len() >= 20, "the corpus has {} cases", cases.len());
    for (name, build, expect) in cases {
        let tmp = tempdir();
        let tmp_path = tmp.path().canonicalize().unwrap();
        let canary = tmp_path.join("canary");
        fs::create_dir(&canary).unwrap();
        fs::write(canary.join("secret"), b"host secret").unwrap();
        let layout = Layout::new(tmp_path.join("layout"));
        build(&layout, &canary);
        let context = tmp_path.join("context.yaml");
        fs::write(&context, "name: hostile\n").unwrap();
        let args_file = tmp_path.join("args.yaml");
        fs::write(&args_file, "{}\n").unwrap();
        let root = tmp_path.join("root");
        let bundle = tmp_path.join("bundle");
        let before = host_view(&tmp_path);

        let image = format!("oci-layout:{}:v1", layout.dir.display());
        let (pulled, stderr) = executor(&root, &["pull".as_ref(), image.as_ref()]);
        let mut refused_at = None;
        let mut error = String::new();
        if pulled {
            let (bundled, stderr) = executor(
                &root,
                &[
                    "bundle".as_ref(),
                    image.as_ref(),
                    "--context".as_ref(),
                    context.as_os_str(),
                    "--args".as_ref(),
                    args_file.as_os_str(),
                    "--output".as_ref(),
                    bundle.as_os_str(),
                ],
            );
            if !bundled {
                refused_at = Some(Stage::Bundle);
                error = stderr;
            }
        } else {
            refused_at = Some(Stage::Pull);
            error = stderr;
        }
        if let Some(stage) = refused_at {
            let last = error.lines().last().unwrap_or("");
            assert!(
                last.starts_with("executor: ") && error.lines().count() <= 3,
                "{name}: not one clear line: {error}"
            );
            match stage {
                Stage::Pull => {
                    assert!(list(&root.join("images")).is_empty(), "{name}: recorded");
                    assert!(list(&root.join("tmp")).is_empty(), "{name}: temp file left");
                }
                Stage::Bundle => {
                    assert!(!bundle.exists(), "{name}: bundle dir left");
                    assert!(
                        list(&root.join("snapshots/tmp")).is_empty(),
                        "{name}: unpack temp dir left"
                    );
                }
            }
        }
        match (&expect, refused_at) {
            (Expect::Refused(stage, text), Some(at)) => {
                assert_eq!(*stage, at, "{name}: refused at the wrong stage: {error}");
                assert!(
                    error.contains(text),
                    "{name}: expected {text:?} in: {error}"
                );
            }
            (Expect::Refused(stage, _), None) => {
                panic!("{name}: accepted; expected refusal at {stage:?}")
            }
            (Expect::Contained(_), Some(at)) => panic!("{name}: refused at {at:?}: {error}"),
            (Expect::Contained(check), None) => check(&bundle, &canary),
            (Expect::RefusedOrContained, Some(at)) => {
                assert_eq!(at, Stage::Bundle, "{name}: {error}")
            }
            (Expect::RefusedOrContained, None) => {}
        }
        if refused_at.is_none() {
            executor::snapshot::cleanup_rootfs(&bundle).unwrap();
        }
        assert_eq!(
            host_view(&tmp_path),
            before,
            "{name}: the host outside the store changed"
        );
        eprintln!(
            "{name}: {}",
            refused_at.map_or("contained".to_owned(), |s| format!(
                "refused at {s:?}: {}",
                error.lines().last().unwrap_or("")
            ))
        );
    }
}
