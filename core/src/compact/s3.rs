//! Compaction of an archive in an S3-compatible bucket: the same month files, the
//! same writer and the same promises as on disk (see the parent module), with the
//! bucket's own means instead of a folder's.
//!
//! Order of operations (S3 changes one object at a time, never several at once):
//!
//! 1. **Lock**: the archive's compaction lock object is created with a
//!    conditional PUT (`If-None-Match: *`), so one compaction of the archive runs at
//!    a time; a heartbeat keeps it, a stale one (expired, or its holder on this
//!    machine gone) is taken over (see `storage::object::CompactionLock`).
//! 2. **Leftovers**: unfinished multipart uploads of the month's key (a compaction
//!    killed mid-upload) are aborted.
//! 3. **Write**: the month's daily objects are listed, fetched in the month file's
//!    order a bounded number ahead, merged with the previous month file (read by
//!    range, pinned to the version listed) and written by the same Parquet writer
//!    as on disk into a multipart upload: parts go out as they fill, nothing is
//!    visible until the upload completes, and any failure aborts it. The
//!    completion makes the month object appear whole, at once: from then on
//!    readers (which look for the month file before listing any day) use it for
//!    the whole month.
//! 4. **Remove**: `removeDailyAfter` later, each daily object taken in is deleted
//!    only if it is still the version that was read (`If-Match` on its ETag): one
//!    re-collected meanwhile is kept for the next compaction. Then the lock is
//!    released.
//!
//! A kill before step 3 completes leaves the daily objects as they were (and an
//! unfinished upload, aborted by the next run); after it, the month object is
//! complete and the next run compacts again (same rows) and deletes what is left.
//! Readers are exact throughout: before the month object appears they read the
//! daily objects; after it, the month object alone; a daily object listed just
//! before and deleted since is read from the month object instead.

use super::{
    key_columns, month_keys_from, plan_keys, write_partitions, BatchIter, Batched, CompactOptions,
    DailySource, MonthCursor, MonthOutcome, MonthStatus,
};
use crate::cancel::Cancel;
use crate::config::StorageConfig;
use crate::error::{Error, Result};
use crate::layout::{month_dir_name, month_end, month_of};
use crate::reader::PartitionFile;
use crate::storage::object::{CompactionLock, ObjectStorage, OrderedFetch};
use arrow::array::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// The months before `before` that have daily objects (a day prefix at the
/// archive's top level), oldest first.
pub(crate) fn months_with_daily_objects(
    st: &ObjectStorage,
    before: NaiveDate,
) -> Result<Vec<NaiveDate>> {
    let mut months: Vec<NaiveDate> = st
        .listed_days()?
        .into_iter()
        .filter(|d| *d < before)
        .map(month_of)
        .collect();
    months.dedup();
    Ok(months)
}

/// Whether `day`'s month has its month object.
pub(crate) fn is_compacted(st: &ObjectStorage, day: NaiveDate) -> Result<bool> {
    Ok(st.head(&st.month_key(month_of(day)))?.is_some())
}

/// A daily object taken into a month object, as it was when read.
struct Taken {
    key: ObjectPath,
    e_tag: Option<String>,
}

/// A bucket's side of compaction: everything under the archive's one lock.
struct BucketMonths<'a> {
    st: &'a ObjectStorage,
    lock: &'a CompactionLock,
}

impl super::MonthCompactor for BucketMonths<'_> {
    type Taken = Taken;

    fn write_month(
        &self,
        first: NaiveDate,
        storage: &StorageConfig,
        opts: &CompactOptions,
        out: &mut MonthOutcome,
    ) -> Result<Vec<Taken>> {
        write_month(self.st, first, storage, opts, self.lock, out)
    }

    fn removal_refused(&self) -> Option<String> {
        self.lock.lost().then(|| {
            "the month file is complete, but another compactor took the lock over: \
             its daily files are left to it"
                .to_string()
        })
    }

    fn remove(&self, first: NaiveDate, taken: &[Taken]) -> Result<usize> {
        let started = Instant::now();
        let removed = remove_taken(self.st, taken);
        let n = removed.as_ref().map_or(0, |n| *n);
        tracing::debug!(month = %month_dir_name(first), removed = n, seconds = started.elapsed().as_secs_f64(), "daily objects removed");
        removed
    }
}

/// Compacts `months` of the archive in `st` (see the module docs): the lock, then
/// every month object, then one wait of `remove_daily_after`, then the deletions.
pub(crate) fn compact_months(
    st: &ObjectStorage,
    months: &[NaiveDate],
    storage: &StorageConfig,
    opts: &CompactOptions,
    cancel: &Cancel,
) -> Vec<MonthOutcome> {
    let mut outcomes: Vec<MonthOutcome> = months
        .iter()
        .map(|m| {
            let first = month_of(*m);
            MonthOutcome::new(first, st.location(&st.month_key(first)))
        })
        .collect();
    if months.is_empty() {
        return outcomes;
    }
    let lock = match st.lock_compaction(cancel) {
        Ok(l) => l,
        Err(e) => {
            for out in &mut outcomes {
                if cancel.is_cancelled() {
                    out.status = MonthStatus::Cancelled;
                } else {
                    out.status = MonthStatus::Failed;
                    out.error = Some(e.to_string());
                }
            }
            return outcomes;
        }
    };
    let outcomes = super::drive(
        &BucketMonths { st, lock: &lock },
        outcomes,
        storage,
        opts,
        cancel,
    );
    drop(lock);
    outcomes
}

fn object_key(f: &PartitionFile) -> ObjectPath {
    let key = f.object.as_ref().map(|o| o.key.as_str()).unwrap_or("");
    ObjectPath::parse(key).unwrap_or_else(|_| ObjectPath::from(key))
}

/// Writes the month object (steps 2 and 3 of the module docs); returns the daily
/// objects it took in.
fn write_month(
    st: &ObjectStorage,
    first: NaiveDate,
    storage: &StorageConfig,
    opts: &CompactOptions,
    lock: &CompactionLock,
    out: &mut MonthOutcome,
) -> Result<Vec<Taken>> {
    let name = month_dir_name(first);
    let key = st.month_key(first);
    let at = st.location(&key);
    let aborted = st.abort_uploads(&key)?;
    if aborted > 0 {
        tracing::info!(month = %name, aborted, "aborted unfinished uploads of the month file left by an interrupted compaction");
    }
    let started = Instant::now();
    // The month's days that have objects (one listing of the archive's top level),
    // then each of them.
    let days: Vec<NaiveDate> = st
        .listed_days()?
        .into_iter()
        .filter(|d| (first..=month_end(first)).contains(d))
        .collect();
    let dailies = if days.is_empty() {
        vec![]
    } else {
        st.daily_objects(&days)?
    };
    let previous = st.head(&key)?;
    if dailies.is_empty() {
        match &previous {
            Some(meta) => describe(st, meta, &at, out),
            None => out.status = MonthStatus::Empty,
        }
        return Ok(vec![]);
    }
    let previous_keys = previous
        .as_ref()
        .map(|m| month_keys_from(batches(st, m, &at, true)?, first, &at))
        .transpose()?;
    let mut keys = plan_keys(&dailies, previous_keys)?;
    tracing::debug!(month = %name, daily_files = dailies.len(), seconds = started.elapsed().as_secs_f64(), "listed");
    let order: Vec<usize> = keys
        .values()
        .flat_map(|days| days.values().flat_map(|k| k.daily.iter().copied()))
        .collect();
    let fetch = st.fetch_in_order(order.iter().map(|&i| object_key(&dailies[i])).collect());
    let mut source = ObjectDailies {
        st,
        dailies: &dailies,
        position: order.iter().enumerate().map(|(p, &i)| (p, i)).collect(),
        fetch,
        got: HashMap::new(),
    };
    let mut cursor = previous
        .as_ref()
        .map(|m| batches(st, m, &at, false).map(|b| MonthCursor::new(&at, b)))
        .transpose()?;
    // Dropped on any error below (`?`): the upload is aborted, nothing appears.
    let mut upload = st.upload(&key);
    let taken = {
        let mut writer = Batched::new(&mut upload, storage, opts, &name, &at)?;
        let taken = write_partitions(
            &mut keys,
            &mut source,
            cursor.as_mut(),
            &mut writer,
            opts,
            out,
            &at,
        )?;
        let meta = writer.close(&at)?;
        out.row_groups = meta.num_row_groups();
        taken
    };
    drop(source);
    drop(cursor);
    let lost = || {
        Error::Invalid(format!(
            "{}: another compactor took the compaction lock over: not written",
            at.display()
        ))
    };
    if lock.lost() {
        return Err(lost());
    }
    // Asked again once every part is uploaded, just before the request that makes the
    // month visible: parts take their time, and a takeover during them must stop it too.
    let (bytes, parts) = upload.finish_if(|| if lock.lost() { Err(lost()) } else { Ok(()) })?;
    out.bytes = bytes;
    tracing::debug!(month = %name, bytes, parts, seconds = started.elapsed().as_secs_f64(), "month file visible");
    // A retried request may have started a second upload: none may be left.
    let stray = st.abort_uploads(&key).unwrap_or(0);
    if stray > 0 {
        tracing::debug!(month = %name, stray, "aborted stray uploads");
    }
    Ok(taken
        .into_iter()
        .map(|(i, e_tag)| Taken {
            key: object_key(&dailies[i]),
            e_tag,
        })
        .collect())
}

/// The month object `meta` read by range (that version only), in file order: the
/// `api_proxy` and `date` columns (`keys_only`) or all.
fn batches(
    st: &ObjectStorage,
    meta: &object_store::ObjectMeta,
    at: &Path,
    keys_only: bool,
) -> Result<BatchIter> {
    let bad =
        |e: &dyn std::fmt::Display| Error::parquet(at, format!("cannot read the month file: {e}"));
    let builder =
        futures::executor::block_on(ParquetRecordBatchStreamBuilder::new(st.range_reader(meta)))
            .map_err(|e| bad(&e))?;
    let builder = if keys_only {
        let mask = key_columns(builder.parquet_schema(), builder.schema()).map_err(|e| bad(&e))?;
        builder.with_projection(mask).with_batch_size(65_536)
    } else {
        builder.with_batch_size(8192)
    };
    let mut stream = builder.build().map_err(|e| bad(&e))?;
    Ok(Box::new(std::iter::from_fn(move || {
        futures::executor::block_on(stream.next()).map(|r| r.map_err(|e| e.to_string()))
    })))
}

/// Row count, size and row groups of an existing month object, for an outcome.
fn describe(
    st: &ObjectStorage,
    meta: &object_store::ObjectMeta,
    at: &Path,
    out: &mut MonthOutcome,
) {
    out.bytes = meta.size;
    match futures::executor::block_on(ParquetRecordBatchStreamBuilder::new(st.range_reader(meta))) {
        Ok(b) => {
            out.rows = b.metadata().file_metadata().num_rows().max(0) as u64;
            out.row_groups = b.metadata().num_row_groups();
        }
        Err(e) => {
            tracing::debug!(path = %at.display(), error = %e, "cannot read the month file's footer")
        }
    }
}

/// Daily objects fetched ahead in the month file's order; a proxy's objects are
/// held (compressed, as fetched) from its row count until its rows are written.
struct ObjectDailies<'a> {
    st: &'a ObjectStorage,
    dailies: &'a [PartitionFile],
    /// Fetch position → daily index.
    position: HashMap<usize, usize>,
    fetch: OrderedFetch,
    /// Fetched and not yet taken, by daily index: bytes and ETag.
    got: HashMap<usize, (Bytes, Option<String>)>,
}

impl ObjectDailies<'_> {
    fn ensure(&mut self, i: usize) -> Result<()> {
        while !self.got.contains_key(&i) {
            match self.fetch.next() {
                Some((p, Ok(v))) => {
                    let j = self.position[&p];
                    self.got.insert(j, v);
                }
                Some((p, Err(e))) => {
                    let j = self.position[&p];
                    return Err(self.st.error("read", &object_key(&self.dailies[j]), e));
                }
                None => {
                    return Err(Error::Invalid(format!(
                        "internal error: {} was not fetched",
                        self.dailies[i].path.display()
                    )))
                }
            }
        }
        Ok(())
    }
}

impl DailySource for ObjectDailies<'_> {
    type Id = Option<String>;

    fn rows(&mut self, i: usize) -> Result<usize> {
        self.ensure(i)?;
        let bytes = &self.got[&i].0;
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(bytes)
            .map_err(|e| {
                Error::parquet(
                    &self.dailies[i].path,
                    format!("cannot read Parquet footer: {e}"),
                )
            })?;
        Ok(meta.file_metadata().num_rows().max(0) as usize)
    }

    fn take(&mut self, i: usize) -> Result<(RecordBatch, Option<String>)> {
        self.ensure(i)?;
        let (bytes, e_tag) = self.got.remove(&i).expect("ensured");
        let f = &self.dailies[i];
        Ok((super::decode_daily(bytes, f)?, e_tag))
    }
}

/// Deletes the daily objects taken in, each only if still the version read (8 at
/// a time); returns how many were deleted. Every object is tried; the first
/// error is returned.
fn remove_taken(st: &ObjectStorage, taken: &[Taken]) -> Result<usize> {
    let threads = 8.min(taken.len()).max(1);
    let results: Vec<Result<usize>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut removed = 0;
                    let mut first_err = None;
                    for x in taken.iter().skip(t).step_by(threads) {
                        match st.delete_if_same(&x.key, x.e_tag.as_deref()) {
                            Ok(true) => removed += 1,
                            Ok(false) => {}
                            Err(e) => {
                                first_err.get_or_insert(e);
                            }
                        }
                    }
                    match first_err {
                        Some(e) => Err(e),
                        None => Ok(removed),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Invalid("removing daily objects panicked".into()))
                })
            })
            .collect()
    });
    let mut removed = 0;
    for r in results {
        removed += r?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compact::Compact;
    use crate::config::Compression;
    use crate::reader::{Column, ReadSpec, Selection};
    use crate::schema::PartitionBuilder;
    use crate::series::Series;
    use crate::storage::Storage;
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use std::sync::Arc;
    use std::time::Duration;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn cfg() -> StorageConfig {
        StorageConfig {
            output_dir: "s3://b/p".into(),
            compression: Compression::Zstd,
            row_group_size: 1 << 20,
            durable: false,
            s3: Default::default(),
        }
    }

    fn opts() -> CompactOptions {
        CompactOptions {
            remove_daily_after: Duration::ZERO,
            bloom_filter: false,
            row_group_rows: super::super::ROW_GROUP_ROWS,
            replace_partitions: false,
        }
    }

    fn batch(day: &str, proxy: &str, base: f64, metrics: &[&str]) -> RecordBatch {
        let mut b = PartitionBuilder::new();
        let end = d(day)
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
            + 86_400_000;
        for m in metrics.iter().rev() {
            let s = Series {
                labels: [("env".to_string(), "prod".to_string())]
                    .into_iter()
                    .collect(),
                points: (0..50)
                    .map(|i| (end - i * 60_000, base + i as f64))
                    .collect(),
            };
            b.push_series(m, &s, &[]);
        }
        b.finish(proxy, d(day))
    }

    fn keys(mem: &Arc<InMemory>) -> Vec<String> {
        let mem = mem.clone();
        let mut k: Vec<String> = futures::executor::block_on(async move {
            mem.list(None)
                .map(|m| m.unwrap().location.to_string())
                .collect::<Vec<_>>()
                .await
        });
        k.sort();
        k
    }

    fn total(st: &dyn Storage) -> (usize, f64) {
        let spec = Arc::new(ReadSpec {
            want: vec![Column::Value],
            metrics: None,
            batch_rows: 1000,
        });
        let (mut rows, mut sum) = (0, 0.0);
        for f in st.select(&Selection::default()).unwrap() {
            let mut r = st.open(&f, &spec).unwrap();
            while let Some(b) = r.next_batch().unwrap() {
                let v = b.value.unwrap();
                rows += v.len();
                sum += v.values().iter().sum::<f64>();
            }
        }
        (rows, sum)
    }

    #[test]
    fn a_month_in_a_bucket_becomes_the_same_file_as_on_disk() {
        let mem = Arc::new(InMemory::new());
        // Parts of 512 bytes: the month object goes up in several parts.
        let st = ObjectStorage::with_store(mem.clone(), "b", "p").with_part_size(512);
        let dir = std::env::temp_dir().join(format!("promduck-s3compact-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let local = crate::storage::local::LocalStorage::new(&dir);
        for (i, p) in ["b", "a/x", "c"].iter().enumerate() {
            for day in ["2024-02-01", "2024-02-15", "2024-02-29", "2024-03-01"] {
                let b = batch(day, p, i as f64 * 10.0, &["m", "n"]);
                st.write_partition(d(day), p, &b, &cfg()).unwrap();
                local.write_partition(d(day), p, &b, &cfg()).unwrap();
            }
        }
        let before = total(&st);
        assert_eq!(before, total(&local));
        assert_eq!(
            st.months_with_daily_files(d("2024-03-01")).unwrap(),
            vec![d("2024-02-01")]
        );
        assert!(!st.is_compacted(d("2024-02-10")).unwrap());
        let out = st.compact(&[d("2024-02-01")], &cfg(), &opts(), &Cancel::new());
        let o = &out[0];
        assert_eq!(
            (o.status, o.daily_files, o.removed, o.partitions, o.rows),
            (MonthStatus::Compacted, 9, 9, 9, 900),
            "{o:?}"
        );
        assert!(o.bytes > 3 * 512, "several parts: {o:?}");
        assert_eq!(
            o.path,
            std::path::PathBuf::from("s3://b/p/2024-02/2024-02.parquet")
        );
        assert!(st.is_compacted(d("2024-02-10")).unwrap());
        assert_eq!(total(&st), before);
        // Only the month object and March's dailies are left: no lock, no part.
        assert_eq!(
            keys(&mem),
            [
                "p/2024-02/2024-02.parquet",
                "p/2024-03-01/a%2Fx.parquet",
                "p/2024-03-01/b.parquet",
                "p/2024-03-01/c.parquet"
            ]
        );
        // Byte for byte the file compaction writes on disk from the same partitions.
        let on_disk = local.compact(&[d("2024-02-01")], &cfg(), &opts(), &Cancel::new());
        assert_eq!(on_disk[0].rows, 900);
        let disk_bytes = std::fs::read(dir.join("2024-02/2024-02.parquet")).unwrap();
        let m = mem.clone();
        let obj = futures::executor::block_on(async move {
            m.get(&ObjectPath::from("p/2024-02/2024-02.parquet"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        assert_eq!(obj.as_ref(), disk_bytes.as_slice());
        // prom_partitions' expansion through the storage.
        let files = st.select(&Selection::default()).unwrap();
        let month = files.iter().find(|f| f.proxy.is_empty()).unwrap();
        let parts = st.month_partitions(month).unwrap();
        assert_eq!(parts.len(), 9);
        assert_eq!(parts[0], (d("2024-02-01"), "a/x".to_string()));
        // Nothing new: unchanged, described from the object's footer.
        let again = st.compact(&[d("2024-02-01")], &cfg(), &opts(), &Cancel::new());
        assert_eq!(
            (again[0].status, again[0].rows, again[0].row_groups),
            (MonthStatus::Unchanged, 900, 1)
        );
        // Re-collected day, written whole (promduck's daily files are a partition's whole
        // state): `m` only, new values; it wins once compacted again, `n` gone with it.
        let (rows0, sum0) = total(&st);
        st.write_partition(
            d("2024-02-15"),
            "c",
            &batch("2024-02-15", "c", 1000.0, &["m"]),
            &cfg(),
        )
        .unwrap();
        assert_eq!(total(&st), (rows0, sum0), "the month object still wins");
        let o = st.compact(&[d("2024-02-01")], &cfg(), &opts(), &Cancel::new());
        assert_eq!(
            (o[0].status, o[0].daily_files, o[0].removed),
            (MonthStatus::Compacted, 1, 1)
        );
        // c's `m` on 02-15 was 20 + 0..49, now 1000 + 0..49; its `n` (20 + 0..49) is gone.
        assert_eq!(
            total(&st),
            (rows0 - 50, sum0 + 50.0 * 980.0 - (50.0 * 20.0 + 1225.0))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_daily_object_replaced_after_it_was_read_is_kept() {
        let mem = Arc::new(InMemory::new());
        let st = ObjectStorage::with_store(mem.clone(), "b", "");
        st.write_partition(
            d("2024-02-10"),
            "a",
            &batch("2024-02-10", "a", 0.0, &["m"]),
            &cfg(),
        )
        .unwrap();
        let key = ObjectPath::from("2024-02-10/a.parquet");
        let old = st.head(&key).unwrap().unwrap().e_tag;
        st.write_partition(
            d("2024-02-10"),
            "a",
            &batch("2024-02-10", "a", 7.0, &["m"]),
            &cfg(),
        )
        .unwrap();
        assert!(!st.delete_if_same(&key, old.as_deref()).unwrap());
        assert!(st.head(&key).unwrap().is_some());
        let new = st.head(&key).unwrap().unwrap().e_tag;
        assert!(st.delete_if_same(&key, new.as_deref()).unwrap());
        assert!(st.head(&key).unwrap().is_none());
    }

    #[test]
    fn the_lock_is_waited_for_taken_over_when_stale_and_removed() {
        let mem = Arc::new(InMemory::new());
        let st = ObjectStorage::with_store(mem.clone(), "b", "p");
        let lock = st.lock_compaction(&Cancel::new()).unwrap();
        assert_eq!(keys(&mem), ["p/.promduck-compact.lock"]);
        // Held by a live process (this one): a second compactor waits, until cancelled.
        let cancel = Cancel::new();
        let started = Instant::now();
        let canceller = std::thread::spawn({
            let cancel = cancel.clone();
            move || {
                std::thread::sleep(Duration::from_millis(1000));
                cancel.cancel();
            }
        });
        let e = st.lock_compaction(&cancel).err().unwrap();
        canceller.join().unwrap();
        assert!(
            e.to_string().contains("waiting for the compaction lock"),
            "{e}"
        );
        // It waited for the cancel (never took the live holder's lock meanwhile).
        assert!(started.elapsed() >= Duration::from_millis(1000));
        drop(lock);
        assert!(keys(&mem).is_empty(), "released");
        // Left by a process of this machine that is gone: taken over at once.
        let body = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        let dead = serde_json::json!({
            "host": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(),
            "boot_id": body.trim(), "pid": 4_000_000u32, "start": 1u64, "token": "x",
            "acquired": 0u64, "expires": u64::MAX / 2,
        });
        let m = mem.clone();
        futures::executor::block_on(async move {
            m.put(
                &ObjectPath::from("p/.promduck-compact.lock"),
                PutPayload::from(serde_json::to_vec(&dead).unwrap()),
            )
            .await
            .unwrap()
        });
        // At once: without a single wait (a wait would end at once, cancelled).
        let cancelled = Cancel::new();
        cancelled.cancel();
        let lock = st.lock_compaction(&cancelled).unwrap();
        assert!(!lock.lost());
        drop(lock);
        assert!(keys(&mem).is_empty());
    }
}
