//! A small HTTP proxy as `HTTP_PROXY`/`HTTPS_PROXY` point to: absolute-form requests
//! (`GET http://host:port/path`) are forwarded, `CONNECT host:port` opens a tunnel. It
//! resolves names from its own table first (`registry.test:PORT` → `127.0.0.1:PORT`),
//! so a test registry can have a name the machine itself cannot resolve: a pull that
//! succeeds went through the proxy. Every request line is recorded.
//!
//! One request per forwarded connection (it sends `Connection: close` upstream).

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running proxy; stopped on drop.
#[derive(Debug)]
pub struct ForwardProxy {
    addr: String,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    accept: Option<JoinHandle<()>>,
}

impl ForwardProxy {
    /// Starts a proxy on a free loopback port that connects to `hosts[name]` for a
    /// request to `name` (`host:port`), and to the name itself otherwise.
    pub fn start(hosts: &[(&str, &str)]) -> Result<ForwardProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let hosts: Arc<HashMap<String, String>> = Arc::new(
            hosts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let accept = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (hosts, requests) = (hosts.clone(), requests.clone());
                    std::thread::spawn(move || {
                        let _ = serve(client, &hosts, &requests);
                    });
                }
            })
        };
        Ok(ForwardProxy {
            addr,
            stop,
            requests,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:PORT`: the value for `HTTP_PROXY`/`HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request lines received so far (`CONNECT h:p HTTP/1.1`, `GET http://... HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn serve(
    mut client: TcpStream,
    hosts: &HashMap<String, String>,
    requests: &Mutex<Vec<String>>,
) -> Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let request_line = text.lines().next().unwrap_or_default().to_owned();
    if let Ok(mut r) = requests.lock() {
        r.push(request_line.clone());
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let resolve = |name: &str| hosts.get(name).cloned().unwrap_or_else(|| name.to_owned());
    if method == "CONNECT" {
        let Ok(mut upstream) = TcpStream::connect(resolve(target)) else {
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        };
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        client.set_read_timeout(None)?;
        let (mut client_read, mut upstream_write) = (client.try_clone()?, upstream.try_clone()?);
        let to_upstream = std::thread::spawn(move || {
            let _ = std::io::copy(&mut client_read, &mut upstream_write);
            let _ = upstream_write.shutdown(Shutdown::Write);
        });
        let _ = std::io::copy(&mut upstream, &mut client);
        let _ = client.shutdown(Shutdown::Write);
        let _ = to_upstream.join();
        return Ok(());
    }
    let Some(rest) = target.strip_prefix("http://") else {
        bail!("not a proxy request: {request_line}");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut forwarded = format!("{method} {path} HTTP/1.1\r\n");
    for line in text.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if !lower.starts_with("connection:") && !lower.starts_with("proxy-") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let Ok(mut upstream) = TcpStream::connect(resolve(authority)) else {
        client.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    upstream.write_all(forwarded.as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = upstream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        client.write_all(&buf[..n])?;
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            bail!("peer closed before the head ended");
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            bail!("head too long");
        }
    }
    Ok(head)
}
