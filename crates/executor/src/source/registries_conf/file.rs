//! The file format of `containers-registries.conf(5)` and its loading: the TOML shapes
//! of version 1 and version 2 files, the rules a file must follow, the default paths
//! with their drop-ins, and the merging of several files into one [`RegistriesConf`].

use super::{Mirror, PullFromMirror, RegistriesConf, RegistriesConfError, Registry};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ConfFile {
    #[serde(default)]
    registry: Vec<RegistryTable>,
    #[serde(default)]
    registries: Option<V1Registries>,
    unqualified_search_registries: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegistryTable {
    location: Option<String>,
    prefix: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    pull_from_mirror: Option<String>,
    #[serde(default)]
    mirror: Vec<MirrorTable>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorTable {
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

#[derive(Debug, Deserialize)]
struct V1Registries {
    search: Option<V1List>,
    insecure: Option<V1List>,
    block: Option<V1List>,
}

#[derive(Debug, Deserialize)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

/// The files read when none is named, in the order they apply:
/// `$CONTAINERS_REGISTRIES_CONF` when set, else the user's
/// `$XDG_CONFIG_HOME/containers/registries.conf` (or `~/.config/...`) when it exists,
/// else `/etc/containers/registries.conf`; then the drop-ins (`*.conf`, by name) of
/// `/etc/containers/registries.conf.d` (unless the user's file is used) and of the
/// user's `registries.conf.d`, as containers-image picks them.
pub fn default_paths() -> Vec<PathBuf> {
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    let user_file = config_home
        .as_ref()
        .map(|dir| dir.join("containers/registries.conf"));
    let user_dir = config_home.map(|dir| dir.join("containers/registries.conf.d"));
    let system_dir = PathBuf::from("/etc/containers/registries.conf.d");
    let (main, dirs) = if let Some(path) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        (PathBuf::from(path), vec![Some(system_dir), user_dir])
    } else {
        match user_file.filter(|f| f.exists()) {
            Some(user) => (user, vec![user_dir]),
            None => (
                PathBuf::from("/etc/containers/registries.conf"),
                vec![Some(system_dir), user_dir],
            ),
        }
    };
    let mut paths = vec![main];
    for dir in dirs.into_iter().flatten() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut drop_ins: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        drop_ins.sort();
        paths.extend(drop_ins);
    }
    paths
}

impl RegistriesConf {
    /// Reads and merges `paths` in order; a file that does not exist contributes nothing.
    pub fn load(paths: &[PathBuf]) -> Result<RegistriesConf, RegistriesConfError> {
        let mut by_prefix: BTreeMap<String, Registry> = BTreeMap::new();
        let mut search = Vec::new();
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
            let (registries, file_search) = parse(&text, path)?;
            for registry in registries {
                by_prefix.insert(registry.prefix.clone(), registry);
            }
            if let Some(file_search) = file_search {
                search = file_search;
            }
        }
        Ok(RegistriesConf {
            registries: by_prefix.into_values().collect(),
            unqualified_search_registries: search,
        })
    }
}

/// A location as containers-image normalizes it: trailing `/` dropped, no URL scheme.
fn parse_location(input: &str) -> Result<String, String> {
    let trimmed = input.trim_end_matches('/');
    if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        return Err(format!(
            "invalid location {input:?}: URI schemes are not supported"
        ));
    }
    Ok(trimmed.to_owned())
}

fn parse_pull_from_mirror(value: &str, location: &str) -> Result<PullFromMirror, String> {
    match value {
        "" | "all" => Ok(PullFromMirror::All),
        "digest-only" => Ok(PullFromMirror::DigestOnly),
        "tag-only" => Ok(PullFromMirror::TagOnly),
        other => Err(format!(
            "unsupported pull-from-mirror value {other:?} for mirror {location:?} (all, digest-only or tag-only)"
        )),
    }
}

/// Parses one file into its tables and its `unqualified-search-registries` (when the
/// file sets it).
fn parse(
    text: &str,
    path: &Path,
) -> Result<(Vec<Registry>, Option<Vec<String>>), RegistriesConfError> {
    let invalid = |reason: String| RegistriesConfError::Parse {
        path: path.to_owned(),
        reason,
    };
    let conf: ConfFile = toml::from_str(text).map_err(|e| {
        // toml's messages span several lines (a snippet of the file): keep the first.
        invalid(e.message().lines().next().unwrap_or_default().to_owned())
    })?;
    log_unknown_keys(text, path);
    let mut tables = conf.registry;
    let mut search = conf.unqualified_search_registries;
    if let Some(v1) = conf.registries {
        if !tables.is_empty() || search.is_some() {
            return Err(invalid(
                "mixing version 1 ([registries.*]) and version 2 ([[registry]]) settings is not supported".into(),
            ));
        }
        let list = |l: Option<V1List>| l.map(|l| l.registries).unwrap_or_default();
        let (insecure, blocked) = (list(v1.insecure), list(v1.block));
        search = v1.search.map(|l| l.registries);
        let mut hosts: Vec<&String> = insecure.iter().chain(&blocked).collect();
        hosts.dedup();
        for host in hosts {
            if tables.iter().any(|t| t.location.as_ref() == Some(host)) {
                continue;
            }
            tables.push(RegistryTable {
                location: Some(host.clone()),
                prefix: None,
                insecure: insecure.contains(host),
                blocked: blocked.contains(host),
                mirror_by_digest_only: false,
                pull_from_mirror: None,
                mirror: Vec::new(),
            });
        }
    }

    let mut registries: Vec<Registry> = Vec::new();
    for table in tables {
        let location = parse_location(table.location.as_deref().unwrap_or("")).map_err(invalid)?;
        let prefix = match table.prefix.as_deref() {
            None | Some("") if location.is_empty() => {
                return Err(invalid(
                    "a [[registry]] sets neither location nor prefix".into(),
                ));
            }
            None | Some("") => location.clone(),
            Some(prefix) => {
                let prefix = parse_location(prefix).map_err(invalid)?;
                if !prefix.starts_with("*.") && location.is_empty() {
                    return Err(invalid(format!(
                        "registry with prefix {prefix:?} has no location (only a *.example.com prefix may omit it)"
                    )));
                }
                prefix
            }
        };
        if prefix.contains('*')
            && (!prefix.starts_with("*.") || prefix[1..].contains(['*', '/', ':']))
        {
            return Err(invalid(format!(
                "invalid prefix {prefix:?}: a wildcard prefix must be *.example.com"
            )));
        }
        if table.pull_from_mirror.is_some() {
            return Err(invalid(format!(
                "pull-from-mirror must not be set for the registry {prefix:?} itself, only for its mirrors"
            )));
        }
        let mut mirrors = Vec::new();
        for mirror in table.mirror {
            let location =
                parse_location(mirror.location.as_deref().unwrap_or("")).map_err(invalid)?;
            if location.is_empty() {
                return Err(invalid(format!(
                    "a mirror of registry {prefix:?} has no location"
                )));
            }
            let pull_from_mirror = match mirror.pull_from_mirror.as_deref() {
                Some(_) if table.mirror_by_digest_only => {
                    return Err(invalid(format!(
                        "registry {prefix:?} sets mirror-by-digest-only and its mirror {location:?} sets pull-from-mirror: use one of them"
                    )));
                }
                Some(value) => parse_pull_from_mirror(value, &location).map_err(invalid)?,
                None => PullFromMirror::All,
            };
            mirrors.push(Mirror {
                location,
                insecure: mirror.insecure,
                pull_from_mirror,
            });
        }
        let registry = Registry {
            prefix,
            location,
            insecure: table.insecure,
            blocked: table.blocked,
            mirror_by_digest_only: table.mirror_by_digest_only,
            mirrors,
            source: path.to_owned(),
        };
        // The same registry named twice (for two prefixes) must be the same registry.
        let key = |r: &Registry| {
            if r.location.is_empty() {
                r.prefix.clone()
            } else {
                r.location.clone()
            }
        };
        if let Some(other) = registries.iter().find(|o| key(o) == key(&registry)) {
            for (setting, differs) in [
                ("insecure", other.insecure != registry.insecure),
                ("blocked", other.blocked != registry.blocked),
            ] {
                if differs {
                    return Err(invalid(format!(
                        "registry {:?} is defined more than once with different {setting} settings",
                        key(&registry)
                    )));
                }
            }
        }
        // Of two tables with the same prefix the first wins, as in containers-image.
        if !registries.iter().any(|o| o.prefix == registry.prefix) {
            registries.push(registry);
        }
    }
    if let Some(search) = &mut search {
        for entry in search.iter_mut() {
            let host = parse_location(entry).map_err(invalid)?;
            let valid = !host.is_empty()
                && !host.contains('/')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !valid {
                return Err(invalid(format!(
                    "invalid unqualified-search-registries entry {entry:?}"
                )));
            }
            *entry = host;
        }
    }
    Ok((registries, search))
}

/// Logs (at debug level, as containers-image does) the keys of `text` that this
/// module does not read. The file already parsed, so `text` is valid TOML.
fn log_unknown_keys(text: &str, path: &Path) {
    const TOP: &[&str] = &["registry", "registries", "unqualified-search-registries"];
    const REGISTRY: &[&str] = &[
        "location",
        "prefix",
        "insecure",
        "blocked",
        "mirror-by-digest-only",
        "pull-from-mirror",
        "mirror",
    ];
    const MIRROR: &[&str] = &["location", "insecure", "pull-from-mirror"];
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    let mut unknown: Vec<String> = Vec::new();
    let mut check = |table: &toml::Table, known: &[&str], at: &str| {
        for key in table.keys().filter(|k| !known.contains(&k.as_str())) {
            unknown.push(format!("{at}{key}"));
        }
    };
    check(&table, TOP, "");
    for registry in table
        .get("registry")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_table())
    {
        check(registry, REGISTRY, "registry.");
        for mirror in registry
            .get("mirror")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_table())
        {
            check(mirror, MIRROR, "registry.mirror.");
        }
    }
    if !unknown.is_empty() {
        tracing::debug!(path = %path.display(), keys = ?unknown, "ignoring unknown keys of registries configuration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::registries_conf::test_support::{conf, sources, write};

    fn conf_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let err = RegistriesConf::load(&[write(dir.path(), "r.conf", text)])
            .unwrap_err()
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("r.conf"), "{err}");
        err
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
location = "registry.internal:8080/team"
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
        let conf = RegistriesConf::load(&[v2, v1, missing]).unwrap();
        assert_eq!(
            conf.insecure_hosts(),
            [
                "10.0.0.1:5000",
                "127.0.0.1:5000",
                "mirror.example:5000",
                "registry.internal:8080",
            ]
        );
        assert_eq!(conf.unqualified_search_registries, ["docker.io"]);
    }

    #[test]
    fn a_malformed_file_is_one_line_naming_it() {
        let err = conf_error("[[registry]\nlocation = 1\n");
        assert!(err.contains("invalid registries configuration"), "{err}");
        let err = conf_error("[[registry]]\ninsecure = \"yes\"\n");
        assert!(err.contains("invalid registries configuration"), "{err}");
    }

    #[test]
    fn rules_of_the_format_are_enforced() {
        for (text, expected) in [
            (
                "[[registry]]\ninsecure = true\n",
                "neither location nor prefix",
            ),
            (
                "[[registry]]\nlocation = \"https://quay.io\"\n",
                "URI schemes are not supported",
            ),
            (
                "[[registry]]\nprefix = \"example.com/a\"\n",
                "has no location",
            ),
            (
                "[[registry]]\nprefix = \"foo.*.com\"\nlocation = \"x.com\"\n",
                "wildcard prefix",
            ),
            (
                "[[registry]]\nlocation = \"x.com\"\npull-from-mirror = \"all\"\n",
                "only for its mirrors",
            ),
            (
                "[[registry]]\nlocation = \"x.com\"\n[[registry.mirror]]\ninsecure = true\n",
                "has no location",
            ),
            (
                "[[registry]]\nlocation = \"x.com\"\n[[registry.mirror]]\nlocation = \"m.com\"\npull-from-mirror = \"sometimes\"\n",
                "unsupported pull-from-mirror value \"sometimes\"",
            ),
            (
                "[[registry]]\nlocation = \"x.com\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.com\"\npull-from-mirror = \"all\"\n",
                "use one of them",
            ),
            (
                "[[registry]]\nprefix = \"a.com\"\nlocation = \"x.com\"\n[[registry]]\nprefix = \"b.com\"\nlocation = \"x.com\"\ninsecure = true\n",
                "different insecure settings",
            ),
            (
                "[[registry]]\nlocation = \"x.com\"\n[registries.insecure]\nregistries = [\"y.com\"]\n",
                "mixing version 1",
            ),
            (
                "unqualified-search-registries = [\"quay.io/team\"]\n",
                "invalid unqualified-search-registries entry",
            ),
        ] {
            let err = conf_error(text);
            assert!(err.contains(expected), "{text:?} gave {err}");
        }
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let conf = conf(
            "short-name-mode = \"enforcing\"\ncredential-helpers = [\"x\"]\n[aliases]\n\"busybox\" = \"docker.io/library/busybox\"\n\
             [[registry]]\nlocation = \"x.com\"\nfuture-key = 1\n[[registry.mirror]]\nlocation = \"m.com\"\nother = true\n",
        );
        assert_eq!(conf.registries.len(), 1);
        assert_eq!(conf.registries[0].mirrors[0].location, "m.com");
    }

    #[test]
    fn version_1_block_lists_block() {
        let conf = conf("[registries.block]\nregistries = ['evil.example']\n");
        let err = conf
            .pull_sources(&"evil.example/app:1".parse().unwrap())
            .unwrap_err();
        assert!(matches!(err, RegistriesConfError::Blocked { .. }), "{err}");
    }

    #[test]
    fn later_files_replace_tables_with_the_same_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "main.conf",
            "unqualified-search-registries = ['quay.io']\n[[registry]]\nlocation = 'quay.io'\nblocked = true\n[[registry]]\nlocation = 'ghcr.io'\n",
        );
        let drop_in = write(
            dir.path(),
            "drop-in.conf",
            "[[registry]]\nlocation = 'quay.io'\n[[registry.mirror]]\nlocation = 'm.internal'\n",
        );
        let conf = RegistriesConf::load(&[main, drop_in]).unwrap();
        assert_eq!(
            sources(&conf, "quay.io/a:1"),
            ["m.internal/a:1 mirror", "quay.io/a:1"]
        );
        assert_eq!(conf.registries.len(), 2);
        // Not set by the drop-in: the earlier list stays.
        assert_eq!(conf.unqualified_search_registries, ["quay.io"]);
    }
}
