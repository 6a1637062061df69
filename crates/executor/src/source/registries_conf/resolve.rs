//! Which table of a [`RegistriesConf`] applies to a reference (the longest matching
//! prefix, `*.domain` wildcards included), and the ordered places to pull it from: the
//! mirrors its `pull-from-mirror` lets serve it, then the primary location, each with
//! the prefix rewritten; a blocked reference is refused.

use super::{PullFromMirror, PullSource, RegistriesConf, RegistriesConfError, Registry};
use oci_spec::distribution::Reference;
use std::str::FromStr;

impl RegistriesConf {
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

#[cfg(test)]
mod tests {
    use crate::source::registries_conf::test_support::{conf, sources};

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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
