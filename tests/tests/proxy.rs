//! `executor pull` through `HTTP_PROXY`/`HTTPS_PROXY`, and around it with `NO_PROXY`,
//! against a real `docker-registry` and a recording proxy on loopback.
//!
//! The registry is named `registry.test:PORT`, which only the proxy resolves (to
//! `127.0.0.1:PORT`): loopback registries are never proxied (Go's rule, kept by the
//! executor), and a name the machine cannot resolve proves that a pull that worked
//! went through the proxy.

use integration_tests::{BuiltImage, ForwardProxy, Registry, RegistryConfig, push_marked_image};
use std::path::Path;

fn push_image(registry: &Registry, image: &str) -> BuiltImage {
    push_marked_image(registry, image).unwrap()
}

/// `registry.test:PORT` for a registry on `127.0.0.1:PORT`.
fn test_name(registry: &Registry) -> String {
    let port = registry.addr().rsplit_once(':').unwrap().1;
    format!("registry.test:{port}")
}

/// Runs `executor pull ARGS` with exactly the proxy variables `env` (all others removed).
fn pull(root: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = std::process::Command::new(integration_tests::executor_bin().unwrap());
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(name);
    }
    command
        .envs(env.iter().copied())
        .arg("--root")
        .arg(root)
        .args(["--log-level", "warn", "pull"])
        .args(args)
        // No mirrors or blocks from the machine's own configuration.
        .args(["--registries-conf", "/dev/null"]);
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_plain_http_pull_goes_through_http_proxy() {
    let registry = Registry::start().unwrap();
    let built = push_image(&registry, "proxied/app:v1");
    let name = test_name(&registry);
    let proxy = ForwardProxy::start(&[(&name, registry.addr())]).unwrap();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{name}/proxied/app:v1");
    let (code, stdout, stderr) = pull(
        root.path(),
        &[&image, "--insecure-registry", &name],
        &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", "")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), built.digest);
    let requests = proxy.requests();
    let forwarded = |part: &str| {
        requests
            .iter()
            .any(|r| r.starts_with(&format!("GET http://{name}/v2/proxied/app/{part}")))
    };
    assert!(forwarded("manifests/v1"), "{requests:?}");
    assert!(forwarded("blobs/sha256:"), "{requests:?}");
}

#[test]
fn an_https_pull_tunnels_through_https_proxy() {
    let registry = Registry::start_with(&RegistryConfig {
        tls: true,
        ..RegistryConfig::default()
    })
    .unwrap();
    let built = push_image(&registry, "tunnel/app:v1");
    let name = test_name(&registry);
    let proxy = ForwardProxy::start(&[(&name, registry.addr())]).unwrap();
    let root = tempfile::tempdir().unwrap();
    let ca_dir = registry.ca_dir();
    let image = format!("{name}/tunnel/app:v1");
    let (code, stdout, stderr) = pull(
        root.path(),
        &[&image, "--cert-dir", ca_dir.to_str().unwrap()],
        // Lower case works too; HTTP_PROXY would not be used for HTTPS.
        &[
            ("https_proxy", &proxy.url()),
            ("HTTP_PROXY", "http://127.0.0.1:9"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), built.digest);
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("CONNECT {name} "))),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|r| r.starts_with("CONNECT")),
        "{requests:?}"
    );
}

#[test]
fn no_proxy_entries_bypass_the_proxy() {
    let registry = Registry::start().unwrap();
    push_image(&registry, "bypass/app:v1");
    let name = test_name(&registry);
    let proxy = ForwardProxy::start(&[(&name, registry.addr())]).unwrap();
    let image = format!("{name}/bypass/app:v1");
    let port_entry = name.clone();
    // Each form bypasses: the name connects directly, and the machine cannot resolve it.
    for no_proxy in [
        "registry.test",
        ".test",
        "*.test",
        &port_entry,
        "other.example, *",
    ] {
        let root = tempfile::tempdir().unwrap();
        let (code, _, stderr) = pull(
            root.path(),
            &[&image, "--insecure-registry", &name],
            &[("HTTP_PROXY", &proxy.url()), ("no_proxy", no_proxy)],
        );
        assert_eq!(code, 125, "NO_PROXY={no_proxy}: {stderr}");
        assert!(stderr.contains("registry.test"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    assert_eq!(proxy.requests(), Vec::<String>::new());
    // An entry for another port or host does not: the pull goes through and works.
    for no_proxy in ["registry.test:1", "test.registry", "sub.registry.test"] {
        let root = tempfile::tempdir().unwrap();
        let (code, _, stderr) = pull(
            root.path(),
            &[&image, "--insecure-registry", &name],
            &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", no_proxy)],
        );
        assert_eq!(code, 0, "NO_PROXY={no_proxy}: {stderr}");
    }
    assert!(!proxy.requests().is_empty());
}

#[test]
fn a_loopback_registry_is_reached_directly() {
    let registry = Registry::start().unwrap();
    let built = push_image(&registry, "local/app:v1");
    let proxy = ForwardProxy::start(&[]).unwrap();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/local/app:v1", registry.addr());
    let (code, stdout, stderr) = pull(
        root.path(),
        &[&image, "--insecure-registry", registry.addr()],
        &[("HTTP_PROXY", &proxy.url()), ("HTTPS_PROXY", &proxy.url())],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), built.digest);
    assert_eq!(proxy.requests(), Vec::<String>::new());
}

#[test]
fn a_bad_proxy_variable_is_one_line_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let (code, _, stderr) = pull(
        root.path(),
        &["registry.test:5000/app:v1"],
        &[("HTTPS_PROXY", "socks5://user:s3cret@proxy:1080")],
    );
    assert_eq!(code, 125, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HTTPS_PROXY"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
