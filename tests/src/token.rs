//! A minimal bearer-token service for a registry's `auth: token:` mode, so tests run the
//! real token dance: the registry answers 401 with a `Bearer realm=...` challenge, the
//! client asks this service (with basic credentials) for a token, and presents it.
//!
//! The token is an RS256 JWT signed with openssl by a throwaway key whose self-signed
//! certificate is the registry's `rootcertbundle` and travels in the JWT's `x5c` header.
//! It grants pull and push on every repository named at start.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `service` and `aud` the registry and the tokens agree on.
pub const SERVICE: &str = "test-registry";
/// The token issuer the registry trusts.
pub const ISSUER: &str = "test-token-issuer";

/// A running token service; stopped on drop.
#[derive(Debug)]
pub struct TokenServer {
    addr: String,
    root_cert: PathBuf,
    stop: Arc<AtomicBool>,
    issued: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Starts the service in `dir` (key material goes there). Tokens are issued only to
    /// requests carrying basic auth `user:password`, for `repositories`.
    pub fn start(dir: &Path, user: &str, password: &str, repositories: &[&str]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let openssl = |args: &[&str]| openssl(dir, args);
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=token signer",
            "-keyout",
            "token.key",
            "-out",
            "token.crt",
        ])?;
        let der = openssl(&["x509", "-in", "token.crt", "-outform", "DER"])?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [STANDARD.encode(&der)]});
        let access: Vec<_> = repositories
            .iter()
            .map(|name| json!({"type": "repository", "name": name, "actions": ["pull", "push"]}))
            .collect();
        let claims = json!({
            "iss": ISSUER, "sub": user, "aud": SERVICE,
            "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": "test-token",
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
        );
        std::fs::write(dir.join("signing-input"), &signing_input)?;
        let signature = openssl(&["dgst", "-sha256", "-sign", "token.key", "signing-input"])?;
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
        let expected_auth = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));

        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicUsize::new(0));
        let (stop_flag, issued_count) = (stop.clone(), issued.clone());
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(true) = answer(stream, &token, &expected_auth) {
                    issued_count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Ok(TokenServer {
            addr,
            root_cert: dir.join("token.crt"),
            stop,
            issued,
            accept: Some(accept),
        })
    }

    /// The realm URL for the registry config.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate the registry must trust for tokens.
    pub fn root_cert(&self) -> &Path {
        &self.root_cert
    }

    /// How many tokens were handed out.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

/// Answers one request: the token for the right credentials, 401 otherwise.
fn answer(mut stream: TcpStream, token: &str, expected_auth: &str) -> Result<bool> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let authorized = text.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("authorization") && value.trim() == expected_auth
        })
    });
    let (status, body) = if authorized {
        let body = json!({"token": token, "access_token": token, "expires_in": 3600});
        ("200 OK", body.to_string())
    } else {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_owned(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(authorized)
}

/// Runs `openssl ARGS` in `dir`; returns its stdout, or an error with its stderr.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    if !output.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}
