//! The runner's input files in the bundle (`inputs/`): the context and args documents,
//! read and checked on the host and written with mode 0600, and an optional kubeconfig,
//! copied with the certificate files it references and its paths rewritten to where they
//! appear in the container.

use super::{BundleError, BundleOptions, KUBE_FILES_DIR, io_err};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Writes a new file with mode 0600.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io_err("write", path))
}

/// The runner's input files, read from the host and checked.
pub(super) struct Inputs {
    pub(super) context: Vec<u8>,
    pub(super) args: Vec<u8>,
}

impl Inputs {
    /// Reads both files, which must be YAML. Only YAML: what the documents must hold is
    /// the runner's contract (`executor run` checks the context against it; `executor
    /// bundle`, a debugging tool, lets a partial context through).
    pub(super) fn read(opts: &BundleOptions) -> Result<Inputs, BundleError> {
        let read = |what: &'static str, path: &Path| {
            fs::read(path).map_err(|e| BundleError::InvalidInput {
                what,
                path: path.to_owned(),
                reason: e.to_string(),
            })
        };
        let invalid =
            |what: &'static str, path: &Path, e: serde_norway::Error| BundleError::InvalidInput {
                what,
                path: path.to_owned(),
                reason: e.to_string(),
            };
        let context = match &opts.context_bytes {
            Some(bytes) => bytes.0.to_vec(),
            None => read("context", &opts.context_file)?,
        };
        serde_norway::from_slice::<serde_norway::Value>(&context)
            .map_err(|e| invalid("context", &opts.context_file, e))?;
        let args = read("args", &opts.args_file)?;
        serde_norway::from_slice::<serde_norway::Value>(&args)
            .map_err(|e| invalid("args", &opts.args_file, e))?;
        Ok(Inputs { context, args })
    }
}

/// Copies a host file to a new file with mode 0600 (the inputs may hold secrets).
fn copy_private(from: &Path, to: &Path) -> Result<(), BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = fs::File::open(from).map_err(io_err("read", from))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io_err("create", to))?;
    io::copy(&mut src, &mut dst).map_err(io_err("copy into", to))?;
    Ok(())
}

/// Copies a kubeconfig and the files it references (`certificate-authority`,
/// `client-certificate`, `client-key`, `tokenFile`) into the bundle, rewriting the paths to
/// where they appear in the container. Returns the copied reference files.
pub(super) fn stage_kubeconfig(
    src: &Path,
    dest: &Path,
    files_dir: &Path,
) -> Result<Vec<PathBuf>, BundleError> {
    let bad = |reason: String| BundleError::Kubeconfig {
        path: src.to_owned(),
        reason,
    };
    let text = fs::read_to_string(src).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut doc: serde_norway::Value =
        serde_norway::from_str(&text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let base = src.parent().unwrap_or(Path::new("/"));
    let mut copied = Vec::new();
    for (list, item, keys) in [
        ("clusters", "cluster", &["certificate-authority"][..]),
        (
            "users",
            "user",
            &["client-certificate", "client-key", "tokenFile"][..],
        ),
    ] {
        let Some(entries) = doc.get_mut(list).and_then(|v| v.as_sequence_mut()) else {
            continue;
        };
        for entry in entries {
            let Some(inner) = entry.get_mut(item) else {
                continue;
            };
            for key in keys {
                let Some(value) = inner.get_mut(*key) else {
                    continue;
                };
                let Some(path) = value.as_str() else {
                    return Err(bad(format!("{key} is not a string")));
                };
                let host = base.join(path);
                let name = format!(
                    "{}-{}",
                    copied.len(),
                    host.file_name().and_then(|n| n.to_str()).unwrap_or("file")
                );
                let staged = files_dir.join(&name);
                copy_private(&host, &staged).map_err(|e| bad(format!("{key}: {e}")))?;
                *value = serde_norway::Value::String(format!("{KUBE_FILES_DIR}/{name}"));
                copied.push(staged);
            }
        }
    }
    let out = serde_norway::to_string(&doc).map_err(|e| bad(format!("cannot write: {e}")))?;
    write_private(dest, out.as_bytes())?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_bytes_read_by_the_caller_are_the_ones_the_bundle_holds() {
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("context.yaml");
        let args = dir.path().join("args.yaml");
        fs::write(&context, "name: changed-since\n").unwrap();
        fs::write(&args, "{}\n").unwrap();
        let mut opts = BundleOptions::new(&context, &args);
        opts.context_bytes = Some(super::super::InputBytes(b"name: as-read\n"[..].into()));
        let inputs = Inputs::read(&opts).unwrap();
        assert_eq!(inputs.context, b"name: as-read\n");
        assert_eq!(
            format!("{:?}", opts.context_bytes.unwrap()),
            "InputBytes(14 bytes)"
        );
        // Still checked as YAML, and named by its file.
        opts = BundleOptions::new(&context, &args);
        opts.context_bytes = Some(super::super::InputBytes(b"\tname: : :\n"[..].into()));
        let err = Inputs::read(&opts).err().unwrap().to_string();
        assert!(err.contains("context.yaml"), "{err}");
    }

    #[test]
    fn inputs_must_be_readable_yaml_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        fs::write(&good, "name: x\n").unwrap();
        let bad = dir.path().join("bad.yaml");
        fs::write(&bad, "\tworkflow: : :\n").unwrap();
        let missing = dir.path().join("missing.yaml");
        let read = |context: &Path, args: &Path| {
            Inputs::read(&BundleOptions::new(context, args)).map(|i| (i.context, i.args))
        };
        assert_eq!(
            read(&good, &good).unwrap(),
            (b"name: x\n".to_vec(), b"name: x\n".to_vec())
        );
        for (context, args, what, path) in [
            (&bad, &good, "context", &bad),
            (&good, &bad, "args", &bad),
            (&missing, &good, "context", &missing),
            (
                &good,
                &dir.path().to_owned(),
                "args",
                &dir.path().to_owned(),
            ),
        ] {
            let err = read(context, args).unwrap_err().to_string();
            let expected = format!("invalid runner {what} {}: ", path.display());
            assert!(err.starts_with(&expected), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
