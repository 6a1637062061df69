//! A real registry for tests: Debian's `docker-registry` (CNCF Distribution 2.8) on a
//! free loopback port with its own temp storage and config, stopped with SIGTERM and
//! waited for when dropped. Plus pushing OCI layouts into it with `skopeo`.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::token::{ISSUER, SERVICE, TokenServer};

const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// How to start a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Require HTTP basic auth with this user and password (htpasswd, bcrypt).
    pub basic_auth: Option<(String, String)>,
    /// Serve HTTPS with a certificate for `127.0.0.1` and `registry.test` (a name only
    /// a [`crate::ForwardProxy`] resolves) signed by a fresh test CA (see
    /// [`Registry::ca_dir`]).
    pub tls: bool,
    /// Require bearer tokens from a token service (see [`crate::token`]) that hands them
    /// out for these basic credentials, for these repositories.
    pub token_auth: Option<TokenAuth>,
}

/// Credentials and repositories for a token-authenticated registry.
#[derive(Debug, Clone, Default)]
pub struct TokenAuth {
    /// The user the token service accepts.
    pub user: String,
    /// Their password.
    pub password: String,
    /// Repositories the token grants pull and push on.
    pub repositories: Vec<String>,
}

/// A running registry; stopped (SIGTERM, then waited for) on drop.
#[derive(Debug)]
pub struct Registry {
    child: Option<Child>,
    addr: String,
    token: Option<TokenServer>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts an anonymous registry.
    pub fn start() -> Result<Registry> {
        Registry::start_with(&RegistryConfig::default())
    }

    /// Starts a registry with `config` and waits until it answers on `/v2/`.
    pub fn start_with(config: &RegistryConfig) -> Result<Registry> {
        let dir = tempfile::tempdir().context("creating the registry's temp dir")?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let mut token = None;
        let auth = match (&config.basic_auth, &config.token_auth) {
            (Some(_), Some(_)) => bail!("a test registry takes basic or token auth, not both"),
            (None, Some(t)) => {
                let repositories: Vec<&str> = t.repositories.iter().map(String::as_str).collect();
                let server = TokenServer::start(
                    &dir.path().join("token"),
                    &t.user,
                    &t.password,
                    &repositories,
                )?;
                let text = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    server.realm(),
                    server.root_cert().display()
                );
                token = Some(server);
                text
            }
            (None, None) => String::new(),
            (Some((user, password)), None) => {
                let htpasswd = dir.path().join("htpasswd");
                let output = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .context("running htpasswd (install apache2-utils)")?;
                if !output.status.success() {
                    bail!(
                        "htpasswd failed: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                std::fs::write(&htpasswd, &output.stdout)?;
                format!(
                    "auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                    htpasswd.display()
                )
            }
        };
        let tls = if config.tls {
            let certs = dir.path().join("certs");
            make_certificates(&certs)?;
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certs.join("server.crt").display(),
                certs.join("server.key").display()
            )
        } else {
            String::new()
        };
        // A free port: bind :0, read the port, release it for the registry. Retried
        // below when another process grabs it in between.
        let mut last_error = None;
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr = format!("127.0.0.1:{port}");
            let config_path = dir.path().join("config.yml");
            std::fs::write(
                &config_path,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n  secret: harness-secret\n{tls}{auth}",
                    storage.display()
                ),
            )?;
            let log = std::fs::File::create(dir.path().join("registry.log"))?;
            let child = Command::new(REGISTRY_BINARY)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {REGISTRY_BINARY} (install docker-registry)"))?;
            let mut child = child;
            match wait_ready(&mut child, &addr, dir.path()) {
                Ok(()) => {
                    return Ok(Registry {
                        child: Some(child),
                        addr,
                        token,
                        dir,
                    });
                }
                Err(e) => {
                    stop_child(child);
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    /// The token service, for a registry started with [`RegistryConfig::token_auth`].
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// `127.0.0.1:PORT`: the registry part of references and `--insecure-registry`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A directory holding only the test CA certificate (`ca.crt`), for `--cert-dir`;
    /// meaningful with [`RegistryConfig::tls`].
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("certs/ca")
    }

    /// Where the registry keeps its data (to tamper with blobs in tests).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file holding a blob's bytes in the registry's storage.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry: SIGTERM, wait; SIGKILL if it takes more than 10s.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

fn wait_ready(child: &mut Child, addr: &str, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!(
                "registry exited with {status}: {}",
                std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
        }
        // Any HTTP answer means it listens (a TLS server answers plain HTTP with 400).
        if http_status(addr, "/v2/").is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("registry on {addr} not ready after 30s")
}

fn stop_child(mut child: Child) {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit an i32"));
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.0 GET returning the status code (readiness probes only).
fn http_status(addr: &str, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .context("bad HTTP status line")
}

/// The manifest format to push in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// Keep OCI manifests (and indexes).
    Oci,
    /// Convert to Docker schema2 (manifest list for an index).
    DockerV2,
}

/// Pushes busybox plus a marker layer naming the tag (`etc/marker`: `image TAG`) as
/// `registry/image` (`repo:tag`): the same tag gives the same image in every registry.
pub fn push_marked_image(registry: &Registry, image: &str) -> Result<crate::BuiltImage> {
    use crate::{Compression, Entry, ImageSpec, LayerSpec};
    let (_, tag) = image.rsplit_once(':').context("image is not repo:tag")?;
    let layout = tempfile::tempdir()?;
    let spec = ImageSpec::host(vec![
        crate::busybox_layer(Compression::Gzip)?,
        LayerSpec {
            entries: vec![Entry::file("etc/marker", format!("image {tag}\n"))],
            compression: Compression::Gzip,
        },
    ]);
    let built = crate::write_image(layout.path(), tag, &spec)?;
    push_layout(
        layout.path(),
        tag,
        registry,
        image,
        ManifestFormat::Oci,
        None,
    )?;
    Ok(built)
}

/// Pushes `oci:LAYOUT:TAG` to `docker://REGISTRY/DEST` with skopeo (all platforms of an
/// index). `creds` is `user:password` for an auth-protected registry.
pub fn push_layout(
    layout: &Path,
    tag: &str,
    registry: &Registry,
    dest: &str,
    format: ManifestFormat,
    creds: Option<&str>,
) -> Result<()> {
    let mut command = Command::new("skopeo");
    command
        .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg("--insecure-policy");
    if format == ManifestFormat::DockerV2 {
        command.args(["--format", "v2s2"]);
    }
    if let Some(creds) = creds {
        command.arg(format!("--dest-creds={creds}"));
    }
    command
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{dest}", registry.addr()));
    let output = command
        .output()
        .context("running skopeo (install skopeo)")?;
    if !output.status.success() {
        bail!(
            "skopeo copy to {}/{dest} failed: {}",
            registry.addr(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, with openssl.
fn make_certificates(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("ca"))?;
    let run = |args: &[&str]| crate::token::openssl(dir, args).map(drop);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=executor test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca/ca.crt"]);
    run(&ca)?;
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    run(&csr)?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:registry.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca/ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ])
}
