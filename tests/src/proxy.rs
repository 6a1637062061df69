//! A fault-injecting HTTP proxy in front of a registry: it breaks (or stalls) the first
//! full download of one blob part-way, then lets everything through. Tests use it to
//! check that an interrupted blob resumes with a `Range` request and that a stalled
//! transfer times out instead of hanging.
//!
//! One request per connection (it adds `Connection: close` upstream), GET/HEAD only.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What to do to the first matching download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after this many response bytes.
    CutAfter(usize),
    /// Stop sending (but keep the connection open) after this many response bytes.
    StallAfter(usize),
    /// Inject nothing; only count requests (see [`FaultProxy::requests`]).
    None,
    /// Answer with this HTTP status (and `Retry-After: 1` for 429) instead of forwarding.
    Status(u16),
}

/// A running proxy; stopped on drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: String,
    stop: Arc<AtomicBool>,
    faults: Arc<AtomicUsize>,
    range_requests: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`) that injects `fault` into the first
    /// GET whose path contains `path_part` and that has no `Range` header.
    pub fn start(upstream: &str, path_part: &str, fault: Fault) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(AtomicUsize::new(0));
        let range_requests = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let state = Shared {
            upstream: upstream.to_owned(),
            path_part: path_part.to_owned(),
            fault,
            stop: stop.clone(),
            faults: faults.clone(),
            range_requests: range_requests.clone(),
            requests: requests.clone(),
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
        Ok(FaultProxy {
            addr,
            stop,
            faults,
            range_requests,
            requests,
            accept: Some(accept),
        })
    }

    /// `127.0.0.1:PORT` of the proxy: use it as the registry in references.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How many faults were injected (0 or 1).
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }

    /// How many GET requests went to the watched path.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// How many requests carried a `Range` header for the faulted path.
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
    stop: Arc<AtomicBool>,
    faults: Arc<AtomicUsize>,
    range_requests: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Shared {
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
        let inject = targeted
            && !has_range
            && self.fault != Fault::None
            && self
                .faults
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
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
        let mut upstream = TcpStream::connect(&self.upstream)?;
        upstream.write_all(forwarded.as_bytes())?;
        let limit = match (inject, self.fault) {
            (false, _) => usize::MAX,
            (true, Fault::CutAfter(n) | Fault::StallAfter(n)) => n,
            (true, Fault::Status(_) | Fault::None) => unreachable!("handled above"),
        };
        let mut sent = 0usize;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = upstream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let allowed = n.min(limit - sent);
            client.write_all(&buf[..allowed])?;
            sent += allowed;
            if sent >= limit {
                if let Fault::StallAfter(_) = self.fault {
                    while !self.stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                break;
            }
        }
        let _ = client.shutdown(Shutdown::Both);
        Ok(())
    }
}

fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            anyhow::bail!("client closed before the request head ended");
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            anyhow::bail!("request head too long");
        }
    }
    Ok(head)
}
