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

mod file;
mod resolve;

pub use file::default_paths;

use oci_spec::distribution::Reference;
use std::path::PathBuf;

/// Why a registries configuration could not be used, or refuses a reference.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesConfError {
    /// The file exists but cannot be read.
    #[error("cannot read registries configuration {path}")]
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

/// What the submodules' tests share: writing a file, loading one, listing endpoints.
#[cfg(test)]
mod test_support {
    use super::RegistriesConf;
    use std::path::{Path, PathBuf};

    pub(super) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(super) fn conf(text: &str) -> RegistriesConf {
        let dir = tempfile::tempdir().unwrap();
        RegistriesConf::load(&[write(dir.path(), "r.conf", text)]).unwrap()
    }

    /// The endpoints for `reference` as `host/path:tag (insecure?, mirror?)` strings.
    pub(super) fn sources(conf: &RegistriesConf, reference: &str) -> Vec<String> {
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
}
