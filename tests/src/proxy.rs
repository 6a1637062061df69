//! A fault-injecting HTTP proxy in front of a registry. It injects one kind of fault into
//! GETs whose path contains a given part (a blob digest, `/manifests/`): once (the first
//! full download; tests check that the pull recovers) or on every matching request,
//! ranged ones included (tests check that the pull fails cleanly). [`FaultProxy::heal`]
//! turns faults off, for "a later pull through a healthy path succeeds".
//!
//! One request per connection (it adds `Connection: close` upstream), GET/HEAD only.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What to do to a matching response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection cleanly (FIN) after the response head and this many body
    /// bytes: a truncated body.
    CutAfter(usize),
    /// Reset the connection (RST) after the response head and this many body bytes.
    ResetAfter(usize),
    /// Stop sending (but keep the connection open) after the response head and this many
    /// body bytes.
    StallAfter(usize),
    /// Accept the connection and read the request, then send nothing at all.
    NoResponse,
    /// Inject nothing; only count requests (see [`FaultProxy::requests`]).
    None,
    /// Answer with this HTTP status (and `Retry-After: 1` for 429) instead of forwarding.
    Status(u16),
    /// Add this many bytes to the response's `Content-Length` (negative: fewer), then
    /// forward the real body and close.
    ContentLength(i64),
    /// Replace `Docker-Content-Digest` with the digest of something else.
    WrongDigestHeader,
    /// Flip one byte of the body (the last one forwarded) without touching headers.
    CorruptBody,
    /// Not a fault: answer the OCI 1.1 referrers API (`GET /v2/NAME/referrers/DIGEST`),
    /// which Distribution 2.8 lacks, from the referrers tag (`sha256-HEX`) cosign
    /// pushes in its place, and hide that tag from direct requests (404). The registry
    /// then behaves as one with the API (Distribution 3, zot) does for a client.
    ReferrersApi,
}

/// How often a fault is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// Only into the first matching request without a `Range` header.
    Once,
    /// Into every matching request, ranged or not, until [`FaultProxy::heal`].
    Always,
}

/// A running proxy; stopped on drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: String,
    stop: Arc<AtomicBool>,
    healed: Arc<AtomicBool>,
    faults: Arc<AtomicUsize>,
    range_requests: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`) that injects `fault` into the first
    /// GET whose path contains `path_part` and that has no `Range` header.
    pub fn start(upstream: &str, path_part: &str, fault: Fault) -> Result<FaultProxy> {
        FaultProxy::start_with(upstream, path_part, fault, Times::Once)
    }

    /// Starts a proxy to `upstream` that injects `fault` into GETs whose path contains
    /// `path_part`, as often as `times` says.
    pub fn start_with(
        upstream: &str,
        path_part: &str,
        fault: Fault,
        times: Times,
    ) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let addr = listener.local_addr()?.to_string();
        let state = Shared {
            upstream: upstream.to_owned(),
            path_part: path_part.to_owned(),
            fault,
            times,
            stop: Arc::default(),
            healed: Arc::default(),
            faults: Arc::default(),
            range_requests: Arc::default(),
            requests: Arc::default(),
        };
        let mut proxy = FaultProxy {
            addr,
            stop: state.stop.clone(),
            healed: state.healed.clone(),
            faults: state.faults.clone(),
            range_requests: state.range_requests.clone(),
            requests: state.requests.clone(),
            accept: None,
        };
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if state.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = state.serve(client);
                });
            }
        });
        proxy.accept = Some(accept);
        Ok(proxy)
    }

    /// `127.0.0.1:PORT` of the proxy: use it as the registry in references.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops injecting faults: from now on the proxy forwards everything unchanged.
    /// Connections already stalled are released too.
    pub fn heal(&self) {
        self.healed.store(true, Ordering::SeqCst);
    }

    /// How many faults were injected.
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }

    /// How many GET requests went to the watched path.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// How many requests carried a `Range` header for the watched path.
    pub fn range_requests(&self) -> usize {
        self.range_requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(&self.addr);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

#[derive(Debug, Clone)]
struct Shared {
    upstream: String,
    path_part: String,
    fault: Fault,
    times: Times,
    stop: Arc<AtomicBool>,
    healed: Arc<AtomicBool>,
    faults: Arc<AtomicUsize>,
    range_requests: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Shared {
    fn should_inject(&self, targeted: bool, has_range: bool) -> bool {
        if !targeted || self.fault == Fault::None || self.healed.load(Ordering::SeqCst) {
            return false;
        }
        match self.times {
            Times::Once => {
                !has_range
                    && self
                        .faults
                        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
            }
            Times::Always => {
                self.faults.fetch_add(1, Ordering::SeqCst);
                true
            }
        }
    }

    /// Holds a connection open without sending, until the proxy stops or heals.
    fn stall(&self) {
        while !self.stop.load(Ordering::SeqCst) && !self.healed.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn serve(&self, mut client: TcpStream) -> Result<()> {
        client.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = read_head(&mut client)?;
        let text = String::from_utf8_lossy(&head).into_owned();
        let request_line = text.lines().next().unwrap_or_default().to_owned();
        let targeted = request_line.starts_with("GET ") && request_line.contains(&self.path_part);
        let has_range = text
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("range:"));
        if targeted {
            self.requests.fetch_add(1, Ordering::SeqCst);
        }
        if targeted && has_range {
            self.range_requests.fetch_add(1, Ordering::SeqCst);
        }
        let inject = self.should_inject(targeted, has_range);
        let mut text = text;
        if self.fault == Fault::ReferrersApi && request_line.starts_with("GET ") {
            match referrers_rewrite(&request_line) {
                Referrers::Api(tag_request) => {
                    text = text.replacen(&request_line, &tag_request, 1);
                    let (status, body) = forward_whole(&self.upstream, &text)?;
                    // No referrers is an empty index, not a 404, for the API.
                    let body = if status == 200 {
                        body
                    } else {
                        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec()
                    };
                    write!(
                        client,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )?;
                    client.write_all(&body)?;
                    let _ = client.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Referrers::HiddenTag => {
                    let body =
                        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
                    write!(
                        client,
                        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )?;
                    let _ = client.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Referrers::Other => {}
            }
        }
        // Forward the head with `Connection: close` so that one connection = one request.
        let mut forwarded = String::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            if !line.to_ascii_lowercase().starts_with("connection:") {
                forwarded.push_str(line);
                forwarded.push_str("\r\n");
            }
        }
        forwarded.push_str("Connection: close\r\n\r\n");
        if let (true, Fault::Status(code)) = (inject, self.fault) {
            let retry_after = if code == 429 {
                "Retry-After: 1\r\n"
            } else {
                ""
            };
            write!(
                client,
                "HTTP/1.1 {code} Injected\r\n{retry_after}Content-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        if let (true, Fault::NoResponse) = (inject, self.fault) {
            self.stall();
            return Ok(());
        }
        let mut upstream = TcpStream::connect(&self.upstream)?;
        upstream.write_all(forwarded.as_bytes())?;
        let fault = if inject { self.fault } else { Fault::None };
        let response_head = read_head(&mut upstream)?;
        let response_head = rewrite_head(&response_head, fault);
        let head_len = response_head.len();
        let limit = match fault {
            Fault::CutAfter(n) | Fault::ResetAfter(n) | Fault::StallAfter(n) => head_len + n,
            _ => usize::MAX,
        };
        let mut sent = 0usize;
        let mut pending = response_head;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if pending.is_empty() {
                let n = upstream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
            }
            let allowed = pending.len().min(limit - sent);
            if fault == Fault::CorruptBody && allowed > 0 && sent + allowed > head_len {
                // Corrupt the last byte of every chunk: any corruption fails the hash.
                pending[allowed - 1] ^= 0x55;
            }
            client.write_all(&pending[..allowed])?;
            pending.drain(..allowed);
            sent += allowed;
            if sent >= limit {
                break;
            }
        }
        match fault {
            Fault::StallAfter(_) => self.stall(),
            Fault::ResetAfter(_) => {
                reset_on_close(&client);
                return Ok(());
            }
            _ => {}
        }
        let _ = client.shutdown(Shutdown::Both);
        Ok(())
    }
}

enum Referrers {
    /// A referrers API request, as the request line for the referrers tag.
    Api(String),
    /// A direct request for a referrers tag.
    HiddenTag,
    Other,
}

/// Classifies a request line for [`Fault::ReferrersApi`].
fn referrers_rewrite(request_line: &str) -> Referrers {
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Referrers::Other;
    };
    // `rsplit` and the digest check: a repository may itself be named `.../referrers`.
    if let Some((repository, digest)) = path.rsplit_once("/referrers/")
        && digest.starts_with("sha256:")
    {
        let tag = digest
            .split('?')
            .next()
            .unwrap_or(digest)
            .replacen(':', "-", 1);
        return Referrers::Api(format!("{method} {repository}/manifests/{tag} {version}"));
    }
    match path.rsplit_once("/manifests/") {
        Some((_, reference))
            if reference.starts_with("sha256-") && !reference.ends_with(".sig") =>
        {
            Referrers::HiddenTag
        }
        _ => Referrers::Other,
    }
}

/// Sends a request head upstream (one request, connection closed) and reads the whole
/// response: status and body.
fn forward_whole(upstream: &str, head: &str) -> Result<(u16, Vec<u8>)> {
    let mut forwarded = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if !lower.starts_with("connection:") && !lower.starts_with("accept:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded
        .push_str("Accept: application/vnd.oci.image.index.v1+json\r\nConnection: close\r\n\r\n");
    let mut stream = TcpStream::connect(upstream)?;
    stream.write_all(forwarded.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of response head")?;
    let status = String::from_utf8_lossy(&response[..split])
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("bad status line")?;
    Ok((status, response[split + 4..].to_vec()))
}

/// Applies header faults to a response head (status line + headers + blank line).
fn rewrite_head(head: &[u8], fault: Fault) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        match fault {
            Fault::ContentLength(delta) if lower.starts_with("content-length:") => {
                let length: i64 = line["content-length:".len()..].trim().parse().unwrap_or(0);
                out.push_str(&format!("Content-Length: {}\r\n", (length + delta).max(0)));
            }
            Fault::WrongDigestHeader if lower.starts_with("docker-content-digest:") => {
                // The sha256 of the empty string: a valid digest of other content.
                out.push_str("Docker-Content-Digest: sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\r\n");
            }
            _ => {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Makes closing `stream` send a TCP RST instead of a FIN (SO_LINGER with timeout 0).
/// Waits (up to 5s) until the peer acknowledged everything sent, because a reset drops
/// unsent data: the test wants the reset exactly after the bytes it let through.
// Socket options std does not offer: the harness's only unsafe code.
#[allow(unsafe_code)]
fn reset_on_close(stream: &TcpStream) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let mut unacked: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one c_int (bytes not yet acknowledged) to the pointer.
        let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut unacked) };
        if rc != 0 || unacked == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is open for the lifetime of `stream`; the option value points at a
    // live `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>())
                .expect("a linger is a few bytes"),
        );
    }
}

fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            anyhow::bail!("peer closed before the head ended");
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            anyhow::bail!("head too long");
        }
    }
    Ok(head)
}
