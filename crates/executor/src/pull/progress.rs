//! Pull progress as an observer: the library tells it about every blob transfer and
//! draws nothing itself; the CLI draws bars on a terminal.

use oci_spec::image::Digest;

/// Told when each blob transfer of a pull starts.
pub trait PullProgress: Send + Sync + std::fmt::Debug {
    /// A download of `blob`, `size` bytes in all, starts; the returned handle hears how
    /// far it got. A download that starts over reports from 0 again.
    fn started(&self, blob: &Digest, size: u64) -> Box<dyn BlobProgress>;
}

/// How far one blob transfer got.
pub trait BlobProgress: Send + Sync {
    /// `written` bytes of the blob are in the store's temp file.
    fn at(&self, written: u64);
    /// The blob is complete and verified.
    fn done(&self);
}
