//! What goes into the layer: the host files, directories and symbolic links of the
//! mappings, walked and checked, keyed by image path, with the parent directories their
//! paths imply and the shared libraries `ldd` lists for a binary.

use super::{FileMapping, PackError, normalize_image_path, read_error};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// One entry of the layer, keyed by its image path without the leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    Dir { mode: u32 },
    File { host: PathBuf, mode: u32 },
    Symlink { target: PathBuf },
}

impl Entry {
    fn describe(&self) -> String {
        match self {
            Entry::Dir { .. } => "a directory".into(),
            Entry::File { host, .. } => host.display().to_string(),
            Entry::Symlink { target } => format!("a link to {}", target.display()),
        }
    }
}

/// Adds `mapping` (recursively for a directory) and the parent directories of its
/// image path.
pub(super) fn add_mapping(
    entries: &mut BTreeMap<String, Entry>,
    mapping: &FileMapping,
) -> Result<(), PackError> {
    let parts = normalize_image_path(&mapping.image)?;
    // A top-level link is followed: `--add /usr/bin/tool:/tool` means the tool.
    let meta = std::fs::metadata(&mapping.host).map_err(read_error(&mapping.host))?;
    if parts.is_empty() && !meta.is_dir() {
        return Err(PackError::ImagePath(mapping.image.clone()));
    }
    for depth in 1..parts.len() {
        insert(
            entries,
            parts[..depth].join("/"),
            Entry::Dir { mode: 0o755 },
        )?;
    }
    add_path(entries, &mapping.host, &meta, parts.join("/"))
}

fn add_path(
    entries: &mut BTreeMap<String, Entry>,
    host: &Path,
    meta: &std::fs::Metadata,
    image: String,
) -> Result<(), PackError> {
    let mode = meta.permissions().mode() & 0o7777;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(host).map_err(read_error(host))?;
        insert(entries, image, Entry::Symlink { target })
    } else if kind.is_file() {
        insert(
            entries,
            image,
            Entry::File {
                host: host.to_owned(),
                mode,
            },
        )
    } else if kind.is_dir() {
        if !image.is_empty() {
            insert(entries, image.clone(), Entry::Dir { mode })?;
        }
        let mut children: Vec<_> = std::fs::read_dir(host)
            .map_err(read_error(host))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_error(host))?;
        children.sort();
        for child in children {
            let meta = std::fs::symlink_metadata(&child).map_err(read_error(&child))?;
            let name = child
                .file_name()
                .expect("read_dir entries have a file name")
                .to_string_lossy()
                .into_owned();
            let path = if image.is_empty() {
                name
            } else {
                format!("{image}/{name}")
            };
            add_path(entries, &child, &meta, path)?;
        }
        Ok(())
    } else {
        Err(PackError::FileType(host.to_owned()))
    }
}

fn insert(
    entries: &mut BTreeMap<String, Entry>,
    path: String,
    entry: Entry,
) -> Result<(), PackError> {
    match entries.get(&path) {
        None => {
            entries.insert(path, entry);
            Ok(())
        }
        Some(existing) if existing == &entry => Ok(()),
        // An implied parent directory (0755) meets an explicit one: keep the explicit mode.
        Some(Entry::Dir { .. }) if matches!(entry, Entry::Dir { .. }) => {
            if let Entry::Dir { mode } = entry
                && mode != 0o755
            {
                entries.insert(path, entry);
            }
            Ok(())
        }
        Some(existing) => Err(PackError::Conflict {
            path: format!("/{path}"),
            first: existing.describe(),
            second: entry.describe(),
        }),
    }
}

/// The shared libraries and loader `ldd` lists for `binary`, as host paths; empty
/// for a static binary.
pub(super) fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, PackError> {
    let ldd_error = |reason: String| PackError::Ldd {
        path: binary.to_owned(),
        reason,
    };
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ldd_error(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // ldd exits 1 for static binaries, saying so.
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(ldd_error(stderr.trim().to_owned()));
    }
    let mut libs = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        if line.contains("statically linked") {
            continue;
        }
        if line.contains("=> not found") {
            return Err(ldd_error(format!("library not found: {line}")));
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no path.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}
