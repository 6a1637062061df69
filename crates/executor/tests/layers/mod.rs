//! Test helpers: build layer tars entry by entry (including hostile names that `tar::Builder`
//! would refuse), compress them, and snapshot directory trees for comparison.
#![allow(dead_code)]

use executor::snapshot::LayerBlob;
use oci_spec::image::{Digest, MediaType};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A layer under construction.
#[derive(Default)]
pub struct Layer {
    builder: Option<tar::Builder<Vec<u8>>>,
}

impl Layer {
    pub fn new() -> Self {
        Self {
            builder: Some(tar::Builder::new(Vec::new())),
        }
    }

    fn append(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        mode: u32,
        link: Option<&[u8]>,
        data: &[u8],
        tweak: impl FnOnce(&mut tar::Header),
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        // Raw bytes: tar::Header::set_path refuses `..` and the hostile names we need.
        let gnu = h.as_gnu_mut().expect("gnu header");
        assert!(name.len() < gnu.name.len(), "test names stay short");
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            gnu.linkname = [0; 100];
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
        tweak(&mut h);
        h.set_cksum();
        self.builder
            .as_mut()
            .expect("layer not finished")
            .append(&h, data)
            .expect("append to an in-memory tar");
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.append(
            name.as_bytes(),
            tar::EntryType::Directory,
            mode,
            None,
            b"",
            |_| {},
        )
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.append(
            name.as_bytes(),
            tar::EntryType::Regular,
            0o644,
            None,
            data,
            |_| {},
        )
    }

    pub fn file_raw(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        self.append(name, tar::EntryType::Regular, 0o644, None, data, |_| {})
    }

    pub fn file_with(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        self.append(
            name.as_bytes(),
            tar::EntryType::Regular,
            mode,
            None,
            data,
            |h| {
                h.set_uid(uid);
                h.set_gid(gid);
                h.set_mtime(mtime);
            },
        )
    }

    pub fn dir_with(&mut self, name: &str, mode: u32, mtime: u64) -> &mut Self {
        self.append(
            name.as_bytes(),
            tar::EntryType::Directory,
            mode,
            None,
            b"",
            |h| h.set_mtime(mtime),
        )
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.append(
            name.as_bytes(),
            tar::EntryType::Symlink,
            0o777,
            Some(target.as_bytes()),
            b"",
            |_| {},
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.append(
            name.as_bytes(),
            tar::EntryType::Link,
            0o644,
            Some(target.as_bytes()),
            b"",
            |_| {},
        )
    }

    pub fn device(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        self.append(name.as_bytes(), kind, 0o666, None, b"", |h| {
            h.set_device_major(major)
                .expect("gnu header has device fields");
            h.set_device_minor(minor)
                .expect("gnu header has device fields");
        })
    }

    pub fn whiteout(&mut self, name: &str) -> &mut Self {
        self.file(name, b"")
    }

    /// The finished, uncompressed tar.
    pub fn tar(&mut self) -> Vec<u8> {
        self.builder
            .take()
            .expect("layer not finished")
            .into_inner()
            .expect("finish an in-memory tar")
    }
}

pub fn sha256(bytes: &[u8]) -> Digest {
    Digest::from_str(&format!("sha256:{}", hex::encode(Sha256::digest(bytes)))).unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 1).unwrap()
}

/// Writes a gzip layer blob into `dir` and describes it for the snapshotter.
pub fn blob(dir: &Path, tar: &[u8]) -> LayerBlob {
    let compressed = gzip(tar);
    let digest = sha256(&compressed);
    let path = dir.join(digest.digest());
    fs::write(&path, &compressed).unwrap();
    LayerBlob {
        digest,
        diff_id: sha256(tar),
        media_type: MediaType::ImageLayerGzip,
        path,
    }
}

/// Everything observable about a tree: type, mode, owner, size, content hash, link target,
/// mtime, inode (so that "replaced" differs from "unchanged"), by relative path.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let m = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_owned();
        let detail = if m.file_type().is_symlink() {
            format!("link->{}", fs::read_link(&path).unwrap().display())
        } else if m.is_file() {
            format!("file:{}", sha256(&fs::read(&path).unwrap()))
        } else if m.is_dir() {
            "dir".to_owned()
        } else {
            format!("special:{}", m.rdev())
        };
        out.insert(
            rel,
            format!(
                "{detail} mode={:o} uid={} gid={} mtime={} ino={}",
                m.permissions().mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.ino()
            ),
        );
        if m.is_dir() {
            walk(root, &path, out);
        }
    }
}

/// A fresh directory for one test, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("executor-test-")
        .tempdir()
        .unwrap()
}

/// Whether `path` is a mount point (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

/// Writes an OCI image layout at `dir` holding one image tagged `tag`: the given layer tars
/// (gzip-compressed, base first) and an image config with `config` as its `config` object.
pub fn write_oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>], config: serde_json::Value) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let digest = sha256(bytes);
        fs::write(blobs.join(digest.digest()), bytes).unwrap();
        (digest.to_string(), bytes.len())
    };
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        let (digest, size) = put(&gzip(tar));
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": size,
        }));
        diff_ids.push(sha256(tar).to_string());
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
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
        "layers": layer_descs,
    });
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}
