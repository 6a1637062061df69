//! Fetching blobs: each into the content store through its writer, with retries and
//! resumes (`Range`), stall detection, and progress told to the observer, if any.

use super::progress::BlobProgress;
use super::{PullError, Puller};
use crate::source::SourceError;
use crate::store::{BlobWriter, StoreError, VerifiedBlob};
use futures::StreamExt;
use oci_spec::image::Descriptor;
use std::time::Duration;

impl Puller<'_> {
    /// Runs `op`, retrying transient failures with exponential backoff.
    pub(super) async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, PullError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SourceError>>,
    {
        let mut attempt = 0;
        loop {
            // A registry that accepts the connection but never answers must not hang the
            // pull: the stall timeout bounds the whole request (manifests are small).
            let result = match tokio::time::timeout(self.opts.stall_timeout, op()).await {
                Ok(result) => result,
                Err(_) => Err(SourceError::Transient {
                    what: what.to_owned(),
                    detail: format!(
                        "stalled: no complete response within {}s",
                        self.opts.stall_timeout.as_secs()
                    ),
                    retry_after: None,
                }),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    let delay = self.delay(attempt, &e);
                    tracing::warn!(what, attempt = attempt + 1, delay_ms = millis(delay), error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.source_err(e)),
            }
        }
    }

    /// How long to wait before retry number `attempt + 1` after `error`.
    fn delay(&self, attempt: u32, error: &SourceError) -> Duration {
        if let Some(asked) = error.retry_after() {
            return asked.min(Duration::from_secs(300));
        }
        let factor = 2u32.saturating_pow(attempt.min(16));
        (self.opts.initial_backoff * factor).min(Duration::from_secs(30))
    }

    /// Fetches one blob into the store unless it is there already; under the blob's lock,
    /// so that concurrent pullers wait for each other instead of downloading twice.
    pub(super) async fn fetch_blob(&self, descriptor: &Descriptor) -> Result<(), PullError> {
        let digest = descriptor.digest();
        let size = descriptor.size();
        if self.store.has_blob(digest, size) {
            tracing::debug!(image = %self.reference, blob = %digest, "already stored");
            return Ok(());
        }
        let _lock = self
            .store
            .lock_blob(digest)
            .await
            .map_err(|e| self.store_err(e))?;
        if self.store.has_blob(digest, size) {
            tracing::debug!(image = %self.reference, blob = %digest, "stored by another pull");
            return Ok(());
        }
        let writer = self
            .store
            .blob_writer(digest, size)
            .await
            .map_err(|e| self.store_err(e))?;
        let (verified, _) = self.download(descriptor, writer).await?;
        verified.persist().map_err(|e| self.store_err(e))
    }

    /// Downloads one blob into `writer` (fresh), with retries and resumes, and verifies
    /// it; the caller holds the blob's lock and stores the result. Also says whether the
    /// download had to start over with a fresh writer (which fails `writer`'s followers).
    pub(super) async fn download(
        &self,
        descriptor: &Descriptor,
        mut writer: BlobWriter,
    ) -> Result<(VerifiedBlob, bool), PullError> {
        let digest = descriptor.digest();
        let size = descriptor.size();
        let bar = self.opts.progress.as_ref().map(|p| p.started(digest, size));
        let mut restarted = false;
        let mut attempt = 0;
        let verified = loop {
            let transferred = self
                .transfer(descriptor, &mut writer, bar.as_deref(), &mut restarted)
                .await;
            let failure = match transferred {
                Ok(()) => match writer.verify().await {
                    Ok(verified) => break verified,
                    // Bytes mangled on the way (a bad proxy, a flaky middlebox): the temp
                    // file is gone, so start over from byte 0. A registry that keeps
                    // serving bad content fails once the retries are used up.
                    Err(
                        e @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }),
                    ) if attempt < self.opts.retries => {
                        tracing::warn!(
                            image = %self.reference, blob = %digest, attempt = attempt + 1,
                            error = %e, "blob content is wrong; downloading it again"
                        );
                        attempt += 1;
                        restarted = true;
                        writer = self
                            .store
                            .blob_writer(digest, size)
                            .await
                            .map_err(|e| self.store_err(e))?;
                        continue;
                    }
                    Err(e) => return Err(self.store_err(e)),
                },
                Err(failure) => failure,
            };
            match failure {
                Failure::Source(e) if e.is_transient() && attempt < self.opts.retries => {
                    let delay = self.delay(attempt, &e);
                    tracing::warn!(
                        image = %self.reference, blob = %digest, attempt = attempt + 1,
                        resume_at = writer.written(), delay_ms = millis(delay),
                        error = %e, "blob transfer interrupted; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Failure::Stalled if attempt < self.opts.retries => {
                    tracing::warn!(image = %self.reference, blob = %digest, attempt = attempt + 1, "blob transfer stalled; retrying");
                    attempt += 1;
                }
                Failure::Stalled => {
                    return Err(PullError::Stalled {
                        reference: self.reference.clone(),
                        digest: digest.clone(),
                        seconds: self.opts.stall_timeout.as_secs(),
                    });
                }
                Failure::Source(e) => return Err(self.source_err(e)),
                Failure::Store(e) => return Err(self.store_err(e)),
            }
        };
        if let Some(bar) = bar {
            bar.done();
        }
        // Per blob, so debug: the default text log has one line per stage.
        tracing::debug!(image = %self.reference, blob = %digest, size, "fetched blob");
        Ok((verified, restarted))
    }

    /// One attempt: streams the rest of the blob (from `writer.written()`) into the writer.
    async fn transfer(
        &self,
        descriptor: &Descriptor,
        writer: &mut BlobWriter,
        bar: Option<&dyn BlobProgress>,
        restarted: &mut bool,
    ) -> Result<(), Failure> {
        let offset = writer.written();
        // A registry that never sends the response head counts as a stall too.
        let (mut stream, start) = tokio::time::timeout(
            self.opts.stall_timeout,
            self.reader.blob(descriptor, offset),
        )
        .await
        .map_err(|_| Failure::Stalled)?
        .map_err(Failure::Source)?;
        if start != offset {
            // The source ignored the range: start over with a fresh temp file.
            tracing::debug!(blob = %descriptor.digest(), "source does not resume; restarting");
            *restarted = true;
            *writer = self
                .store
                .blob_writer(descriptor.digest(), descriptor.size())
                .await
                .map_err(Failure::Store)?;
        }
        if let Some(bar) = bar {
            bar.at(writer.written());
        }
        loop {
            let next = tokio::time::timeout(self.opts.stall_timeout, stream.next())
                .await
                .map_err(|_| Failure::Stalled)?;
            match next {
                // A body that ends early (a lying `Content-Length`, a proxy that closed
                // cleanly) is resumed like a broken connection, not failed as corrupt.
                None if writer.written() < descriptor.size() => {
                    return Err(Failure::Source(SourceError::Transient {
                        what: descriptor.digest().to_string(),
                        detail: format!(
                            "response ended after {} of {} bytes",
                            writer.written(),
                            descriptor.size()
                        ),
                        retry_after: None,
                    }));
                }
                None => return Ok(()),
                Some(Ok(chunk)) => {
                    writer.write(chunk).await.map_err(Failure::Store)?;
                    if let Some(bar) = bar {
                        bar.at(writer.written());
                    }
                }
                // Every byte is here and only the framing broke (a `Content-Length` that
                // promised more): commit verifies the digest, so no need to fetch again.
                Some(Err(_)) if writer.written() == descriptor.size() => return Ok(()),
                Some(Err(e)) => return Err(Failure::Source(e)),
            }
        }
    }
}

/// Whole milliseconds, for logs (a delay is at most minutes).
fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

enum Failure {
    Source(SourceError),
    Store(StoreError),
    Stalled,
}
