//! A small HTTP/1.1 server: one task per connection, keep-alive, JSON bodies,
//! chunked streaming for watches.
//!
//! Only what `kube`'s hyper client sends is understood: requests with a
//! `Content-Length` body (or none). Anything else is answered with an error.

use crate::Shared;
use crate::resource::Resource;
use crate::store::{ApiError, FieldSelector, RecordedRequest};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A parsed request.
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    content_type: String,
    body: Vec<u8>,
    /// The client asked to close the connection after this request.
    close: bool,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a handler answers.
enum Reply {
    Json(u16, Value),
    Watch(WatchRequest),
}

struct WatchRequest {
    resource: Resource,
    namespace: String,
    selector: FieldSelector,
    since: Option<u64>,
    timeout: Option<Duration>,
    bookmarks: bool,
}

/// Serves one connection until the client closes it or sends something unusable.
pub(crate) async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let request = match read_request(&mut stream, &mut buf).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(error) => {
                let _ = write_json(&mut stream, error.code, &error.to_status()).await;
                return;
            }
        };
        tracing::debug!(method = %request.method, path = %request.path, "fake api request");
        record(&shared, &request);
        if shared.take_dropped_connection() {
            // Hang up without answering, as a restarting server or a broken link does.
            return;
        }
        let reply = handle(&shared, &request);
        let close = request.close;
        let written = match reply {
            Reply::Json(code, body) => write_json(&mut stream, code, &body).await,
            Reply::Watch(watch) => stream_watch(&mut stream, &shared, watch).await,
        };
        if written.is_err() || close {
            return;
        }
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<Request>, ApiError> {
    let io_error = |e: std::io::Error| ApiError::bad_request(format!("reading request: {e}"));
    let head_len = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(ApiError::new(
                431,
                "RequestHeaderFieldsTooLarge",
                "request head too large",
            ));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.map_err(io_error)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed
        .parse(&buf[..head_len])
        .map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))?;
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default().to_owned();
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if header("transfer-encoding").is_some() {
        return Err(ApiError::new(
            411,
            "LengthRequired",
            "chunked request bodies are not supported by the fake API server",
        ));
    }
    let content_type = header("content-type").unwrap_or_default();
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let length: usize = match header("content-length") {
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid content-length {v:?}")))?,
        None => 0,
    };
    if length > MAX_BODY {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            "request body too large",
        ));
    }
    while buf.len() < head_len + length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.map_err(io_error)?;
        if n == 0 {
            return Err(ApiError::bad_request("connection closed inside the body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_len..head_len + length].to_vec();
    buf.drain(..head_len + length);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Some(Request {
        method,
        path: percent_decode(path),
        query: parse_query(query),
        content_type,
        body,
        close,
    }))
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (form encoding, which `kube` uses for queries).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi * 16 + lo);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn record(shared: &Shared, request: &Request) {
    let raw_query = request
        .query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    shared.lock().requests.push(RecordedRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        query: raw_query,
    });
}

fn handle(shared: &Shared, request: &Request) -> Reply {
    match route(shared, request) {
        Ok(reply) => reply,
        Err(error) => Reply::Json(error.code, error.to_status()),
    }
}

fn route(shared: &Shared, request: &Request) -> Result<Reply, ApiError> {
    let Some((resource, namespace, rest)) = Resource::route(&request.path) else {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let mut dry_run = match request.param("dryRun") {
        None => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid dry run value: {other:?}, only All is supported"
            )));
        }
    };
    let method = request.method.as_str();
    let mut store = shared.lock();
    let reply = match (rest.as_slice(), method) {
        ([], "GET") => {
            let selector = FieldSelector::parse(request.param("fieldSelector").unwrap_or(""))?;
            if matches!(request.param("watch"), Some("true" | "1")) {
                drop(store);
                return watch_request(resource, namespace, selector, request).map(Reply::Watch);
            }
            Reply::Json(200, store.list(resource, namespace, &selector))
        }
        ([], "POST") => {
            let body = json_body(request)?;
            Reply::Json(201, store.create(resource, namespace, body, dry_run)?)
        }
        ([name], "GET") => Reply::Json(200, store.get(resource, namespace, name)?),
        ([name, "status"], "GET") if resource.has_status_subresource() => {
            Reply::Json(200, store.get(resource, namespace, name)?)
        }
        ([name], "PUT") => {
            let body = json_body(request)?;
            Reply::Json(
                200,
                store.replace(resource, namespace, name, body, false, dry_run)?,
            )
        }
        ([name, "status"], "PUT") if resource.has_status_subresource() => {
            let body = json_body(request)?;
            Reply::Json(
                200,
                store.replace(resource, namespace, name, body, true, dry_run)?,
            )
        }
        ([name], "PATCH") => {
            let patch = patch_body(request)?;
            Reply::Json(
                200,
                store.patch(resource, namespace, name, &patch, false, dry_run)?,
            )
        }
        ([name, "status"], "PATCH") if resource.has_status_subresource() => {
            let patch = patch_body(request)?;
            Reply::Json(
                200,
                store.patch(resource, namespace, name, &patch, true, dry_run)?,
            )
        }
        ([name], "DELETE") => {
            // Clients (kube among them) send DeleteOptions as the body, dryRun included.
            let options = if request.body.is_empty() {
                Value::Null
            } else {
                json_body(request)?
            };
            let body_dry_run = options["dryRun"]
                .as_array()
                .is_some_and(|modes| modes.iter().any(|m| m == "All"));
            dry_run |= body_dry_run;
            let precondition = options["preconditions"]["resourceVersion"].as_str();
            Reply::Json(
                200,
                store.delete(resource, namespace, name, precondition, dry_run)?,
            )
        }
        ([] | [_] | [_, "status"], _) => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!(
                    "the server does not allow this method on the requested resource: {method}"
                ),
            ));
        }
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    drop(store);
    if method != "GET" && !dry_run {
        shared.notify_changed();
    }
    Ok(reply)
}

fn json_body(request: &Request) -> Result<Value, ApiError> {
    serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))
}

fn patch_body(request: &Request) -> Result<Value, ApiError> {
    let media = request.content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json" => json_body(request),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/merge-patch+json (got {other:?})"
            ),
        )),
    }
}

fn watch_request(
    resource: Resource,
    namespace: &str,
    selector: FieldSelector,
    request: &Request,
) -> Result<WatchRequest, ApiError> {
    let since = match request.param("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {v:?}")))?,
        ),
    };
    let timeout = match request.param("timeoutSeconds") {
        None => None,
        Some(v) => Some(Duration::from_secs(v.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds {v:?}"))
        })?)),
    };
    Ok(WatchRequest {
        resource,
        namespace: namespace.to_owned(),
        selector,
        since,
        timeout,
        bookmarks: request.param("allowWatchBookmarks") == Some("true"),
    })
}

/// Streams watch events as chunked newline-delimited JSON until the timeout,
/// `close_watches`, an expired resourceVersion or the client going away.
async fn stream_watch(
    stream: &mut TcpStream,
    shared: &Shared,
    watch: WatchRequest,
) -> std::io::Result<()> {
    let mut changed = shared.changed.subscribe();
    let mut closed = shared.close.subscribe();
    changed.borrow_and_update();
    closed.borrow_and_update();
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await?;
    shared.watch_opened();
    let deadline = watch.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut cursor = match watch.since {
        Some(rv) => rv,
        None => {
            // No resourceVersion: start now, with the current objects as ADDED.
            let (objects, rv) = {
                let store = shared.lock();
                (
                    store.current(watch.resource, &watch.namespace, &watch.selector),
                    store.rv,
                )
            };
            for object in objects {
                write_event(stream, "ADDED", &object).await?;
            }
            rv
        }
    };
    loop {
        let batch = {
            let store = shared.lock();
            store
                .events_since(cursor, watch.resource, &watch.namespace, &watch.selector)
                .map(|events| (events, store.rv, store.compacted))
                .ok_or(store.compacted)
        };
        match batch {
            Err(compacted) => {
                let error = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {cursor} ({compacted})"),
                );
                write_event(stream, "ERROR", &error.to_status()).await?;
                break;
            }
            Ok((events, rv, _)) => {
                for event in events {
                    write_event(stream, event.kind.as_str(), &event.object).await?;
                }
                cursor = cursor.max(rv);
            }
        }
        let timed_out = tokio::select! {
            _ = changed.changed() => false,
            _ = closed.changed() => break,
            _ = sleep_until(deadline) => true,
        };
        if timed_out {
            if watch.bookmarks {
                let bookmark = json!({
                    "apiVersion": watch.resource.api_version(),
                    "kind": watch.resource.kind(),
                    "metadata": {"resourceVersion": cursor.to_string()},
                });
                write_event(stream, "BOOKMARK", &bookmark).await?;
            }
            break;
        }
    }
    stream.write_all(b"0\r\n\r\n").await?;
    stream.flush().await
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn write_event(stream: &mut TcpStream, kind: &str, object: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))?;
    line.push(b'\n');
    let mut chunk = format!("{:x}\r\n", line.len()).into_bytes();
    chunk.extend_from_slice(&line);
    chunk.extend_from_slice(b"\r\n");
    stream.write_all(&chunk).await?;
    stream.flush().await
}

async fn write_json(stream: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(body)?;
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_form_decoded() {
        let query = parse_query("fieldSelector=metadata.name%3Dwf-1&watch=true&x=a+b");
        assert_eq!(
            query,
            vec![
                ("fieldSelector".to_owned(), "metadata.name=wf-1".to_owned()),
                ("watch".to_owned(), "true".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
