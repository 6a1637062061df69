//! Plain-HTTP registries named in `containers-registries.conf(5)`, the file podman,
//! skopeo and buildah read, so that a node configured for them needs no extra flag.
//!
//! Only what decides plain HTTP is read: version 2 `[[registry]]` tables with
//! `insecure = true` (their `location`, or their `prefix` when it is a bare host), and
//! the version 1 `[registries.insecure] registries = [...]` list. Every other setting
//! (mirrors, search registries, blocked registries, short-name aliases) is ignored.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Why a registries configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesConfError {
    /// The file exists but cannot be read.
    #[error("cannot read registries configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid registries configuration {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, on one line.
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct ConfFile {
    #[serde(default)]
    registry: Vec<RegistryTable>,
    #[serde(default)]
    registries: Option<V1Registries>,
}

#[derive(Debug, Deserialize)]
struct RegistryTable {
    location: Option<String>,
    prefix: Option<String>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
struct V1Registries {
    insecure: Option<V1List>,
}

#[derive(Debug, Deserialize)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

/// The files read when none is named: `$CONTAINERS_REGISTRIES_CONF` alone when set,
/// else `/etc/containers/registries.conf` and the user's
/// `$XDG_CONFIG_HOME/containers/registries.conf` (or `~/.config/...`). Both are read
/// and their insecure registries added up (podman lets the user file replace the
/// system one; for the one setting read here, the union is what an operator expects).
pub fn default_paths() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        return vec![PathBuf::from(path)];
    }
    let mut paths = vec![PathBuf::from("/etc/containers/registries.conf")];
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    if let Some(dir) = config_home {
        paths.push(dir.join("containers/registries.conf"));
    }
    paths
}

/// The registries (`host[:port]`) that `paths` mark insecure; a file that does not
/// exist contributes nothing.
pub fn insecure_registries(paths: &[PathBuf]) -> Result<Vec<String>, RegistriesConfError> {
    let mut found = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(RegistriesConfError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        for registry in parse(&text, path)? {
            if !found.contains(&registry) {
                found.push(registry);
            }
        }
    }
    Ok(found)
}

fn parse(text: &str, path: &Path) -> Result<Vec<String>, RegistriesConfError> {
    let conf: ConfFile = toml::from_str(text).map_err(|e| RegistriesConfError::Parse {
        path: path.to_owned(),
        // toml's messages span several lines (a snippet of the file): keep the first.
        reason: e.message().lines().next().unwrap_or_default().to_owned(),
    })?;
    let mut insecure: Vec<String> = conf
        .registry
        .into_iter()
        .filter(|table| table.insecure)
        .filter_map(|table| table.location.or(table.prefix))
        // A location may name a namespace (`host/team`); plain HTTP is per host.
        .filter_map(|location| location.split('/').next().map(str::to_owned))
        .filter(|host| !host.is_empty() && !host.starts_with("*."))
        .collect();
    if let Some(list) = conf.registries.and_then(|r| r.insecure) {
        insecure.extend(list.registries);
    }
    Ok(insecure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn version_2_tables_and_version_1_lists_name_insecure_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = write(
            dir.path(),
            "v2.conf",
            r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
prefix = "registry.internal:8080/team"
insecure = true

[[registry]]
location = "quay.io"

[[registry]]
location = "mirror.example:5000/library"
insecure = true
[[registry.mirror]]
location = "other.example"
"#,
        );
        let v1 = write(
            dir.path(),
            "v1.conf",
            "[registries.search]\nregistries = ['docker.io']\n[registries.insecure]\nregistries = ['10.0.0.1:5000', '127.0.0.1:5000']\n",
        );
        let missing = dir.path().join("missing.conf");
        let found = insecure_registries(&[v2, v1, missing]).unwrap();
        assert_eq!(
            found,
            [
                "127.0.0.1:5000",
                "registry.internal:8080",
                "mirror.example:5000",
                "10.0.0.1:5000"
            ]
        );
    }

    #[test]
    fn a_malformed_file_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(dir.path(), "bad.conf", "[[registry]\nlocation = 1\n");
        let err = insecure_registries(std::slice::from_ref(&bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&bad.display().to_string()), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");

        let wrong_type = write(
            dir.path(),
            "type.conf",
            "[[registry]]\ninsecure = \"yes\"\n",
        );
        let err = insecure_registries(&[wrong_type]).unwrap_err().to_string();
        assert!(err.contains("invalid registries configuration"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
