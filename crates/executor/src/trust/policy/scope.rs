//! Policy scopes: the ones an image falls under, most specific first, and checking
//! the scopes a policy file names.

use super::name::{image_name, parse_docker_reference};
use crate::reference::LayoutTarget;
use oci_spec::distribution::Reference;
use std::path::Path;

/// Scopes of a registry image, most specific first: `host/repo:tag` (or `@digest`),
/// `host/repo`, its namespaces, `host`, then `*.domain` wildcards of the host.
pub(super) fn docker_scopes(reference: &Reference) -> Vec<String> {
    let name = image_name(reference);
    let mut scopes = vec![name.whole()];
    let mut repository = name.repository.as_str();
    scopes.push(repository.to_owned());
    while let Some((parent, _)) = repository.rsplit_once('/') {
        scopes.push(parent.to_owned());
        repository = parent;
    }
    // The host without a port, then its parent domains: `a.b.c` gives `*.b.c`, `*.c`.
    let host = reference.registry().split(':').next().unwrap_or_default();
    let mut rest = host;
    while let Some((_, parent)) = rest.split_once('.') {
        scopes.push(format!("*.{parent}"));
        rest = parent;
    }
    scopes
}

/// Scopes of a layout image: `DIR:TAG`, `DIR`, then each parent directory.
pub(super) fn oci_scopes(path: &Path, target: &LayoutTarget) -> Vec<String> {
    let dir = path.display().to_string();
    let mut scopes = Vec::new();
    if let LayoutTarget::Tag(tag) = target {
        scopes.push(format!("{dir}:{tag}"));
    }
    scopes.extend(path.ancestors().map(|p| p.display().to_string()));
    scopes.retain(|s| !s.is_empty());
    scopes
}

pub(super) fn check_scope(transport: &str, scope: &str) -> Result<(), String> {
    match transport {
        _ if scope.is_empty() => Ok(()),
        "docker" => check_docker_scope(scope),
        "oci" => {
            if scope.starts_with('/') {
                Ok(())
            } else {
                Err("an oci scope is an absolute directory, optionally with :TAG".into())
            }
        }
        _ => Ok(()),
    }
}

/// A docker scope: `*.domain`, or a host, namespace, repository or reference.
pub(super) fn check_docker_scope(scope: &str) -> Result<(), String> {
    if let Some(domain) = scope.strip_prefix("*.") {
        if domain.is_empty() || domain.contains(['/', '*', ':']) {
            return Err(format!(
                "{scope:?} is not a valid wildcard (use *.example.com)"
            ));
        }
        return Ok(());
    }
    if scope.contains('*') || scope.starts_with('/') || scope.ends_with('/') || scope.contains("//")
    {
        return Err(format!("{scope:?} is not a valid scope"));
    }
    // A bare host is a valid scope; anything longer must parse as a reference with an
    // explicit host, since a scope is never normalized (`busybox` would mean nothing).
    let host = scope.split('/').next().unwrap_or_default();
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err(format!(
            "{scope:?} does not start with a registry host (as docker.io/library/busybox)"
        ));
    }
    if scope.contains('/') {
        parse_docker_reference(scope)?;
    }
    Ok(())
}
