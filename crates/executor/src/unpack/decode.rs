//! The layer stream: decompression and the diff ID's sha256 run on a decoder thread,
//! whose chunks ([`ChunkReader`]) feed the tar parser and the [`Unpacker`] on the calling
//! thread.

use super::{
    BUF_SIZE, Compression, LowerView, UnpackError, UnpackOptions, UnpackStats, Unpacker, open_root,
};
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::str::FromStr;

/// Decompressing and hashing the layer (the diff ID) run on a second thread, ahead of
/// the tar parsing and file writes on this one: for a large file they are most of the
/// CPU time, for many small files the system calls are, and either way the two halves
/// overlap on two cores.
pub(super) fn unpack_stream_with<'r, R: Read + Send + 'r>(
    reader: R,
    compression: Compression,
    dest: &Path,
    lowers: LowerView,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let root = open_root(dest)?;
    let raw = BufReader::with_capacity(BUF_SIZE, reader);
    let decoded: Box<dyn Read + Send + 'r> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(UnpackError::Read)?)
        }
    };
    let limit = opts.max_bytes;
    std::thread::scope(|scope| {
        let (chunks, queue) = std::sync::mpsc::sync_channel(DECODE_QUEUE);
        let decoder = std::thread::Builder::new()
            .name("layer-decoder".into())
            .spawn_scoped(scope, move || decode_and_hash(decoded, limit, chunks))
            .map_err(UnpackError::Read)?;
        let stream = ChunkReader {
            queue,
            chunk: Vec::new(),
            at: 0,
        };
        let mut archive = tar::Archive::new(stream);
        let mut unpacker = Unpacker::new(root, opts.path_walk);
        match lowers {
            LowerView::Open(lowers) => unpacker.lowers = lowers,
            LowerView::Deferred => unpacker.deferred = true,
        }
        let result = unpacker.apply_all(&mut archive, opts);
        let mut rest = archive.into_inner();
        let result = result.and_then(|entries| {
            // The tar end marker may be followed by padding: the diff ID covers the whole
            // stream.
            io::copy(&mut rest, &mut io::sink()).map_err(UnpackError::Read)?;
            Ok(entries)
        });
        // Stops the decoder if it is still going (an error above).
        drop(rest);
        let decoded = decoder
            .join()
            .map_err(|_| UnpackError::Read(io::Error::other("the layer decoder panicked")))?;
        let entries = match result {
            // The reader's own error is wrapped by tar; the decoder's count tells what
            // happened.
            Err(_) if decoded.bytes > limit => return Err(UnpackError::TooLarge { limit }),
            other => other?,
        };
        unpacker.finish()?;
        let diff_id = Digest::from_str(&format!(
            "sha256:{}",
            hex::encode(decoded.hasher.finalize())
        ))
        .expect("a sha256 hex digest is a valid digest");
        Ok(UnpackStats {
            diff_id,
            bytes: decoded.bytes,
            entries,
            assumed_absent: unpacker.assumed_absent.into_inner(),
        })
    })
}

/// Decoded chunks queued between the decoder thread and the tar reader.
const DECODE_QUEUE: usize = 4;

/// What the decoder thread saw: the hash and size of the whole decoded stream (as far
/// as it got).
struct Decoded {
    hasher: Sha256,
    bytes: u64,
}

/// Reads the decompressed layer in chunks of [`BUF_SIZE`], hashing and counting them,
/// and sends them on; stops at the end, at an error (sent on), past `limit` bytes, or
/// when the reader hung up.
fn decode_and_hash(
    mut decoded: Box<dyn Read + Send + '_>,
    limit: u64,
    chunks: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> Decoded {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    loop {
        // Up to a full chunk (decoders return a little at a time); a short one is the
        // end of the stream or an error, with what came before it.
        let mut chunk = Vec::with_capacity(BUF_SIZE);
        let read = (&mut decoded).take(BUF_SIZE as u64).read_to_end(&mut chunk);
        bytes += chunk.len() as u64;
        if bytes > limit {
            let _ = chunks.send(Err(io::Error::other("layer size limit exceeded")));
            break;
        }
        hasher.update(&chunk);
        let last = chunk.len() < BUF_SIZE;
        if !chunk.is_empty() && chunks.send(Ok(chunk)).is_err() {
            break;
        }
        if let Err(e) = read {
            let _ = chunks.send(Err(e));
            break;
        }
        if last {
            break;
        }
    }
    Decoded { hasher, bytes }
}

/// The tar side of the decoder thread's queue.
struct ChunkReader {
    queue: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.queue.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The decoder is done: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
