//! A fake Kubernetes API server for tests.
//!
//! No real API server can run on the project's machines, so tests run the code
//! under test against this one: it serves real HTTP/1.1 on `127.0.0.1:<free port>`
//! and the code connects with an ordinary `kube::Client` built from the kubeconfig
//! that [`FakeApiServer::write_kubeconfig`] writes.
//!
//! It is faithful where the project's code depends on the API server: `Status`
//! error bodies, `201` on create with uid/creationTimestamp/resourceVersion,
//! `409 AlreadyExists` (dry run included), `dryRun=All`, list with a
//! resourceVersion and a `metadata.name` field selector, watches with ADDED,
//! MODIFIED, DELETED, bookmarks, `timeoutSeconds` and `410 Expired`, `409 Conflict`
//! on a stale resourceVersion, merge patches and the status subresource.
//! It serves two resources: Argo `Workflow`s and core `Secret`s ([`Resource`]).
//!
//! Caveats: namespaced paths only (no cluster-wide lists), no discovery, no
//! authentication, no label selectors, no strategic merge or JSON patches
//! (answered with `415`), no admission or schema validation of Workflows,
//! bookmarks only when a watch reaches its `timeoutSeconds`.
//!
//! Tests act as other controllers through the direct methods ([`FakeApiServer::set_status`],
//! [`FakeApiServer::delete`], [`FakeApiServer::compact`], ...).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod http;
mod resource;
mod store;

pub use resource::Resource;
pub use store::{ApiError, RecordedRequest};

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use store::Store;
use tokio::sync::watch;

/// Why the fake server could not start or write its kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the loopback listener failed.
    #[error("cannot bind the fake api server on 127.0.0.1")]
    Bind(#[source] std::io::Error),
    /// The background runtime could not be built.
    #[error("cannot start the fake api server's runtime")]
    Runtime(#[source] std::io::Error),
    /// Writing the kubeconfig file failed.
    #[error("cannot write kubeconfig {path}")]
    WriteKubeconfig {
        /// The kubeconfig path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// State shared by the connection tasks and the test API.
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Bumped on every stored change, to wake the watches.
    changed: watch::Sender<u64>,
    /// Bumped by `close_watches`, to end the open watches.
    close: watch::Sender<u64>,
    /// How many watches have been opened since the start.
    watches_opened: watch::Sender<usize>,
    /// How many of the next requests get their connection closed unanswered.
    drop_connections: AtomicU32,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        // A panicking test thread must not take every later request down with it.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notify_changed(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Whether to hang up on the current request (consumes one from `drop_connections`).
    pub(crate) fn take_dropped_connection(&self) -> bool {
        self.drop_connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(crate) fn watch_opened(&self) {
        self.watches_opened.send_modify(|n| *n += 1);
    }
}

/// A running fake API server; it stops when dropped (open connections included).
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// The server's own runtime, for [`FakeApiServer::start_background`].
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeApiServer {
    /// Starts a server on a free loopback port, served by the current tokio runtime.
    ///
    /// The runtime must keep running while clients talk to the server: a test
    /// that blocks its thread (waiting for a child process with `std::process`,
    /// say) on a single-threaded runtime starves it; use
    /// [`FakeApiServer::start_background`] there.
    pub async fn start() -> Result<Self, Error> {
        Self::spawn(&tokio::runtime::Handle::current(), None)
    }

    /// Starts a server on a free loopback port, served by its own background
    /// thread: for synchronous tests, or tests that block their runtime.
    pub fn start_background() -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kube-fake")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Self::spawn(&runtime.handle().clone(), Some(runtime))
    }

    fn spawn(
        handle: &tokio::runtime::Handle,
        runtime: Option<tokio::runtime::Runtime>,
    ) -> Result<Self, Error> {
        // Bound synchronously, so that the port is known and listening on return.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Error::Bind)?;
        listener.set_nonblocking(true).map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changed: watch::channel(0).0,
            close: watch::channel(0).0,
            watches_opened: watch::channel(0).0,
            drop_connections: AtomicU32::new(0),
        });
        let accept_shared = shared.clone();
        let task = handle.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "fake api server cannot listen");
                    return;
                }
            };
            // Dropping the set (when the accept task is aborted) aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(http::serve_connection(stream, accept_shared.clone()));
                        }
                        Err(error) => tracing::warn!(%error, "fake api server accept failed"),
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        tracing::debug!(%addr, "fake api server started");
        Ok(Self {
            addr,
            shared,
            task,
            runtime,
        })
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (JSON, which is valid YAML) with one context pointing at this
    /// server, using `namespace` as the default namespace.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube-fake", "cluster": {"server": self.url()}}],
            "users": [{"name": "kube-fake", "user": {}}],
            "contexts": [{
                "name": "kube-fake",
                "context": {"cluster": "kube-fake", "user": "kube-fake", "namespace": namespace},
            }],
            "current-context": "kube-fake",
        })
        .to_string()
    }

    /// Writes [`FakeApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> Result<(), Error> {
        std::fs::write(path, self.kubeconfig(namespace)).map_err(|source| Error::WriteKubeconfig {
            path: path.to_owned(),
            source,
        })
    }

    /// Creates an object directly, as another client would (watches see it).
    pub fn create(
        &self,
        resource: Resource,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let created = self
            .shared
            .lock()
            .create(resource, namespace, object, false);
        self.shared.notify_changed();
        created
    }

    /// The stored object, or `None`.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.shared.lock().get(resource, namespace, name).ok()
    }

    /// Every stored object of a resource in a namespace.
    pub fn list(&self, resource: Resource, namespace: &str) -> Vec<Value> {
        self.shared
            .lock()
            .current(resource, namespace, &Default::default())
    }

    /// Replaces the `status` of an object, as its controller would through the
    /// status subresource (watches see a MODIFIED event).
    pub fn set_status(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        let mut store = self.shared.lock();
        // A whole-object replace, so the new status replaces the old one instead of merging.
        let mut object = store.get(resource, namespace, name)?;
        object["status"] = status;
        let result = store.replace(resource, namespace, name, object, true, false);
        drop(store);
        self.shared.notify_changed();
        result
    }

    /// Deletes an object (watches see a DELETED event).
    pub fn delete(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let deleted = self
            .shared
            .lock()
            .delete(resource, namespace, name, None, false);
        self.shared.notify_changed();
        deleted
    }

    /// Forgets the watch history, as an etcd compaction does: a watch from any
    /// resourceVersion older than now (open or new) gets `410 Expired`.
    pub fn compact(&self) {
        self.shared.lock().compact();
        self.shared.notify_changed();
    }

    /// Ends every open watch stream cleanly, as a server or load balancer timeout does.
    pub fn close_watches(&self) {
        self.shared.close.send_modify(|n| *n += 1);
    }

    /// Makes the next `count` updates (PUT or PATCH) of one object fail with `409 Conflict`.
    pub fn inject_conflicts(&self, resource: Resource, namespace: &str, name: &str, count: u32) {
        self.shared
            .lock()
            .inject_conflicts(resource, namespace, name, count);
    }

    /// Closes the connection of each of the next `count` requests without an answer,
    /// as a restarting server does; clients see a transport error. The requests are
    /// still recorded.
    pub fn drop_connections(&self, count: u32) {
        self.shared.drop_connections.store(count, Ordering::SeqCst);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// How many watches have been opened since the start.
    pub fn watches_opened(&self) -> usize {
        *self.shared.watches_opened.borrow()
    }

    /// Waits until at least `count` watches have been opened since the start.
    ///
    /// Has no timeout of its own: wrap it in `tokio::time::timeout`.
    pub async fn wait_for_watches(&self, count: usize) {
        let mut opened = self.shared.watches_opened.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we borrow it.
        let _ = opened.wait_for(|n| *n >= count).await;
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(runtime) = self.runtime.take() {
            // Unlike dropping it, this is allowed inside another runtime's context.
            runtime.shutdown_background();
        }
    }
}
