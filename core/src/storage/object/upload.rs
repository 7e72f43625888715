//! A month object written with a multipart upload: invisible until completed,
//! aborted when dropped unfinished; the unfinished uploads of a key found and
//! aborted.

use super::*;

/// The whole month file being written to a bucket: a `Write` sink for the
/// Parquet writer. Bytes are buffered up to a part's size; the first full part
/// starts a multipart upload (invisible until completed), parts are sent as
/// they fill (at most [`PARTS_IN_FLIGHT`] at once), and [`MonthUpload::finish`]
/// completes it, which makes the object appear whole at once. A file smaller
/// than one part is sent with one PUT, just as atomic. Dropped unfinished, or
/// on [`MonthUpload::abort`], the upload is aborted.
pub(crate) struct MonthUpload {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) key: ObjectPath,
    pub(super) at: PathBuf,
    pub(super) secrets: Vec<String>,
    pub(super) part_size: usize,
    pub(super) buf: Vec<u8>,
    pub(super) upload: Option<Box<dyn object_store::MultipartUpload>>,
    pub(super) in_flight:
        std::collections::VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
    pub(super) parts: usize,
    pub(super) bytes: u64,
}

/// Parts being uploaded at once: the memory of an upload is about
/// `(PARTS_IN_FLIGHT + 1) × part size`.
pub(super) const PARTS_IN_FLIGHT: usize = 2;
/// A part's size: S3's minimum is 5 MiB (`PROMDUCK_S3_PART_BYTES` overrides it,
/// for servers and tests that accept smaller parts).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

pub(super) fn part_bytes() -> usize {
    std::env::var("PROMDUCK_S3_PART_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n >= 1024)
        .unwrap_or(PART_BYTES)
}

impl MonthUpload {
    pub(super) fn io_err(&self, what: &str, e: impl std::fmt::Display) -> std::io::Error {
        std::io::Error::other(format!(
            "{}: cannot {what}: {}",
            self.at.display(),
            scrub(&e.to_string(), &self.secrets)
        ))
    }

    /// Sends the buffered bytes as the next part (starting the upload first).
    pub(super) fn send_part(&mut self) -> std::io::Result<()> {
        if self.upload.is_none() {
            let (store, key) = (self.store.clone(), self.key.clone());
            let up = run(async move { store.put_multipart(&key).await })
                .map_err(|e| self.io_err("start the upload", e))?;
            self.upload = Some(up);
        }
        let part = std::mem::take(&mut self.buf);
        self.bytes += part.len() as u64;
        self.parts += 1;
        let fut = self
            .upload
            .as_mut()
            .expect("started above")
            .put_part(PutPayload::from(part));
        self.in_flight.push_back(runtime().spawn(fut));
        while self.in_flight.len() > PARTS_IN_FLIGHT {
            self.wait_one()?;
        }
        Ok(())
    }

    pub(super) fn wait_one(&mut self) -> std::io::Result<()> {
        let Some(h) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match futures::executor::block_on(h) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_err("upload a part", e)),
            Err(e) => Err(self.io_err("upload a part", e)),
        }
    }

    /// Makes the object visible, whole; returns its size and the parts it took (0: one
    /// PUT). `go` is asked once every part has been uploaded, just before the one request
    /// that makes the object visible (the PUT or CompleteMultipartUpload):
    /// an error from it aborts the upload, so nothing appears. Compaction asks whether it
    /// still holds its lock there: parts take their time, and a lock lost while they upload
    /// must not let the month appear.
    pub(crate) fn finish_if(mut self, go: impl FnOnce() -> Result<()>) -> Result<(u64, usize)> {
        let storage_err = |at: &std::path::Path, e: std::io::Error| Error::Storage {
            path: at.to_path_buf(),
            message: e.to_string(),
        };
        let r = match self.flush_parts() {
            Err(e) => Err(storage_err(&self.at, e)),
            Ok(()) => go().and_then(|()| self.finish_inner().map_err(|e| storage_err(&self.at, e))),
        };
        if r.is_err() {
            self.abort();
        }
        r
    }

    /// Sends the last part and waits for every part in flight (a single-PUT object has
    /// none: its bytes wait in the buffer).
    fn flush_parts(&mut self) -> std::io::Result<()> {
        if self.upload.is_none() {
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_one()?;
        }
        Ok(())
    }

    pub(super) fn finish_inner(&mut self) -> std::io::Result<(u64, usize)> {
        if self.upload.is_none() {
            let body = std::mem::take(&mut self.buf);
            let n = body.len() as u64;
            let (store, key) = (self.store.clone(), self.key.clone());
            run(async move { store.put(&key, PutPayload::from(body)).await })
                .map_err(|e| self.io_err("write", e))?;
            self.bytes = n;
            return Ok((n, 0));
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_one()?;
        }
        let mut up = self.upload.take().expect("started");
        let (back, r) = run(async move {
            let r = up.complete().await;
            (up, r)
        });
        match r {
            Ok(_) => Ok((self.bytes, self.parts)),
            Err(e) => {
                self.upload = Some(back);
                Err(self.io_err("complete the upload", e))
            }
        }
    }

    /// Stops: parts in flight are dropped and the upload aborted (nothing appears).
    pub(crate) fn abort(&mut self) {
        for h in self.in_flight.drain(..) {
            h.abort();
        }
        if let Some(mut up) = self.upload.take() {
            let r = run(async move { up.abort().await });
            if let Err(e) = r {
                tracing::warn!(key = %self.key, error = %scrub(&e.to_string(), &self.secrets), "cannot abort the multipart upload; the next compaction aborts it");
            }
        }
    }
}

impl std::io::Write for MonthUpload {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.part_size {
            self.send_part()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MonthUpload {
    fn drop(&mut self) {
        self.abort();
    }
}

impl ObjectStorage {
    /// A new upload of `key` (see [`MonthUpload`]).
    pub(crate) fn upload(&self, key: &ObjectPath) -> MonthUpload {
        MonthUpload {
            store: self.store.clone(),
            key: key.clone(),
            at: self.display(key),
            secrets: self.secrets.clone(),
            part_size: self.part_size,
            buf: Vec::new(),
            upload: None,
            in_flight: Default::default(),
            parts: 0,
            bytes: 0,
        }
    }

    /// Aborts every unfinished multipart upload of `key` (left by a compaction
    /// that was killed; the caller holds the compaction lock, so none is live).
    /// Returns how many; 0 where uploads cannot be listed.
    pub(crate) fn abort_uploads(&self, key: &ObjectPath) -> Result<usize> {
        let Some(signer) = &self.signer else {
            return Ok(0);
        };
        let Some(s3) = signer.s3.clone() else {
            return Ok(0);
        };
        let k = key.to_string();
        let signer = signer.clone();
        let ids =
            run(async move { signer.list_uploads(&k).await }).map_err(|e| Error::Storage {
                path: self.display(key),
                message: format!(
                    "cannot list unfinished uploads: {}",
                    scrub(&e, &self.secrets)
                ),
            })?;
        let Some(ids) = ids else {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(archive = %self.url(), "this server cannot list unfinished multipart uploads: one left by a killed compaction is not aborted (a lifecycle rule that aborts incomplete uploads removes it)");
            }
            return Ok(0);
        };
        let n = ids.len();
        for id in ids {
            let (s3, k) = (s3.clone(), key.clone());
            use object_store::multipart::MultipartStore;
            match run(async move { s3.abort_multipart(&k, &id).await }) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("abort an unfinished upload of", key, e)),
            }
        }
        Ok(n)
    }
}
