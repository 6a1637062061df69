//! Registry credentials, found where podman and docker keep them.
//!
//! Lookup order: `--authfile`, `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.docker/config.json`. The first file that exists is used (as podman does), and in it
//! a per-registry `credHelpers` entry, then an `auths` entry, then the global
//! `credsStore` helper. A helper is the program `docker-credential-NAME`, asked with
//! `get` and the registry on stdin.
//!
//! Credentials never appear in logs or errors: [`Credentials`]' `Debug` is redacted.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Errors from finding credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The auth file exists but cannot be read.
    #[error("reading auth file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The auth file is not the JSON podman/docker write.
    #[error("parsing auth file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An `auth` entry is not base64 of `user:password`.
    #[error("auth file {path}: the entry for {registry} is not base64 of user:password")]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// The registry whose entry is broken.
        registry: String,
    },
    /// A credential helper failed (its stderr is not included: it may echo secrets).
    #[error("credential helper {helper} failed for {registry}: {reason}")]
    Helper {
        /// The helper program.
        helper: String,
        /// The registry asked for.
        registry: String,
        /// What went wrong.
        reason: String,
    },
}

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token; never log it.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The auth file candidates in lookup order, `explicit` (the `--authfile` flag) first.
pub fn auth_file_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(path) = explicit {
        files.push(path.to_owned());
    }
    if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(path.into());
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&dir).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".docker/config.json"));
    }
    files
}

/// Finds credentials for `registry` (`host[:port]`). An explicitly given auth file must
/// exist; the others are skipped when missing. `None` means anonymous access.
pub fn credentials_for(
    registry: &str,
    explicit: Option<&Path>,
) -> Result<Option<Credentials>, AuthError> {
    for path in auth_file_candidates(explicit) {
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Some(&*path) != explicit => {
                continue;
            }
            Err(source) => return Err(AuthError::Read { path, source }),
        };
        let file: AuthFile = serde_json::from_slice(&data).map_err(|source| AuthError::Parse {
            path: path.clone(),
            source,
        })?;
        return lookup(&file, &path, registry, None);
    }
    Ok(None)
}

/// `helper_dir`: where to find helpers instead of `$PATH` (tests).
fn lookup(
    file: &AuthFile,
    path: &Path,
    registry: &str,
    helper_dir: Option<&Path>,
) -> Result<Option<Credentials>, AuthError> {
    let wanted = normalize_key(registry);
    if let Some((_, helper)) = file
        .cred_helpers
        .iter()
        .find(|(key, _)| normalize_key(key) == wanted)
    {
        return run_helper(helper, registry, helper_dir);
    }
    if let Some((key, entry)) = file
        .auths
        .iter()
        .find(|(key, _)| normalize_key(key) == wanted)
    {
        if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }));
        }
        if let Some(auth) = &entry.auth {
            let bad = || AuthError::BadEntry {
                path: path.to_owned(),
                registry: key.clone(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (username, password) = text.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credentials {
                username: username.to_owned(),
                password: password.to_owned(),
            }));
        }
    }
    match &file.creds_store {
        Some(helper) => run_helper(helper, registry, helper_dir),
        None => Ok(None),
    }
}

/// `https://index.docker.io/v1/` and `docker.io` name the same registry; auth files
/// use URLs, host names, or host names with a path.
fn normalize_key(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        other => other.to_owned(),
    }
}

fn run_helper(
    helper: &str,
    registry: &str,
    helper_dir: Option<&Path>,
) -> Result<Option<Credentials>, AuthError> {
    let program = format!("docker-credential-{helper}");
    let executable = match helper_dir {
        Some(dir) => dir.join(&program),
        None => PathBuf::from(&program),
    };
    let fail = |reason: String| AuthError::Helper {
        helper: program.clone(),
        registry: registry.to_owned(),
        reason,
    };
    let mut child = Command::new(&executable)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
    let server = if normalize_key(registry) == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| fail(format!("writing its stdin: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    if !output.status.success() {
        // The helper protocol reports a missing entry this way; that means anonymous.
        if String::from_utf8_lossy(&output.stdout).contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("exited with {}", output.status)));
    }
    let reply: HelperReply = serde_json::from_slice(&output.stdout)
        .map_err(|e| fail(format!("unexpected reply: {e}")))?;
    Ok(Some(Credentials {
        username: reply.username,
        password: reply.secret,
    }))
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
    fn base64_and_plain_entries() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let path = write(
            dir.path(),
            "auth.json",
            &format!(
                r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{auth}"}},
                   "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}}}}}}"#
            ),
        );
        let creds = credentials_for("127.0.0.1:5000", Some(&path))
            .unwrap()
            .unwrap();
        assert_eq!(creds.username, "alice");
        assert_eq!(creds.password, "s3cr:et");
        let hub = credentials_for("docker.io", Some(&path)).unwrap().unwrap();
        assert_eq!(hub.username, "bob");
        assert_eq!(credentials_for("quay.io", Some(&path)).unwrap(), None);
    }

    #[test]
    fn debug_output_hides_the_password() {
        let creds = Credentials {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }

    #[test]
    fn explicit_missing_or_broken_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = credentials_for("r", Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("nope.json"), "{err}");
        let broken = write(dir.path(), "broken.json", "{not json");
        let err = credentials_for("r", Some(&broken)).unwrap_err();
        assert!(err.to_string().contains("broken.json"), "{err}");
        let bad = write(dir.path(), "bad.json", r#"{"auths":{"r":{"auth":"!!"}}}"#);
        let err = credentials_for("r", Some(&bad)).unwrap_err();
        assert!(err.to_string().contains("entry for r"), "{err}");
    }

    #[test]
    fn credential_helper_is_asked_for_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("test{}", std::process::id());
        let helper = write(
            dir.path(),
            &format!("docker-credential-{name}"),
            "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 3\n\
             [ \"$server\" = reg.test:5000 ] || { echo credentials not found; exit 1; }\n\
             echo '{\"ServerURL\":\"reg.test:5000\",\"Username\":\"carol\",\"Secret\":\"tok\"}'\n",
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = write(
            dir.path(),
            "config.json",
            &format!(r#"{{"credHelpers": {{"reg.test:5000": "{name}"}}, "credsStore": "{name}"}}"#),
        );
        let file: AuthFile = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        let creds = lookup(&file, &config, "reg.test:5000", Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!(creds.username, "carol");
        assert_eq!(creds.password, "tok");
        // credsStore for another registry: the helper says not found, so anonymous.
        assert_eq!(
            lookup(&file, &config, "other.test", Some(dir.path())).unwrap(),
            None
        );
    }
}
