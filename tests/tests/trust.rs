//! Signature policy (`containers-policy.json`) against the real `cosign` and a real
//! `docker-registry`: images are signed with `cosign sign --key ... --tlog-upload=false`
//! and run (or refused) with `executor run --signature-policy`. A refusal is one line,
//! exit 125, and leaves nothing behind: no blob of the image, no snapshot, no run.

use integration_tests::{
    BuiltImage, Compression, Entry, Fault, FaultProxy, ImageSpec, LayerSpec, ManifestFormat,
    RUNNER_CONTEXT, Registry, Times, busybox_layer, executor_bin, push_layout, run_executor,
    write_image,
};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The password of the test keys (cosign encrypts private keys).
const PASSWORD: &str = "executor-test";

struct Fixture {
    registry: Registry,
    dir: tempfile::TempDir,
}

/// A registry and key set of the test's own (stopped when it ends).
fn fixture() -> Fixture {
    {
        let dir = tempfile::Builder::new()
            .prefix("executor-trust-")
            .tempdir()
            .unwrap();
        for prefix in ["main", "other"] {
            cosign(
                dir.path(),
                &["generate-key-pair", "--output-key-prefix", prefix],
            );
        }
        // An Ed25519 key, made by openssl and imported as cosign users do.
        let pem = dir.path().join("ed25519.pem");
        let made = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&pem)
            .status()
            .unwrap();
        assert!(made.success());
        cosign(
            dir.path(),
            &[
                "import-key-pair",
                "--key",
                "ed25519.pem",
                "--output-key-prefix",
                "ed25519",
            ],
        );
        write_inputs(dir.path());
        Fixture {
            registry: Registry::start().unwrap(),
            dir,
        }
    }
}

impl Fixture {
    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pub"))
    }

    fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}", self.registry.addr())
    }

    /// Pushes a busybox image printing `ran NAME` as `repo:tag`; its digest.
    fn push(&self, repo_tag: &str) -> BuiltImage {
        let layout = tempfile::tempdir().unwrap();
        let (_, tag) = repo_tag.rsplit_once(':').unwrap();
        let built = write_image(layout.path(), tag, &image_spec(repo_tag)).unwrap();
        push_layout(
            layout.path(),
            tag,
            &self.registry,
            repo_tag,
            ManifestFormat::Oci,
            None,
        )
        .unwrap();
        built
    }

    /// `cosign sign` with key `name` (`main`, `other`, `ed25519`); `extra` flags first.
    fn sign(&self, name: &str, image: &str, extra: &[&str]) {
        let key = format!("{name}.key");
        let mut args = vec!["sign", "--key", &key, "--tlog-upload=false"];
        args.extend(["--allow-insecure-registry", "--yes"]);
        args.extend(extra);
        args.push(image);
        cosign(self.dir.path(), &args);
    }

    /// Writes a policy file; `{reg}` in `text` becomes the registry address, `{dir}`
    /// the key directory.
    fn policy(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.policy.json"));
        let text = text
            .replace("{reg}", self.registry.addr())
            .replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A policy requiring a signature by `key` with `identity` for the whole registry,
    /// accepting anything else.
    fn signed_policy(&self, name: &str, key: &str, identity: &str) -> PathBuf {
        self.policy(
            name,
            &format!(
                r#"{{"default": [{{"type": "insecureAcceptAnything"}}],
                    "transports": {{"docker": {{"{{reg}}": [{{"type": "sigstoreSigned",
                      "keyPath": "{{dir}}/{key}.pub", "signedIdentity": {identity}}}]}}}}}}"#
            ),
        )
    }
}

/// The runner inputs every run is given: `context.yaml` and `args.yaml`.
fn write_inputs(dir: &Path) {
    std::fs::write(dir.join("context.yaml"), RUNNER_CONTEXT).unwrap();
    std::fs::write(dir.join("args.yaml"), "{}\n").unwrap();
}

fn image_spec(name: &str) -> ImageSpec {
    let mut spec = ImageSpec::host(vec![
        busybox_layer(Compression::Gzip).unwrap(),
        LayerSpec {
            entries: vec![Entry::file("etc/marker", format!("ran {name}\n"))],
            compression: Compression::Gzip,
        },
    ]);
    spec.config["Cmd"] = serde_json::json!(["/bin/cat", "/etc/marker"]);
    spec
}

fn cosign(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new("cosign")
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("COSIGN_EXPERIMENTAL", "1")
        .output()
        .expect("running cosign (tests/install-deps.sh installs it)");
    assert!(
        output.status.success(),
        "cosign {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `executor run IMAGE --signature-policy POLICY` in a fresh root; the root stays
/// for checks.
fn run(fx: &Fixture, image: &str, policy: &Path) -> (tempfile::TempDir, i32, String, String) {
    let root = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_in(fx, root.path(), image, policy, &[]);
    (root, code, stdout, stderr)
}

fn run_in(
    fx: &Fixture,
    root: &Path,
    image: &str,
    policy: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let policy = policy.display().to_string();
    let context = fx.dir.path().join("context.yaml").display().to_string();
    let runner_args = fx.dir.path().join("args.yaml").display().to_string();
    let mut args = vec!["run", image, "--insecure-registry", fx.registry.addr()];
    args.extend(["--context", &context, "--args", &runner_args]);
    args.extend(["--signature-policy", &policy]);
    args.extend(extra);
    run_executor(root, &args)
}

fn assert_ran(fx: &Fixture, image: &str, policy: &Path) {
    let (_root, code, stdout, stderr) = run(fx, image, policy);
    assert_eq!(code, 0, "{image}: {stderr}");
    assert!(stdout.starts_with("ran "), "{image}: {stdout}");
}

/// Refused in one line that names the image, says `expected`, and names the policy;
/// exit 125; nothing of the image is left under the root.
fn assert_refused(fx: &Fixture, image: &str, policy: &Path, expected: &str) {
    let (root, code, stdout, stderr) = run(fx, image, policy);
    assert_refusal(root.path(), code, &stderr, expected, policy);
    assert!(stdout.is_empty(), "{image}: the runner ran: {stdout}");
}

fn assert_refusal(root: &Path, code: i32, stderr: &str, expected: &str, policy: &Path) {
    assert_eq!(code, 125, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(
        stderr.starts_with("executor: image ")
            && stderr.contains(" is not trusted: ")
            && stderr.contains(expected)
            && stderr
                .trim_end()
                .ends_with(&format!("(policy {})", policy.display())),
        "{stderr}"
    );
    assert_eq!(leftovers(root), Vec::<String>::new(), "{stderr}");
}

/// What a refused run left: runs, snapshots, temp files, any blob but manifests.
fn leftovers(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["runs", "tmp", "snapshots", "images"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for entry in entries {
                let entry = entry.unwrap();
                // Empty bookkeeping directories are fine; content is not.
                let empty = entry.path().is_dir()
                    && std::fs::read_dir(entry.path()).unwrap().next().is_none();
                let name = entry.file_name().to_string_lossy().into_owned();
                // The snapshotter's record of whether overlayfs works here, written
                // when it opens, is no part of any image.
                let bookkeeping = name.ends_with(".lock") || name == "overlay-probe";
                if !empty && !bookkeeping {
                    found.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
                }
            }
        }
    }
    let blobs = root.join("blobs/sha256");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.ends_with(".lock") {
                found.push(format!("blobs/sha256/{name}"));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let prefix = format!(" {}/", root.display());
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&prefix))
            .map(|l| format!("mounted: {l}")),
    );
    found
}

const MATCH_REPOSITORY: &str = r#"{"type": "matchRepository"}"#;

#[test]
fn a_signed_image_runs_and_records_its_key() {
    let fx = fixture();
    let image = fx.reference("trust/signed:v1");
    fx.push("trust/signed:v1");
    fx.sign("main", &image, &[]);
    let policy = fx.signed_policy("signed", "main", MATCH_REPOSITORY);
    let root = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_in(&fx, root.path(), &image, &policy, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "ran trust/signed:v1\n");

    let (code, table, _) = run_executor(root.path(), &["images"]);
    assert_eq!(code, 0);
    let key = fx.key("main").display().to_string();
    let row = table.lines().find(|l| l.starts_with(&image)).unwrap();
    assert!(row.trim_end().ends_with(&key), "{table}");
    let (_, json, _) = run_executor(root.path(), &["images", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[0]["verified"]["key"], key.as_str(), "{json}");
    assert_eq!(
        rows[0]["verified"]["identity"],
        image.rsplit_once(':').unwrap().0
    );

    // Run again from the store: the kept signature verifies offline, even with
    // --pull never; under a policy with another key it does not.
    let (code, stdout, stderr) = run_in(&fx, root.path(), &image, &policy, &["--pull", "never"]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "ran trust/signed:v1\n"),
        "{stderr}"
    );
    let other = fx.signed_policy("signed-other", "other", MATCH_REPOSITORY);
    let (code, _, stderr) = run_in(&fx, root.path(), &image, &other, &["--pull", "never"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(stderr.contains("no signature by key"), "{stderr}");
}

#[test]
fn an_unsigned_image_is_refused_before_any_blob() {
    let fx = fixture();
    fx.push("trust/unsigned:v1");
    let policy = fx.signed_policy("unsigned", "main", MATCH_REPOSITORY);
    let key = fx.key("main").display().to_string();
    assert_refused(
        &fx,
        &fx.reference("trust/unsigned:v1"),
        &policy,
        &format!("no signature by key {key}"),
    );
}

#[test]
fn a_stored_unsigned_image_is_not_run_under_a_policy() {
    let fx = fixture();
    let image = fx.reference("trust/stored:v1");
    fx.push("trust/stored:v1");
    let root = tempfile::tempdir().unwrap();
    // Pulled with no policy (everything accepted), then run under one.
    let (code, _, stderr) = run_executor(
        root.path(),
        &["pull", &image, "--insecure-registry", fx.registry.addr()],
    );
    assert_eq!(code, 0, "{stderr}");
    let policy = fx.signed_policy("stored", "main", MATCH_REPOSITORY);
    for pull in ["missing", "never"] {
        let (code, stdout, stderr) = run_in(&fx, root.path(), &image, &policy, &["--pull", pull]);
        assert_eq!(code, 125, "--pull {pull}: {stderr}");
        assert!(stdout.is_empty(), "--pull {pull}: {stdout}");
        assert!(
            stderr.contains("no signature by key"),
            "--pull {pull}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let fx = fixture();
    let image = fx.reference("trust/other-key:v1");
    fx.push("trust/other-key:v1");
    fx.sign("other", &image, &[]);
    let policy = fx.signed_policy("other-key", "main", MATCH_REPOSITORY);
    assert_refused(&fx, &image, &policy, "no signature by key");
    // Several keys: any of them may have signed.
    let either = fx.policy(
        "either-key",
        r#"{"default": [{"type": "sigstoreSigned", "keyPaths": ["{dir}/main.pub", "{dir}/other.pub"],
             "signedIdentity": {"type": "matchRepository"}}]}"#,
    );
    assert_ran(&fx, &image, &either);
}

#[test]
fn a_signature_moved_to_another_digest_is_refused() {
    let fx = fixture();
    let image = fx.reference("trust/retag:v1");
    let signed = fx.push("trust/retag:v1");
    fx.sign("main", &image, &[]);
    // The tag now names another image, and the old signature is copied to its
    // signature tag: a valid signature, for the wrong digest.
    let moved = fx.push("trust/retag:v2");
    let retag = fx.reference("trust/retag");
    skopeo_copy(
        &format!("docker://{retag}:{}", sig_tag(&signed.digest)),
        &format!("docker://{retag}:{}", sig_tag(&moved.digest)),
    );
    let policy = fx.signed_policy("retag", "main", MATCH_REPOSITORY);
    assert_refused(
        &fx,
        &fx.reference("trust/retag:v2"),
        &policy,
        &format!("is for manifest {}, not {}", signed.digest, moved.digest),
    );
    assert_ran(&fx, &image, &policy);
}

#[test]
fn a_tampered_payload_is_refused() {
    let fx = fixture();
    let image = fx.reference("trust/tampered:v1");
    let built = fx.push("trust/tampered:v1");
    fx.sign("main", &image, &[]);
    // Rewrite the signed payload to name another repository and push the signature
    // manifest back with the new payload and the old signature.
    let signature = format!(
        "docker://{}:{}",
        fx.reference("trust/tampered"),
        sig_tag(&built.digest)
    );
    let layout = tempfile::tempdir().unwrap();
    let oci = format!("oci:{}:sig", layout.path().display());
    skopeo_copy(&signature, &oci);
    rewrite_payload(layout.path(), "sig", |payload| {
        payload.replace("trust/tampered", "trust/tampereD")
    });
    skopeo_copy(&oci, &signature);
    let policy = fx.signed_policy("tampered", "main", MATCH_REPOSITORY);
    assert_refused(&fx, &image, &policy, "no signature by key");
}

/// The tag cosign keeps the signatures of `digest` under.
fn sig_tag(digest: &str) -> String {
    digest.replace(':', "-") + ".sig"
}

/// `skopeo copy` keeping digests (a signature must stay a signature of the same
/// manifest), plain HTTP to the test registry.
fn skopeo_copy(from: &str, to: &str) {
    let output = Command::new("skopeo")
        .args(["copy", "--quiet", "--preserve-digests", "--insecure-policy"])
        .args([
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            from,
            to,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo copy {from} {to}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Replaces the payload layer of the signature manifest tagged `tag` in `layout` with
/// `edit` of it, updating the digests up to `index.json`.
fn rewrite_payload(layout: &Path, tag: &str, edit: impl Fn(&str) -> String) {
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let put = |data: &[u8]| {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        std::fs::write(blob(&digest), data).unwrap();
        digest
    };
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let manifest_digest = entry["digest"].as_str().unwrap().to_owned();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let layer = &mut manifest["layers"][0];
    let payload = std::fs::read_to_string(blob(layer["digest"].as_str().unwrap())).unwrap();
    let edited = edit(&payload);
    assert_ne!(edited, payload, "the edit changed nothing");
    layer["digest"] = put(edited.as_bytes()).into();
    layer["size"] = edited.len().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    entry["digest"] = put(&manifest).into();
    entry["size"] = manifest.len().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn scopes_reject_and_accept_as_the_policy_says() {
    let fx = fixture();
    fx.push("trust/scoped/rejected:v1");
    fx.push("trust/scoped/open:v1");
    fx.push("trust/scoped/strict:v1");
    let policy = fx.policy(
        "scopes",
        r#"{"default": [{"type": "reject"}],
            "transports": {"docker": {
              "{reg}/trust/scoped/open": [{"type": "insecureAcceptAnything"}],
              "{reg}/trust/scoped": [{"type": "sigstoreSigned", "keyPath": "{dir}/main.pub"}],
              "{reg}/trust/scoped/rejected:v1": [{"type": "reject"}]
            }}}"#,
    );
    assert_refused(
        &fx,
        &fx.reference("trust/scoped/rejected:v1"),
        &policy,
        "the policy rejects it",
    );
    assert_ran(&fx, &fx.reference("trust/scoped/open:v1"), &policy);
    assert_refused(
        &fx,
        &fx.reference("trust/scoped/strict:v1"),
        &policy,
        "no signature by key",
    );
    // Outside every scope: the default rejects.
    fx.push("elsewhere/app:v1");
    assert_refused(
        &fx,
        &fx.reference("elsewhere/app:v1"),
        &policy,
        "the policy rejects it",
    );
}

#[test]
fn identity_rules_decide_which_signed_names_count() {
    let fx = fixture();
    let image = fx.reference("trust/identity:v1");
    let built = fx.push("trust/identity:v1");
    fx.sign("main", &image, &[]);
    // cosign signs the repository; the default rule wants the tag too, as in podman.
    let default = fx.policy(
        "identity-default",
        r#"{"default": [{"type": "sigstoreSigned", "keyPath": "{dir}/main.pub"}]}"#,
    );
    assert_refused(&fx, &image, &default, "use signedIdentity matchRepository");
    // By digest, the repository is enough for the default rule.
    let by_digest = format!("{}@{}", fx.reference("trust/identity"), built.digest);
    assert_ran(&fx, &by_digest, &default);

    // A copy of the image and its signature in another repository: the signature
    // names the original, so only a remapIdentity rule accepts it.
    skopeo_copy(
        &format!("docker://{image}"),
        &format!("docker://{}", fx.reference("mirrored/identity:v1")),
    );
    let sig_tag = sig_tag(&built.digest);
    skopeo_copy(
        &format!("docker://{}:{sig_tag}", fx.reference("trust/identity")),
        &format!("docker://{}:{sig_tag}", fx.reference("mirrored/identity")),
    );
    let mirrored = format!("{}@{}", fx.reference("mirrored/identity"), built.digest);
    let repository = fx.signed_policy("identity-repository", "main", MATCH_REPOSITORY);
    assert_refused(
        &fx,
        &mirrored,
        &repository,
        "which matchRepository does not accept",
    );
    let remap = fx.policy(
        "identity-remap",
        r#"{"default": [{"type": "sigstoreSigned", "keyPath": "{dir}/main.pub",
             "signedIdentity": {"type": "remapIdentity", "prefix": "{reg}/mirrored", "signedPrefix": "{reg}/trust"}}]}"#,
    );
    assert_ran(&fx, &mirrored, &remap);
    let exact = fx.policy(
        "identity-exact",
        r#"{"default": [{"type": "sigstoreSigned", "keyPath": "{dir}/main.pub",
             "signedIdentity": {"type": "exactRepository", "dockerRepository": "{reg}/trust/identity"}}]}"#,
    );
    assert_ran(&fx, &mirrored, &exact);
}

#[test]
fn ed25519_keys_and_key_data_verify() {
    let fx = fixture();
    let image = fx.reference("trust/ed25519:v1");
    fx.push("trust/ed25519:v1");
    fx.sign("ed25519", &image, &[]);
    assert_ran(
        &fx,
        &image,
        &fx.signed_policy("ed25519", "ed25519", MATCH_REPOSITORY),
    );
    assert_refused(
        &fx,
        &image,
        &fx.signed_policy("ed25519-main", "main", MATCH_REPOSITORY),
        "no signature by key",
    );
    // The same key inline, base64 of the PEM as podman takes it.
    use base64::Engine as _;
    let pem = std::fs::read(fx.key("ed25519")).unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(pem);
    let inline = fx.policy(
        "ed25519-data",
        &format!(
            r#"{{"default": [{{"type": "sigstoreSigned", "keyData": "{data}",
                 "signedIdentity": {{"type": "matchRepository"}}}}]}}"#
        ),
    );
    assert_ran(&fx, &image, &inline);
}

#[test]
fn signatures_stored_as_oci_referrers_verify() {
    let fx = fixture();
    let image = fx.reference("trust/referrers:v1");
    let built = fx.push("trust/referrers:v1");
    // Distribution 2.8 has no referrers API: cosign pushes the referrers tag
    // (`sha256-<hex>`, an index), the fallback the OCI 1.1 distribution spec defines.
    fx.sign("main", &image, &["--registry-referrers-mode=oci-1-1"]);
    let tags = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}", fx.reference("trust/referrers")))
        .output()
        .unwrap();
    let tags = String::from_utf8_lossy(&tags.stdout);
    let referrers_tag = built.digest.replace(':', "-");
    assert!(
        tags.contains(&format!("\"{referrers_tag}\"")) && !tags.contains(".sig"),
        "{tags}"
    );
    assert_ran(
        &fx,
        &image,
        &fx.signed_policy("referrers", "main", MATCH_REPOSITORY),
    );
    assert_refused(
        &fx,
        &image,
        &fx.signed_policy("referrers-other", "other", MATCH_REPOSITORY),
        "no signature by key",
    );

    // The same registry answering the referrers API (and hiding the referrers tag): the
    // signature is found through the API alone.
    let api = FaultProxy::start_with(
        fx.registry.addr(),
        "/referrers/sha256:",
        Fault::ReferrersApi,
        Times::Always,
    )
    .unwrap();
    let through_api = format!("{}/trust/referrers:v1", api.addr());
    let policy = fx.policy(
        "referrers-api",
        r#"{"default": [{"type": "sigstoreSigned", "keyPath": "{dir}/main.pub",
             "signedIdentity": {"type": "exactRepository", "dockerRepository": "{reg}/trust/referrers"}}]}"#,
    );
    let root = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_in(
        &fx,
        root.path(),
        &through_api,
        &policy,
        &["--insecure-registry", api.addr()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "ran trust/referrers:v1\n");
    assert!(api.requests() >= 1, "the referrers API was not asked");
    // A signature by another key is not found through it either.
    let other = fx.policy(
        "referrers-api-other",
        r#"{"default": [{"type": "sigstoreSigned", "keyPath": "{dir}/other.pub",
             "signedIdentity": {"type": "exactRepository", "dockerRepository": "{reg}/trust/referrers"}}]}"#,
    );
    let root = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_in(
        &fx,
        root.path(),
        &through_api,
        &other,
        &["--insecure-registry", api.addr()],
    );
    assert_refusal(root.path(), code, &stderr, "no signature by key", &other);
}

#[test]
fn oci_layouts_are_checked_too() {
    let fx = fixture();
    let image = fx.reference("trust/layout:v1");
    let built = fx.push("trust/layout:v1");
    fx.sign("main", &image, &[]);
    fx.push("trust/layout-unsigned:v1");
    let dir = tempfile::tempdir().unwrap();

    // `skopeo copy` of the image and its signature tag into one layout.
    let signed = dir.path().join("signed");
    let sig_tag = sig_tag(&built.digest);
    skopeo_copy(
        &format!("docker://{image}"),
        &format!("oci:{}:v1", signed.display()),
    );
    skopeo_copy(
        &format!("docker://{}:{sig_tag}", fx.reference("trust/layout")),
        &format!("oci:{}:{sig_tag}", signed.display()),
    );
    // `cosign save`: the image and its signatures, marked by kind, no tags.
    let saved = dir.path().join("saved");
    cosign(
        fx.dir.path(),
        &[
            "save",
            "--allow-insecure-registry",
            "--dir",
            &saved.display().to_string(),
            &image,
        ],
    );
    let unsigned = dir.path().join("unsigned");
    skopeo_copy(
        &format!("docker://{}", fx.reference("trust/layout-unsigned:v1")),
        &format!("oci:{}:v1", unsigned.display()),
    );

    // A layout has no registry name: the identity rule names the signed repository.
    let policy = fx.policy(
        "layouts",
        &format!(
            r#"{{"default": [{{"type": "reject"}}],
                "transports": {{"oci": {{"{}": [{{"type": "sigstoreSigned", "keyPath": "{{dir}}/main.pub",
                  "signedIdentity": {{"type": "exactRepository", "dockerRepository": "{{reg}}/trust/layout"}}}}]}}}}}}"#,
            dir.path().display()
        ),
    );
    assert_ran(&fx, &format!("oci-layout:{}:v1", signed.display()), &policy);
    assert_ran(&fx, &format!("oci-layout:{}", saved.display()), &policy);
    assert_refused(
        &fx,
        &format!("oci-layout:{}:v1", unsigned.display()),
        &policy,
        "no signature by key",
    );
    // matchRepository needs a registry name, which a layout does not have.
    let by_repository = fx.policy(
        "layouts-repository",
        r#"{"default": [{"type": "sigstoreSigned", "keyPath": "{dir}/main.pub",
             "signedIdentity": {"type": "matchRepository"}}]}"#,
    );
    assert_refused(
        &fx,
        &format!("oci-layout:{}:v1", signed.display()),
        &by_repository,
        "an oci-layout image has no registry reference",
    );
    // Outside the layouts' scope: the default rejects.
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("signed");
    copy_dir(&signed, &moved);
    assert_refused(
        &fx,
        &format!("oci-layout:{}:v1", moved.display()),
        &policy,
        "the policy rejects it",
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn pull_checks_the_policy_and_images_shows_the_key() {
    let fx = fixture();
    let image = fx.reference("trust/pulled:v1");
    fx.push("trust/pulled:v1");
    fx.sign("main", &image, &[]);
    fx.push("trust/pulled-unsigned:v1");
    let policy = fx.signed_policy("pulled", "main", MATCH_REPOSITORY);
    let policy_arg = policy.display().to_string();
    let root = tempfile::tempdir().unwrap();
    let pull = |image: &str| {
        run_executor(
            root.path(),
            &[
                "pull",
                image,
                "--insecure-registry",
                fx.registry.addr(),
                "--signature-policy",
                &policy_arg,
            ],
        )
    };
    let unsigned = fx.reference("trust/pulled-unsigned:v1");
    let (code, _, stderr) = pull(&unsigned);
    assert_refusal(root.path(), code, &stderr, "no signature by key", &policy);
    let (code, _, stderr) = pull(&image);
    assert_eq!(code, 0, "{stderr}");
    let (_, table, _) = run_executor(root.path(), &["images"]);
    assert_eq!(
        table.lines().count(),
        2,
        "only the signed image is stored: {table}"
    );
    assert!(
        table.lines().next().unwrap().ends_with("VERIFIED BY"),
        "{table}"
    );
    assert!(
        table.contains(&fx.key("main").display().to_string()),
        "{table}"
    );
}

#[test]
fn bad_policies_and_keys_are_one_line_errors() {
    let fx = fixture();
    let image = fx.reference("trust/bad-policy:v1");
    fx.push("trust/bad-policy:v1");
    let cases = [
        (
            "malformed",
            r#"{"default": [{"type": "reject"}"#.to_owned(),
            "invalid signature policy",
        ),
        (
            "unknown-field",
            r#"{"default": [{"type": "sigstoreSigned", "keyPth": "/k"}]}"#.to_owned(),
            "unknown field `keyPth`",
        ),
        (
            "missing-key",
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "{dir}/nope.pub"}]}"#.to_owned(),
            "nope.pub: No such file",
        ),
        (
            "private-key",
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "{dir}/main.key"}]}"#.to_owned(),
            "never the private key",
        ),
    ];
    for (name, text, expected) in cases {
        let policy = fx.policy(name, &text);
        let (root, code, stdout, stderr) = run(&fx, &image, &policy);
        assert_eq!(code, 125, "{name}: {stderr}");
        assert!(stdout.is_empty(), "{name}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.starts_with("executor: ") && stderr.contains(expected),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(&policy.display().to_string()),
            "{name}: the policy file is not named: {stderr}"
        );
        assert_eq!(leftovers(root.path()), Vec::<String>::new(), "{name}");
    }
    let missing = fx.dir.path().join("no-such-policy.json");
    let (_root, code, _, stderr) = run(&fx, &image, &missing);
    assert_eq!(code, 125);
    assert!(stderr.contains("cannot read signature policy"), "{stderr}");
}

#[test]
fn the_readme_walkthrough_works() {
    let fx = fixture();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split("**Trusted images.**").nth(1).unwrap();
    let script = section
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap();
    assert!(
        script.contains("cosign sign") && script.contains("executor run"),
        "{script}"
    );
    // The walkthrough's registry is this test's; the image is pushed there first.
    fx.push("runners/argo:1.0");
    let script = script.replace("registry.example.com", fx.registry.addr());
    let work = tempfile::tempdir().unwrap();
    write_inputs(work.path());
    let root = tempfile::tempdir().unwrap();
    let bin_dir = executor_bin().unwrap().parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(work.path())
        .env("PATH", path)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("COSIGN_ALLOW_INSECURE_REGISTRY", "true")
        .env("EXECUTOR_INSECURE_REGISTRIES", fx.registry.addr())
        .env("EXECUTOR_ROOT", root.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ran runners/argo:1.0"), "{stdout}");
}

#[test]
fn oci_layout_refusals_match_the_registry_ones() {
    let fx = fixture();
    let repo = fx.reference("trust/layout-cases");
    let built = fx.push("trust/layout-cases:v1");
    fx.sign("main", &format!("{repo}:v1"), &[]);
    let moved = fx.push("trust/layout-cases:v2");
    let dir = tempfile::tempdir().unwrap();
    // Layout NAME holding the registry's `tag` (`image`) as v1 and the signature of
    // `signed` under the signature tag of `image`'s digest.
    let layout = |name: &str, tag: &str, image: &BuiltImage, signed: &BuiltImage| {
        let path = dir.path().join(name);
        skopeo_copy(
            &format!("docker://{repo}:{tag}"),
            &format!("oci:{}:v1", path.display()),
        );
        skopeo_copy(
            &format!("docker://{repo}:{}", sig_tag(&signed.digest)),
            &format!("oci:{}:{}", path.display(), sig_tag(&image.digest)),
        );
        format!("oci-layout:{}:v1", path.display())
    };
    let signed = layout("signed", "v1", &built, &built);
    let retagged = layout("retagged", "v2", &moved, &built);
    let tampered = layout("tampered", "v1", &built, &built);
    rewrite_payload(&dir.path().join("tampered"), &sig_tag(&built.digest), |p| {
        p.replace("trust/layout-cases", "trust/layout-caseS")
    });
    let rejected = layout("rejected", "v1", &built, &built);
    let open = dir.path().join("open");
    skopeo_copy(
        &format!("docker://{repo}:v2"),
        &format!("oci:{}:v1", open.display()),
    );

    let requirement = |key: &str| {
        format!(
            r#"[{{"type": "sigstoreSigned", "keyPath": "{{dir}}/{key}.pub",
                 "signedIdentity": {{"type": "exactRepository", "dockerRepository": "{repo}"}}}}]"#
        )
    };
    let d = dir.path().display();
    let policy = fx.policy(
        "layout-cases",
        &format!(
            r#"{{"default": [{{"type": "reject"}}], "transports": {{"oci": {{
                "{d}": {},
                "{d}/open": [{{"type": "insecureAcceptAnything"}}],
                "{d}/rejected:v1": [{{"type": "reject"}}]}}}}}}"#,
            requirement("main")
        ),
    );
    assert_ran(&fx, &signed, &policy);
    assert_ran(&fx, &format!("oci-layout:{}:v1", open.display()), &policy);
    assert_refused(&fx, &rejected, &policy, "the policy rejects it");
    assert_refused(
        &fx,
        &retagged,
        &policy,
        &format!("is for manifest {}, not {}", built.digest, moved.digest),
    );
    assert_refused(&fx, &tampered, &policy, "no signature by key");
    let other = fx.policy(
        "layout-cases-other",
        &format!(
            r#"{{"default": [{{"type": "reject"}}], "transports": {{"oci": {{"{d}": {}}}}}}}"#,
            requirement("other")
        ),
    );
    assert_refused(&fx, &signed, &other, "no signature by key");
}

#[test]
fn the_policy_is_found_where_podman_looks() {
    let fx = fixture();
    let image = fx.reference("trust/search:v1");
    fx.push("trust/search:v1");
    let home = tempfile::tempdir().unwrap();
    let user_policy = home.path().join(".config/containers/policy.json");
    std::fs::create_dir_all(user_policy.parent().unwrap()).unwrap();
    std::fs::write(&user_policy, r#"{"default": [{"type": "reject"}]}"#).unwrap();
    let context = fx.dir.path().join("context.yaml").display().to_string();
    let runner_args = fx.dir.path().join("args.yaml").display().to_string();
    let root = tempfile::tempdir().unwrap();
    // No --signature-policy: $HOME/.config/containers/policy.json comes first.
    let output = Command::new(executor_bin().unwrap())
        .arg("--root")
        .arg(root.path())
        .args(["--log-level", "warn", "run", &image, "--insecure-registry"])
        .args([
            fx.registry.addr(),
            "--context",
            &context,
            "--args",
            &runner_args,
        ])
        .env("HOME", home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_refusal(
        root.path(),
        output.status.code().unwrap_or(-1),
        &stderr,
        "the policy rejects it",
        &user_policy,
    );
    // --signature-policy wins over it.
    let accept = fx.policy(
        "search-accept",
        r#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
    );
    let (code, stdout, stderr) = run_in(&fx, root.path(), &image, &accept, &[]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "ran trust/search:v1\n"),
        "{stderr}"
    );
}

#[test]
fn bundle_checks_the_stored_signatures() {
    let fx = fixture();
    let image = fx.reference("trust/bundle:v1");
    fx.push("trust/bundle:v1");
    fx.sign("main", &image, &[]);
    let policy = fx.signed_policy("bundle", "main", MATCH_REPOSITORY);
    let other = fx.signed_policy("bundle-other", "other", MATCH_REPOSITORY);
    let root = tempfile::tempdir().unwrap();
    let policy_arg = policy.display().to_string();
    let (code, _, stderr) = run_executor(
        root.path(),
        &[
            "pull",
            &image,
            "--insecure-registry",
            fx.registry.addr(),
            "--signature-policy",
            &policy_arg,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let out = tempfile::tempdir().unwrap();
    let context = fx.dir.path().join("context.yaml").display().to_string();
    let runner_args = fx.dir.path().join("args.yaml").display().to_string();
    let bundle = |policy: &Path, dir: &str| {
        let dir = out.path().join(dir).display().to_string();
        let policy = policy.display().to_string();
        let args = [
            "bundle",
            &image,
            "--context",
            &context,
            "--args",
            &runner_args,
            "-o",
            &dir,
        ];
        let mut args = args.to_vec();
        args.extend(["--signature-policy", &policy]);
        run_executor(root.path(), &args)
    };
    let (code, _, stderr) = bundle(&other, "refused");
    assert_eq!(code, 125, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is not trusted: no signature by key"),
        "{stderr}"
    );
    assert!(!out.path().join("refused").exists());
    let (code, stdout, stderr) = bundle(&policy, "accepted");
    assert_eq!(code, 0, "{stderr}");
    let dir = PathBuf::from(stdout.trim());
    assert!(dir.join("config.json").is_file());
    let unmounted = Command::new("umount")
        .arg(dir.join("rootfs"))
        .status()
        .unwrap();
    assert!(unmounted.success());
}
