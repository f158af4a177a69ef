//! Reading a blob for a peer, including one that is still arriving: a reader past the written end
//! waits for more bytes (bounded), so a chain of boards forwards a file while it downloads.

use std::{io::SeekFrom, pin::Pin, time::Duration};

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::BlobStore;

/// Bytes read and sent per step.
const CHUNK: u64 = 256 << 10;

/// A byte stream of (part of) a blob.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// An open read of `[start, end)` of a blob of `total` bytes.
pub struct BlobRead {
    pub total: u64,
    pub start: u64,
    pub end: u64,
    /// False while the blob is still arriving.
    pub complete: bool,
    /// Bytes on disk when the read started.
    pub available: u64,
    pub stream: ByteStream,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("blob not in this store")]
    NotFound,
    #[error("range not satisfiable (blob is {total} bytes)")]
    Range { total: u64 },
    #[error("reading blob: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range against `total` into a half-open
/// `[start, end)`. `Ok(None)`: no header (the whole blob). Multi-range requests are refused.
pub fn parse_range(header: Option<&str>, total: u64) -> Result<Option<(u64, u64)>, ReadError> {
    let Some(h) = header else { return Ok(None) };
    let bad = || ReadError::Range { total };
    let spec = h.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            (total.saturating_sub(n), total)
        }
        (a, "") => (a.parse().map_err(|_| bad())?, total),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| bad())?;
            let b: u64 = b.parse().map_err(|_| bad())?;
            (a, b.saturating_add(1).min(total))
        }
    };
    if start >= end || start >= total {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

impl BlobStore {
    /// Opens `sha256` for reading `range` (from [`parse_range`]). A blob that is still arriving is
    /// served up to its final size: the stream waits up to `wait` each time it catches up with
    /// the writer, and ends with an error if the download fails or stalls that long.
    pub fn read(&self, sha256: &str, range: Option<&str>, wait: Duration) -> Result<BlobRead, ReadError> {
        let complete = self.blob_path(sha256);
        let (file, total, arrival, path) = match std::fs::File::open(&complete) {
            Ok(f) => {
                let total = f.metadata()?.len();
                (f, total, None, complete.clone())
            }
            Err(_) => {
                let arrival = self.arrival(sha256).ok_or(ReadError::NotFound)?;
                let partial = self.partial_path(sha256);
                match std::fs::File::open(&partial) {
                    Ok(f) => (f, arrival.total, Some(arrival), partial),
                    // Renamed into place between the two opens.
                    Err(_) => {
                        let f = std::fs::File::open(&complete).map_err(|_| ReadError::NotFound)?;
                        let total = f.metadata()?.len();
                        (f, total, None, complete.clone())
                    }
                }
            }
        };
        let (start, end) = parse_range(range, total)?.unwrap_or((0, total));
        let available = arrival.as_ref().map_or(total, |a| *a.written.borrow());
        let is_complete = arrival.is_none();
        let mut rx = arrival.map(|a| a.written.clone());
        tracing::debug!(blob = %sha256, start, end, available, file = %path.display(), "serving blob");
        let stream = async_stream::try_stream! {
            let mut file = tokio::fs::File::from_std(file);
            file.seek(SeekFrom::Start(start)).await?;
            let mut pos = start;
            let mut buf = vec![0u8; CHUNK as usize];
            while pos < end {
                let avail = rx.as_ref().map_or(total, |r| *r.borrow());
                if pos >= avail {
                    let r = rx.as_mut().expect("only arriving blobs can run short");
                    match tokio::time::timeout(wait, r.changed()).await {
                        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "blob stalled while arriving"))?,
                        // The download ended: complete (renamed; our descriptor still reads it)
                        // or failed (then the bytes must not be passed on).
                        Ok(Err(_)) => {
                            if tokio::fs::metadata(&complete).await.is_ok() {
                                rx = None;
                            } else {
                                Err(std::io::Error::other("the blob's download failed on this board"))?;
                            }
                        }
                        Ok(Ok(())) => {}
                    }
                    continue;
                }
                let n = (avail - pos).min(end - pos).min(CHUNK) as usize;
                file.read_exact(&mut buf[..n]).await?;
                pos += n as u64;
                yield Bytes::copy_from_slice(&buf[..n]);
            }
        };
        Ok(BlobRead { total, start, end, complete: is_complete, available, stream: Box::pin(stream) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10).unwrap(), None);
        assert_eq!(parse_range(Some("bytes=0-"), 10).unwrap(), Some((0, 10)));
        assert_eq!(parse_range(Some("bytes=2-4"), 10).unwrap(), Some((2, 5)));
        assert_eq!(parse_range(Some("bytes=2-400"), 10).unwrap(), Some((2, 10)));
        assert_eq!(parse_range(Some("bytes=-3"), 10).unwrap(), Some((7, 10)));
        for bad in ["bytes=10-", "bytes=5-2", "items=0-1", "bytes=0-1,3-4", "bytes=x-"] {
            assert!(matches!(parse_range(Some(bad), 10), Err(ReadError::Range { total: 10 })), "{bad}");
        }
    }
}
