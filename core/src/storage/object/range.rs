//! Reads by range: the parquet crate's async reader over one version of an object,
//! whole-object GETs, and the month-file probe (the last MiB).

use super::*;

/// A large object read by range, as the parquet crate's async reader asks: the
/// footer with one suffix request (64 KiB, enough for a month file's metadata),
/// then the column chunks of the projected columns and selected row groups
/// (nearby ranges merged into one request). Every request asks for one version
/// of the object (an [`UpdateVersion`]): the one `select` saw, or, if a compaction replaced
/// it before its footer was read, the new one (a later month file holds every row
/// of the month too); replaced after that, reading it is an error.
#[derive(Debug, Clone)]
pub(crate) struct RangeReader {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) key: ObjectPath,
    /// The size and version read, shared by the clones the parquet crate's
    /// `SpawnedReader` makes for each request (a re-pin while reading the footer
    /// holds for every later request).
    pub(super) version: Arc<std::sync::Mutex<Version>>,
}

/// The object version a [`RangeReader`] reads, and the bytes of its end already
/// fetched (by `select`'s month probe), which serve the footer and any range inside
/// them without a request.
#[derive(Debug, Clone)]
pub(super) struct Version {
    pub(super) size: u64,
    pub(super) pin: UpdateVersion,
    /// `(offset, bytes)`: the object's bytes from `offset` to its end.
    pub(super) tail: Option<(u64, Bytes)>,
}

impl Version {
    /// `range` from the tail, if the tail holds all of it.
    pub(super) fn slice(&self, range: &std::ops::Range<u64>) -> Option<Bytes> {
        let (start, bytes) = self.tail.as_ref()?;
        let end = start + bytes.len() as u64;
        (range.start >= *start && range.end <= end && range.start <= range.end)
            .then(|| bytes.slice((range.start - start) as usize..(range.end - start) as usize))
    }
}

pub(super) fn parquet_io(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl RangeReader {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        key: ObjectPath,
        size: u64,
        pin: UpdateVersion,
    ) -> RangeReader {
        RangeReader {
            store,
            key,
            version: Arc::new(std::sync::Mutex::new(Version {
                size,
                pin,
                tail: None,
            })),
        }
    }

    /// The same reader, with the last `bytes.len()` bytes of the version it reads
    /// already at hand (ignored unless they end exactly at the object's size).
    pub(crate) fn with_tail(self, bytes: Bytes) -> RangeReader {
        if let Ok(mut v) = self.version.lock() {
            if let Some(start) = v.size.checked_sub(bytes.len() as u64) {
                v.tail = Some((start, bytes));
            }
        }
        self
    }

    pub(super) fn current(&self) -> Version {
        self.version
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(super) async fn fetch(
        store: Arc<dyn ObjectStore>,
        key: ObjectPath,
        pin: UpdateVersion,
        range: std::ops::Range<u64>,
    ) -> std::result::Result<Bytes, object_store::Error> {
        let opts = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            ..get_options(&pin)
        };
        store.get_opts(&key, opts).await?.bytes().await
    }
}

impl parquet::arrow::async_reader::AsyncFileReader for RangeReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let v = self.current();
        if let Some(bytes) = v.slice(&range) {
            return Box::pin(async move { Ok(bytes) });
        }
        let (store, key, pin) = (self.store.clone(), self.key.clone(), v.pin);
        Box::pin(async move {
            Self::fetch(store, key, pin, range)
                .await
                .map_err(parquet_io)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let v = self.current();
        // Ranges inside the tail already fetched are cut from it; the rest are fetched
        // (nearby ones merged into one request).
        let mut out: Vec<Option<Bytes>> = ranges.iter().map(|r| v.slice(r)).collect();
        let missing: Vec<std::ops::Range<u64>> = ranges
            .iter()
            .zip(&out)
            .filter(|(_, hit)| hit.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        let (store, key, pin) = (self.store.clone(), self.key.clone(), v.pin);
        Box::pin(async move {
            if !missing.is_empty() {
                let fetched = object_store::coalesce_ranges(
                    &missing,
                    |r| Self::fetch(store.clone(), key.clone(), pin.clone(), r),
                    object_store::OBJECT_STORE_COALESCE_DEFAULT,
                )
                .await
                .map_err(parquet_io)?;
                let mut fetched = fetched.into_iter();
                for slot in out.iter_mut().filter(|o| o.is_none()) {
                    *slot = fetched.next();
                }
            }
            out.into_iter()
                .map(|b| {
                    b.ok_or_else(|| {
                        parquet::errors::ParquetError::General("a range was not fetched".into())
                    })
                })
                .collect()
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        Box::pin(async move {
            let mut repinned = false;
            loop {
                let size = self.current().size;
                let r = parquet::file::metadata::ParquetMetaDataReader::new()
                    .with_arrow_reader_options(options)
                    .with_prefetch_hint(Some(FOOTER_PREFETCH))
                    .load_and_finish(&mut *self, size)
                    .await;
                match r {
                    Ok(metadata) => return Ok(Arc::new(metadata)),
                    // Replaced since `select` saw it: read the new version instead
                    // (nothing of this file has been read yet).
                    Err(e) if !repinned && is_precondition(&e) => {
                        let meta = self.store.head(&self.key).await.map_err(parquet_io)?;
                        if let Ok(mut v) = self.version.lock() {
                            // A new version: the tail fetched belongs to the old one.
                            *v = Version {
                                size: meta.size,
                                pin: version_of(&meta),
                                tail: None,
                            };
                        }
                        repinned = true;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }
}

/// Whether a read failed because the object is no longer the version asked for.
pub(super) fn is_precondition(e: &parquet::errors::ParquetError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        parquet::errors::ParquetError::External(b) => Some(b.as_ref()),
        _ => None,
    };
    while let Some(s) = source {
        if let Some(object_store::Error::Precondition { .. }) =
            s.downcast_ref::<object_store::Error>()
        {
            return true;
        }
        source = s.source();
    }
    false
}

pub(super) async fn get_bytes(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
) -> std::result::Result<Bytes, object_store::Error> {
    store.get(key).await?.bytes().await
}

/// An object's metadata and its last [`MONTH_PROBE_BYTES`] (all of it if it is no
/// longer): one GET with a suffix range (a suffix longer than the object returns all
/// of it). A server that refuses the range (e.g. 416 for an empty object) is asked
/// with a HEAD instead, and no bytes come back.
pub(super) async fn probe(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
) -> std::result::Result<(object_store::ObjectMeta, Option<Bytes>), object_store::Error> {
    let opts = object_store::GetOptions {
        range: Some(object_store::GetRange::Suffix(MONTH_PROBE_BYTES)),
        ..Default::default()
    };
    match store.get_opts(key, opts).await {
        Ok(r) => {
            let meta = r.meta.clone();
            let ends_at_the_end = r.range.end == meta.size;
            let bytes = r.bytes().await?;
            Ok((meta, ends_at_the_end.then_some(bytes)))
        }
        Err(e @ object_store::Error::NotFound { .. }) => Err(e),
        Err(_) => Ok((store.head(key).await?, None)),
    }
}
