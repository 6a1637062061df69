//! `containers-registries.conf(5)`, the file podman, skopeo and buildah read, so that a
//! node configured for them needs no extra flag: which registries are plain HTTP,
//! which are blocked, and which mirrors to try before them.
//!
//! Pure data and pure functions, apart from reading the files: [`RegistriesConf::load`]
//! parses and merges them, and [`RegistriesConf::pull_sources`] turns an image reference
//! into the ordered list of places to pull it from (mirrors first, the primary last),
//! or refuses it as blocked. The semantics are containers-image's
//! (`pkg/sysregistriesv2`):
//!
//! - version 2 `[[registry]]` tables: `prefix` (default: `location`), `location`,
//!   `insecure`, `blocked`, `mirror-by-digest-only`, and `[[registry.mirror]]` tables
//!   with `location`, `insecure` and `pull-from-mirror = "all" | "digest-only" |
//!   "tag-only"`. The table whose prefix matches the reference longest wins; a prefix
//!   matches when it equals the reference or is followed in it by `/`, `:` or `@`, and a
//!   `*.example.com` prefix matches any host under `example.com`. Every endpoint gets the
//!   reference with the prefix replaced by its `location` (`docker.io/library` →
//!   `mirror.internal/dockerhub` turns `docker.io/library/busybox:1` into
//!   `mirror.internal/dockerhub/busybox:1`). Of two tables with the same prefix the
//!   first counts; two tables with the same location must agree on `insecure` and
//!   `blocked`.
//! - version 1 `[registries.insecure]`, `[registries.block]` and `[registries.search]`
//!   lists, read as version 2 tables; one file cannot mix the two versions.
//! - later files (drop-ins) replace earlier files' tables with the same prefix, and
//!   their `unqualified-search-registries` replaces the earlier list when present.
//! - keys this module does not know (`short-name-mode`, `[aliases]`,
//!   `credential-helpers`, future ones) are ignored, logged at debug level, as
//!   containers-image does.
//!
//! Here `insecure = true` means plain HTTP (the executor has no "HTTPS without
//! verification" mode). `unqualified-search-registries` is validated but never searched:
//! the executor is a node tool and a short name always means `docker.io`, as with
//! docker, containerd and the kubelet, so that the order of a search list (and who
//! registers a name first on which registry) cannot decide what runs.

use oci_spec::distribution::Reference;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a registries configuration could not be used, or refuses a reference.
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
    /// The file is not valid TOML of the expected shape, or breaks a rule of
    /// `containers-registries.conf(5)`.
    #[error("invalid registries configuration {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, on one line.
        reason: String,
    },
    /// The reference falls under a registry marked `blocked = true`.
    #[error("registry {prefix} is blocked by {path}")]
    Blocked {
        /// The reference asked for.
        reference: String,
        /// The prefix of the blocking table.
        prefix: String,
        /// The file that blocks it.
        path: PathBuf,
    },
    /// Replacing the prefix with an endpoint's location gave no valid reference.
    #[error(
        "registries configuration {path}: location {location} turns {reference} into invalid reference {rewritten:?}"
    )]
    Rewrite {
        /// The reference asked for.
        reference: String,
        /// The endpoint's location.
        location: String,
        /// What the rewriting produced.
        rewritten: String,
        /// The file the location comes from.
        path: PathBuf,
    },
}

/// When a mirror is used (`pull-from-mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullFromMirror {
    /// For every reference (the default).
    #[default]
    All,
    /// Only for references by digest (a mirror that cannot be trusted to map tags, or
    /// that only holds what was mirrored by digest for an air-gapped node).
    DigestOnly,
    /// Only for references by tag.
    TagOnly,
}

/// A mirror of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port][/namespace...]` that replaces the registry's prefix.
    pub location: String,
    /// Reached over plain HTTP.
    pub insecure: bool,
    /// Which references it serves.
    pub pull_from_mirror: PullFromMirror,
}

/// One `[[registry]]` table (or version 1 list entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// What references it applies to: `host[:port][/path][:tag|@digest]` or `*.domain`.
    pub prefix: String,
    /// Where they are pulled from; empty only for a wildcard prefix (the reference
    /// is then used unchanged).
    pub location: String,
    /// The primary location is reached over plain HTTP.
    pub insecure: bool,
    /// Pulls of references under this prefix are refused.
    pub blocked: bool,
    /// Mirrors are used only for references by digest (the older form of
    /// `pull-from-mirror = "digest-only"`, for all mirrors at once).
    pub mirror_by_digest_only: bool,
    /// Mirrors, tried in this order before the location.
    pub mirrors: Vec<Mirror>,
    /// The file this table comes from (for error messages).
    pub source: PathBuf,
}

/// One place to try pulling an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The reference rewritten for this endpoint.
    pub reference: Reference,
    /// Reached over plain HTTP.
    pub insecure: bool,
    /// A mirror (rather than the primary location).
    pub mirror: bool,
}

/// The merged registries configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// The tables, one per prefix.
    pub registries: Vec<Registry>,
    /// `unqualified-search-registries`: validated, never searched (see the module doc).
    pub unqualified_search_registries: Vec<String>,
}

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

    /// The hosts (`host[:port]`) whose primary location is plain HTTP.
    pub fn insecure_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for registry in self.registries.iter().filter(|r| r.insecure) {
            let location = if registry.location.is_empty() {
                &registry.prefix
            } else {
                &registry.location
            };
            let host = host_of(location);
            if !host.starts_with("*.") && !hosts.iter().any(|h| h == host) {
                hosts.push(host.to_owned());
            }
        }
        hosts
    }

    /// The table whose prefix matches `reference` longest, if any.
    pub fn find(&self, reference: &str) -> Option<&Registry> {
        self.registries
            .iter()
            .filter(|r| matching_prefix_len(reference, &r.prefix).is_some())
            .max_by_key(|r| r.prefix.len())
    }

    /// Where to pull `reference` from, in the order to try: the mirrors that serve it
    /// (by digest or by tag, as their `pull-from-mirror` says), then the primary
    /// location. A reference under no table is pulled from where it names, not
    /// insecure. Refuses a reference under a blocked table.
    pub fn pull_sources(
        &self,
        reference: &Reference,
    ) -> Result<Vec<PullSource>, RegistriesConfError> {
        let text = reference.to_string();
        let Some(registry) = self.find(&text) else {
            return Ok(vec![PullSource {
                reference: reference.clone(),
                insecure: false,
                mirror: false,
            }]);
        };
        if registry.blocked {
            return Err(RegistriesConfError::Blocked {
                reference: text,
                prefix: registry.prefix.clone(),
                path: registry.source.clone(),
            });
        }
        let by_digest = reference.digest().is_some();
        let mirrors = registry.mirrors.iter().filter(|m| {
            if registry.mirror_by_digest_only {
                return by_digest;
            }
            match m.pull_from_mirror {
                PullFromMirror::All => true,
                PullFromMirror::DigestOnly => by_digest,
                PullFromMirror::TagOnly => !by_digest,
            }
        });
        let mut sources = Vec::new();
        for mirror in mirrors {
            sources.push(PullSource {
                reference: rewrite(reference, &text, registry, &mirror.location)?,
                insecure: mirror.insecure,
                mirror: true,
            });
        }
        sources.push(PullSource {
            reference: rewrite(reference, &text, registry, &registry.location)?,
            insecure: registry.insecure,
            mirror: false,
        });
        Ok(sources)
    }
}

/// `reference` (whose text is `text`) with `registry`'s prefix replaced by `location`.
fn rewrite(
    reference: &Reference,
    text: &str,
    registry: &Registry,
    location: &str,
) -> Result<Reference, RegistriesConfError> {
    if location.is_empty() {
        // A wildcard table without a location: pull from where the reference says.
        return Ok(reference.clone());
    }
    let matched = matching_prefix_len(text, &registry.prefix).unwrap_or(0);
    let rewritten = format!("{location}{}", &text[matched..]);
    Reference::from_str(&rewritten)
        .ok()
        // The parser would make a host-less result a docker.io name: not what was meant.
        .filter(|r| r.registry() == host_of(location))
        .ok_or_else(|| RegistriesConfError::Rewrite {
            reference: text.to_owned(),
            location: location.to_owned(),
            rewritten,
            path: registry.source.clone(),
        })
}

/// How many bytes of `reference` a table's `prefix` covers, when it matches.
fn matching_prefix_len(reference: &str, prefix: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix('*') {
        // `*.example.com`: any host (without port) ending in `.example.com`.
        let host_end = reference.find('/').unwrap_or(reference.len());
        return reference[..host_end].ends_with(domain).then_some(host_end);
    }
    let rest = reference.strip_prefix(prefix)?;
    match rest.chars().next() {
        None | Some('/' | ':' | '@') => Some(prefix.len()),
        Some(_) => None,
    }
}

/// The `host[:port]` part of a location.
fn host_of(location: &str) -> &str {
    location.split('/').next().unwrap_or(location)
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

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn conf(text: &str) -> RegistriesConf {
        let dir = tempfile::tempdir().unwrap();
        RegistriesConf::load(&[write(dir.path(), "r.conf", text)]).unwrap()
    }

    fn conf_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let err = RegistriesConf::load(&[write(dir.path(), "r.conf", text)])
            .unwrap_err()
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("r.conf"), "{err}");
        err
    }

    /// The endpoints for `reference` as `host/path:tag (insecure?, mirror?)` strings.
    fn sources(conf: &RegistriesConf, reference: &str) -> Vec<String> {
        conf.pull_sources(&reference.parse().unwrap())
            .unwrap()
            .iter()
            .map(|s| {
                let mut text = s.reference.to_string();
                if s.insecure {
                    text.push_str(" insecure");
                }
                if s.mirror {
                    text.push_str(" mirror");
                }
                text
            })
            .collect()
    }

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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
    fn mirrors_come_first_and_the_prefix_is_rewritten() {
        let conf = conf(
            r#"
[[registry]]
prefix = "docker.io/library"
location = "registry.internal/dockerhub"
[[registry.mirror]]
location = "mirror-a.internal:5000/hub/"
insecure = true
[[registry.mirror]]
location = "mirror-b.internal"
"#,
        );
        assert_eq!(
            sources(&conf, "docker.io/library/busybox:1.36"),
            [
                "mirror-a.internal:5000/hub/busybox:1.36 insecure mirror",
                "mirror-b.internal/busybox:1.36 mirror",
                "registry.internal/dockerhub/busybox:1.36",
            ]
        );
        // Not under the prefix: pulled from where it says.
        assert_eq!(
            sources(&conf, "docker.io/team/app:1"),
            ["docker.io/team/app:1"]
        );
        // A prefix matches at `/`, `:` or `@` boundaries only.
        assert_eq!(
            sources(&conf, "docker.io/libraryx/app:1"),
            ["docker.io/libraryx/app:1"]
        );
    }

    #[test]
    fn pull_from_mirror_picks_mirrors_by_reference_kind() {
        let conf = conf(
            r#"
[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "digests.internal"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.internal"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "all.internal"

[[registry]]
location = "ghcr.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "old-style.internal"
"#,
        );
        assert_eq!(
            sources(&conf, "quay.io/a/b:1"),
            [
                "tags.internal/a/b:1 mirror",
                "all.internal/a/b:1 mirror",
                "quay.io/a/b:1"
            ]
        );
        assert_eq!(
            sources(&conf, &format!("quay.io/a/b@{DIGEST}")),
            [
                format!("digests.internal/a/b@{DIGEST} mirror"),
                format!("all.internal/a/b@{DIGEST} mirror"),
                format!("quay.io/a/b@{DIGEST}"),
            ]
        );
        assert_eq!(sources(&conf, "ghcr.io/a/b:1"), ["ghcr.io/a/b:1"]);
        assert_eq!(
            sources(&conf, &format!("ghcr.io/a/b@{DIGEST}")),
            [
                format!("old-style.internal/a/b@{DIGEST} mirror"),
                format!("ghcr.io/a/b@{DIGEST}")
            ]
        );
    }

    #[test]
    fn the_longest_prefix_wins_and_wildcards_match_subdomains() {
        let conf = conf(
            r#"
[[registry]]
prefix = "*.example.com"
location = ""
insecure = true

[[registry]]
prefix = "*.example.com"
location = "ignored-second-table.com"

[[registry]]
prefix = "team.example.com/secret"
location = "team.example.com/secret"
blocked = true
insecure = true

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "hub-mirror.internal"

[[registry]]
prefix = "docker.io/library/busybox:1"
location = "pinned.internal/busybox:stable"
"#,
        );
        assert_eq!(
            sources(&conf, "a.b.example.com/app:1"),
            ["a.b.example.com/app:1 insecure"]
        );
        // The wildcard needs a subdomain, and a port is not part of the host it matches.
        assert_eq!(sources(&conf, "example.com/app:1"), ["example.com/app:1"]);
        assert_eq!(
            sources(&conf, "a.example.com:5000/app:1"),
            ["a.example.com:5000/app:1"]
        );
        let blocked = conf
            .pull_sources(&"team.example.com/secret/app:1".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            blocked.contains("registry team.example.com/secret is blocked by")
                && blocked.contains("r.conf"),
            "{blocked}"
        );
        assert_eq!(
            sources(&conf, "team.example.com/public/app:1"),
            ["team.example.com/public/app:1 insecure"]
        );
        assert_eq!(
            sources(&conf, "docker.io/library/busybox:1"),
            ["pinned.internal/busybox:stable"]
        );
        assert_eq!(
            sources(&conf, "docker.io/library/busybox:2"),
            [
                "hub-mirror.internal/library/busybox:2 mirror",
                "docker.io/library/busybox:2"
            ]
        );
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

    #[test]
    fn a_location_that_rewrites_to_no_reference_is_named() {
        let conf = conf("[[registry]]\nprefix = 'quay.io'\nlocation = 'Bad Host'\n");
        let err = conf
            .pull_sources(&"quay.io/a:1".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("location Bad Host") && err.contains("r.conf"),
            "{err}"
        );
    }
}
