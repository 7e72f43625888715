//! The archive in an S3-compatible bucket, through the `object_store` crate.
//!
//! Same layout as on disk, under the URL's prefix: `<prefix>/YYYY-MM-DD/<proxy>.parquet`
//! and compacted months `<prefix>/YYYY-MM/YYYY-MM.parquet`.
//!
//! - **Writes**: a partition is encoded in memory and sent with one PUT; S3 makes
//!   an object visible whole or not at all, so there is no temporary object and an
//!   interrupted write leaves the old object (or none). Requests are retried with
//!   backoff on 5xx (SlowDown included), timeouts and resets by `object_store`.
//! - **Listing**: by prefix with a delimiter, never the whole bucket. Known days
//!   and proxies are not listed at all: a point query is a HEAD of the month file
//!   and a GET of the partition. A compacted month (its month file exists) is read
//!   from its month file alone, as on disk.
//! - **Reads**: a small object (a daily partition) is fetched with one GET and
//!   decoded in memory; a large one (a month file) through the parquet crate's
//!   `ParquetObjectReader`: the footer, then only the projected columns of the
//!   selected row groups, by range.
//! - **Secrets**: the secret key and session token go to the signer only; every
//!   message from the server or the client is scrubbed of them before it becomes
//!   an error (S3's `SignatureDoesNotMatch` body echoes the signed headers).

use super::Storage;
use crate::config::{S3Config, StorageConfig};
use crate::error::{Error, Result};
use crate::layout::{
    day_dir_name, encode_proxy, month_dir_name, month_end, month_of, parse_day_dir,
    parse_month_dir, PARQUET_EXT,
};
use crate::reader::{Layout, PartitionFile, PartitionReader, ReadSpec, Selection};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Objects up to this size are fetched whole with one GET (a daily partition is
/// typically a few KiB to a few MiB); larger ones are read by range.
pub const WHOLE_OBJECT_MAX: u64 = 8 * 1024 * 1024;
/// Requests in flight at once while listing days or checking months.
const LIST_CONCURRENCY: usize = 16;
/// GETs in flight at once while prefetching a scan's objects.
const PREFETCH_CONCURRENCY: usize = 16;
/// Objects fetched ahead of the scan and not yet opened, at most: the memory a
/// prefetch holds is bounded by this many small objects.
const PREFETCH_AHEAD: usize = 64;
/// Selections of known proxies over at most this many (day, proxy) pairs are
/// looked up directly (a GET each, a missing one answers 404) instead of listed.
const DIRECT_LOOKUPS_MAX: usize = 64;

/// The runtime object-store requests run on: two threads of their own, so that
/// the blocking [`Storage`] calls work from any thread (DuckDB's, the collector's
/// blocking pool, even an async task) without nesting runtimes.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("promduck-objstore")
            .enable_all()
            .build()
            .expect("the object-store runtime starts (threads and an I/O driver)")
    })
}

/// Runs `f` on the object-store runtime and waits for it.
fn run<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match futures::executor::block_on(runtime().spawn(f)) {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("object-store task cancelled: {e}"),
    }
}

/// An S3 bucket prefix holding an archive.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    /// Values that must never appear in a message (secret key, session token).
    secrets: Vec<String>,
    /// Objects being fetched ahead of their `open`, by key.
    prefetched: std::sync::Mutex<
        std::collections::HashMap<String, tokio::sync::oneshot::Receiver<Fetched>>,
    >,
    /// The prefetch tasks, stopped when the storage is dropped (a `LIMIT` that
    /// ends a scan early leaves nothing fetching).
    tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

/// A prefetched object (or why not), and its place in the prefetch window, given
/// back when it is opened.
type Fetched = (
    std::result::Result<Bytes, object_store::Error>,
    tokio::sync::OwnedSemaphorePermit,
);

impl Drop for ObjectStorage {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

impl ObjectStorage {
    /// An S3 (or compatible) bucket: the `AWS_*` environment variables first, then
    /// every key `storage.s3` sets over them.
    pub fn s3(bucket: &str, prefix: &str, cfg: &S3Config) -> Result<ObjectStorage> {
        let url = display_url(bucket, prefix);
        // object_store's HTTP client (reqwest 0.13 without a bundled provider) uses the
        // process's rustls provider: ring, as everywhere else in promduck. Installing
        // fails only if one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // Without credentials object_store would ask the instance-metadata endpoint
        // (a link-local address) and fail slowly; say what is missing instead.
        let have_credentials = cfg.access_key_id.is_some()
            || env_set("AWS_ACCESS_KEY_ID")
            || env_set("AWS_WEB_IDENTITY_TOKEN_FILE")
            || env_set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            || env_set("AWS_CONTAINER_CREDENTIALS_FULL_URI");
        if !have_credentials {
            return Err(Error::Invalid(format!(
                "{url}: no S3 credentials: set storage.s3.accessKeyId and secretAccessKey in \
                 the config, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
            )));
        }
        let mut secrets = Vec::new();
        if let Some(id) = &cfg.access_key_id {
            b = b.with_access_key_id(id);
        }
        if let Some(s) = &cfg.secret_access_key {
            b = b.with_secret_access_key(s.expose());
            secrets.push(s.expose().to_string());
        } else if let Ok(s) = std::env::var("AWS_SECRET_ACCESS_KEY") {
            secrets.push(s);
        }
        if let Some(t) = &cfg.session_token {
            b = b.with_token(t.expose());
            secrets.push(t.expose().to_string());
        } else if let Ok(t) = std::env::var("AWS_SESSION_TOKEN") {
            secrets.push(t);
        }
        secrets.retain(|s| s.len() >= 4);
        if let Some(r) = &cfg.region {
            b = b.with_region(r);
        }
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(p) = cfg.path_style {
            b = b.with_virtual_hosted_style_request(!p);
        }
        if let Some(h) = cfg.allow_http {
            b = b.with_allow_http(h);
        }
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 6,
            retry_timeout: Duration::from_secs(120),
        };
        // Set key by key: `with_client_options` would replace what the environment
        // and `allowHttp` put there.
        use object_store::aws::AmazonS3ConfigKey;
        use object_store::ClientConfigKey;
        let store = b
            .with_retry(retry)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "30s")
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            )
            .build()
            .map_err(|e| Error::Invalid(format!("{url}: {}", scrub(&e.to_string(), &secrets))))?;
        Ok(ObjectStorage {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            secrets,
            prefetched: Default::default(),
            tasks: Default::default(),
        })
    }

    /// An archive in any object store (tests use `object_store::memory::InMemory`).
    pub fn with_store(store: Arc<dyn ObjectStore>, bucket: &str, prefix: &str) -> ObjectStorage {
        ObjectStorage {
            store,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            secrets: Vec::new(),
            prefetched: Default::default(),
            tasks: Default::default(),
        }
    }

    /// The key of `rel` (a `/`-separated path inside the archive).
    fn key(&self, rel: &str) -> ObjectPath {
        let full = if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        // Every segment is a layout name or an encoded proxy ([A-Za-z0-9._%-]).
        ObjectPath::parse(&full).unwrap_or_else(|_| ObjectPath::from(full.as_str()))
    }

    fn daily_rel(day: NaiveDate, proxy: &str) -> String {
        format!(
            "{}/{}.{PARQUET_EXT}",
            day_dir_name(day),
            encode_proxy(proxy)
        )
    }

    fn month_rel(first: NaiveDate) -> String {
        let m = month_dir_name(first);
        format!("{m}/{m}.{PARQUET_EXT}")
    }

    /// `s3://bucket/key` of a key, for messages and `PartitionFile::path`.
    fn display(&self, key: &ObjectPath) -> PathBuf {
        PathBuf::from(format!("s3://{}/{}", self.bucket, key))
    }

    /// An error about `key`, with the server's message scrubbed of secrets and the
    /// usual causes said plainly.
    fn err(&self, what: &str, key: &ObjectPath, e: object_store::Error) -> Error {
        let at = self.display(key);
        let hint = match &e {
            object_store::Error::NotFound { .. } => "not found".to_string(),
            object_store::Error::PermissionDenied { .. } => {
                "access denied (403): check the credentials and the bucket's policy".into()
            }
            object_store::Error::Unauthenticated { .. } => {
                "not authenticated: check the access key id and secret".into()
            }
            _ => String::new(),
        };
        let mut text = scrub(&e.to_string(), &self.secrets);
        if text.contains("NoSuchBucket") {
            text = format!("bucket {:?} does not exist ({text})", self.bucket);
        } else if text.contains("SignatureDoesNotMatch") || text.contains("InvalidAccessKeyId") {
            text = format!("the server refused the credentials ({text})");
        }
        let message = if hint.is_empty() {
            format!("cannot {what}: {text}")
        } else {
            format!("cannot {what}: {hint} ({text})")
        };
        Error::Parquet { path: at, message }
    }

    /// Lists `rel/` (one level): sub-prefixes and objects with their sizes.
    async fn list(
        store: Arc<dyn ObjectStore>,
        key: ObjectPath,
    ) -> std::result::Result<(Vec<String>, Vec<(String, u64)>), object_store::Error> {
        let r = store.list_with_delimiter(Some(&key)).await?;
        let dirs = r
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        let files = r
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(|n| (n.to_string(), o.size)))
            .collect();
        Ok((dirs, files))
    }

    /// Whether each month of `months` has its month file (its size if so).
    fn month_files(&self, months: &[NaiveDate]) -> Result<Vec<Option<u64>>> {
        let keys: Vec<ObjectPath> = months
            .iter()
            .map(|m| self.key(&Self::month_rel(*m)))
            .collect();
        let store = self.store.clone();
        let heads = run(async move {
            futures::stream::iter(keys.into_iter().map(|k| {
                let store = store.clone();
                async move {
                    let r = store.head(&k).await;
                    (k, r)
                }
            }))
            .buffered(LIST_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
        });
        heads
            .into_iter()
            .map(|(k, r)| match r {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("look for the month file", &k, e)),
            })
            .collect()
    }

    fn partition_file(
        &self,
        day: NaiveDate,
        proxy: &str,
        rel: &str,
        size: Option<u64>,
        layout: Layout,
    ) -> PartitionFile {
        let key = self.key(rel);
        PartitionFile {
            day,
            proxy: proxy.to_string(),
            path: self.display(&key),
            layout,
            filter: None,
            object: Some(crate::reader::ObjectFile {
                key: key.to_string(),
                size,
            }),
        }
    }

    /// Fetches a whole object; `None` if there is none.
    fn get_whole(&self, key: &ObjectPath) -> Result<Option<Bytes>> {
        let store = self.store.clone();
        let k = key.clone();
        let r = run(async move { get_bytes(&store, &k).await });
        match r {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("read", key, e)),
        }
    }
}

/// A large object read by range, as the parquet crate's async reader asks: the
/// footer with one suffix request (64 KiB, enough for a month file's metadata),
/// then the column chunks of the projected columns and selected row groups
/// (`get_ranges` merges nearby ranges into one request).
#[derive(Debug, Clone)]
struct RangeReader {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    size: u64,
}

fn parquet_io(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl parquet::arrow::async_reader::AsyncFileReader for RangeReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.key, range)
                .await
                .map_err(parquet_io)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.key, &ranges)
                .await
                .map_err(parquet_io)
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
            let size = self.size;
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

async fn get_bytes(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
) -> std::result::Result<Bytes, object_store::Error> {
    store.get(key).await?.bytes().await
}

/// `s3://bucket[/prefix]`.
fn display_url(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    }
}

/// `text` with every secret replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

impl Storage for ObjectStorage {
    fn url(&self) -> String {
        display_url(&self.bucket, &self.prefix)
    }

    fn select(&self, sel: &Selection) -> Result<Vec<PartitionFile>> {
        if let (Some(f), Some(t)) = (sel.from, sel.to) {
            if f > t {
                return Ok(vec![]);
            }
        }
        let mut sel = sel.clone();
        if let Some(ps) = &mut sel.proxies {
            let mut seen = HashSet::new();
            ps.retain(|p| seen.insert(p.clone()));
        }
        // The days and months to look at: the selection's own when it is bounded
        // and small enough to look up directly, else what listing the archive's
        // top level finds.
        let bounded_days: Option<Vec<NaiveDate>> = match (sel.from, sel.to) {
            (Some(f), Some(t)) if (t - f).num_days() < 366 * 5 => {
                Some(f.iter_days().take_while(|d| *d <= t).collect())
            }
            _ => None,
        };
        let (days, listed_months): (Vec<NaiveDate>, Option<HashSet<NaiveDate>>) = match bounded_days
        {
            Some(d) => (d, None),
            None => {
                let store = self.store.clone();
                let root = self.key("");
                let root_key = root.clone();
                let (dirs, _) = run(Self::list(store, root_key))
                    .map_err(|e| self.err("list the archive", &root, e))?;
                let days = dirs
                    .iter()
                    .filter_map(|d| parse_day_dir(d))
                    .filter(|d| sel.day_ok(*d))
                    .collect();
                let months = dirs.iter().filter_map(|d| parse_month_dir(d)).collect();
                (days, Some(months))
            }
        };
        // Months: compacted ones are read from their month file alone.
        let mut months: Vec<NaiveDate> = days.iter().map(|d| month_of(*d)).collect();
        if let Some(listed) = &listed_months {
            months.extend(
                listed
                    .iter()
                    .filter(|m| sel.day_ok_any(**m, month_end(**m))),
            );
            months.retain(|m| listed.contains(m));
        }
        months.sort();
        months.dedup();
        let sizes = self.month_files(&months)?;
        let mut out = Vec::new();
        let mut compacted = HashSet::new();
        for (first, size) in months.iter().zip(sizes) {
            let Some(size) = size else { continue };
            compacted.insert(*first);
            let from = sel.from.filter(|f| f > first);
            let to = sel.to.filter(|t| *t < month_end(*first));
            let mut f = self.partition_file(
                *first,
                "",
                &Self::month_rel(*first),
                Some(size),
                Layout::Month,
            );
            f.filter = (from.is_some() || to.is_some() || sel.proxies.is_some()).then(|| {
                Arc::new(Selection {
                    from,
                    to,
                    proxies: sel.proxies.clone(),
                })
            });
            out.push(f);
        }
        let days: Vec<NaiveDate> = days
            .into_iter()
            .filter(|d| !compacted.contains(&month_of(*d)))
            .collect();
        match &sel.proxies {
            Some(proxies) if days.len() * proxies.len() <= DIRECT_LOOKUPS_MAX => {
                // Known names: no listing; a missing partition is a 404 when read.
                for d in &days {
                    for p in proxies {
                        let mut f = self.partition_file(
                            *d,
                            p,
                            &Self::daily_rel(*d, p),
                            None,
                            Layout::Daily,
                        );
                        if let Some(o) = &mut f.object {
                            o.size = None;
                        }
                        out.push(f);
                    }
                }
            }
            _ => {
                let store = self.store.clone();
                let keys: Vec<(NaiveDate, ObjectPath)> = days
                    .iter()
                    .map(|d| (*d, self.key(&day_dir_name(*d))))
                    .collect();
                let listed = run(async move {
                    futures::stream::iter(keys.into_iter().map(|(d, k)| {
                        let store = store.clone();
                        async move {
                            let r = Self::list(store, k.clone()).await;
                            (d, k, r)
                        }
                    }))
                    .buffered(LIST_CONCURRENCY)
                    .collect::<Vec<_>>()
                    .await
                });
                for (day, key, r) in listed {
                    let (_, files) = r.map_err(|e| self.err("list", &key, e))?;
                    for (name, size) in files {
                        let Some(stem) = name.strip_suffix(&format!(".{PARQUET_EXT}")) else {
                            continue;
                        };
                        // Written by promduck: the stem is the encoded name.
                        let Some(proxy) = crate::layout::decode_proxy(stem) else {
                            continue;
                        };
                        if stem.is_empty() || !sel.proxy_ok(&proxy) {
                            continue;
                        }
                        out.push(self.partition_file(
                            day,
                            &proxy,
                            &format!("{}/{name}", day_dir_name(day)),
                            Some(size),
                            Layout::Daily,
                        ));
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.day, &a.proxy, &a.path).cmp(&(b.day, &b.proxy, &b.path)));
        Ok(out)
    }

    fn open(&self, file: &PartitionFile, spec: &Arc<ReadSpec>) -> Result<PartitionReader> {
        let Some(obj) = &file.object else {
            return PartitionReader::open(file, spec);
        };
        let key =
            ObjectPath::parse(&obj.key).unwrap_or_else(|_| ObjectPath::from(obj.key.as_str()));
        match obj.size {
            Some(size) if size > WHOLE_OBJECT_MAX => {
                let reader = RangeReader {
                    store: self.store.clone(),
                    key,
                    size,
                };
                let reader = parquet::arrow::async_reader::SpawnedReader::new(
                    reader,
                    runtime().handle().clone(),
                );
                PartitionReader::open_async(file, spec, Box::new(reader))
            }
            _ => {
                let waiting = self
                    .prefetched
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(&obj.key));
                let fetched = match waiting.map(futures::executor::block_on) {
                    // Its place in the window is given back once it is decoded here.
                    Some(Ok((r, _permit))) => r,
                    // Not prefetched (or the prefetch was stopped): fetch it now.
                    _ => {
                        let store = self.store.clone();
                        let k = key.clone();
                        run(async move { get_bytes(&store, &k).await })
                    }
                };
                match fetched {
                    Ok(bytes) => PartitionReader::open_bytes(file, spec, bytes),
                    // Looked up directly (not listed) and not there: no such partition.
                    Err(object_store::Error::NotFound { .. }) if obj.size.is_none() => {
                        Ok(PartitionReader::empty(file, spec))
                    }
                    // Listed, then gone (compaction removed it): the caller may read
                    // its month file instead, as on disk.
                    Err(object_store::Error::NotFound { .. }) => Err(Error::io(
                        &file.path,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "not found (removed since it was listed)",
                        ),
                    )),
                    Err(e) => Err(self.err("read", &key, e)),
                }
            }
        }
    }

    fn prefetch(&self, files: &[PartitionFile]) {
        let wanted: Vec<&crate::reader::ObjectFile> = files
            .iter()
            .filter_map(|f| f.object.as_ref())
            .filter(|o| o.size.is_none_or(|s| s <= WHOLE_OBJECT_MAX))
            .collect();
        if wanted.len() < 2 {
            return;
        }
        let Ok(mut map) = self.prefetched.lock() else {
            return;
        };
        let mut jobs = Vec::with_capacity(wanted.len());
        for o in wanted {
            let (tx, rx) = tokio::sync::oneshot::channel();
            map.insert(o.key.clone(), rx);
            let key =
                ObjectPath::parse(&o.key).unwrap_or_else(|_| ObjectPath::from(o.key.as_str()));
            jobs.push((key, tx));
        }
        drop(map);
        let store = self.store.clone();
        let window = Arc::new(tokio::sync::Semaphore::new(PREFETCH_AHEAD));
        let task = runtime().spawn(async move {
            futures::stream::iter(jobs)
                .for_each_concurrent(PREFETCH_CONCURRENCY, |(key, tx)| {
                    let store = store.clone();
                    let window = window.clone();
                    async move {
                        // The semaphore is fair: places go to objects in scan order.
                        let Ok(permit) = window.acquire_owned().await else {
                            return;
                        };
                        if tx.is_closed() {
                            return;
                        }
                        let r = get_bytes(&store, &key).await;
                        let _ = tx.send((r, permit));
                    }
                })
                .await
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task.abort_handle());
        }
    }

    fn month_fallback(&self, file: &PartitionFile) -> Option<PartitionFile> {
        if file.layout != Layout::Daily {
            return None;
        }
        let first = month_of(file.day);
        let size = self.month_files(&[first]).ok()?.pop()??;
        let mut f = self.partition_file(
            first,
            "",
            &Self::month_rel(first),
            Some(size),
            Layout::Month,
        );
        f.filter = Some(Arc::new(Selection {
            from: Some(file.day),
            to: Some(file.day),
            proxies: Some(vec![file.proxy.clone()]),
        }));
        Some(f)
    }

    fn partition_location(&self, day: NaiveDate, proxy: &str) -> PathBuf {
        self.display(&self.key(&Self::daily_rel(day, proxy)))
    }

    fn write_partition(
        &self,
        day: NaiveDate,
        proxy: &str,
        batch: &RecordBatch,
        cfg: &StorageConfig,
    ) -> Result<()> {
        let key = self.key(&Self::daily_rel(day, proxy));
        let at = self.display(&key);
        let bytes = crate::writer::encode_partition(Vec::new(), &at, batch, cfg)?;
        let store = self.store.clone();
        let k = key.clone();
        run(async move { store.put(&k, PutPayload::from(bytes)).await })
            .map(drop)
            .map_err(|e| self.err("write", &key, e))
    }

    fn sync_day(&self, _day: NaiveDate) -> Result<()> {
        Ok(())
    }

    fn read_metric_rows(
        &self,
        day: NaiveDate,
        proxy: &str,
        metrics: &[String],
    ) -> Result<Option<RecordBatch>> {
        let key = self.key(&Self::daily_rel(day, proxy));
        match self.get_whole(&key)? {
            None => Ok(None),
            Some(bytes) => {
                crate::writer::read_metric_rows_from(bytes, &self.display(&key), metrics)
            }
        }
    }

    fn delete_partition(&self, day: NaiveDate, proxy: &str) -> Result<()> {
        let key = self.key(&Self::daily_rel(day, proxy));
        let store = self.store.clone();
        let k = key.clone();
        match run(async move { store.delete(&k).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", &key, e)),
        }
    }

    fn remove_stale(&self, _day: NaiveDate) -> usize {
        0
    }

    fn check_writable(&self) -> Result<()> {
        // Listing the prefix proves the bucket exists and the credentials are
        // accepted; nothing is written (a probe object would be visible to readers).
        let root = self.key("");
        let store = self.store.clone();
        let k = root.clone();
        run(async move { Self::list(store, k).await })
            .map(drop)
            .map_err(|e| self.err("list the archive", &root, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Column;
    use object_store::memory::InMemory;

    fn batch(proxy: &str, day: NaiveDate, rows: usize) -> RecordBatch {
        let mut b = crate::schema::PartitionBuilder::new();
        let s = crate::prometheus::Series {
            labels: [("environment".to_string(), "prod".to_string())]
                .into_iter()
                .collect(),
            points: (0..rows as i64).map(|i| (i * 60_000, i as f64)).collect(),
        };
        b.push_series("m", &s, &[]);
        b.finish(proxy, day)
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn sum_values(st: &ObjectStorage, sel: &Selection) -> (usize, f64) {
        let spec = Arc::new(ReadSpec {
            want: vec![Column::Value, Column::Proxy],
            metrics: None,
            batch_rows: 1000,
        });
        let mut rows = 0;
        let mut total = 0.0;
        for f in st.select(sel).unwrap() {
            let mut r = st.open(&f, &spec).unwrap();
            while let Some(b) = r.next_batch().unwrap() {
                let v = b.value.unwrap();
                rows += v.len();
                total += v.values().iter().sum::<f64>();
            }
        }
        (rows, total)
    }

    #[test]
    fn writes_lists_and_reads_back_in_the_disk_layout() {
        let mem = Arc::new(InMemory::new());
        let st = ObjectStorage::with_store(mem.clone(), "b", "metrics/prod");
        let cfg = StorageConfig::default();
        for day in ["2024-03-01", "2024-03-02"] {
            for p in ["api-1", "a/b"] {
                st.write_partition(d(day), p, &batch(p, d(day), 10), &cfg)
                    .unwrap();
            }
        }
        let keys: Vec<String> = run({
            let mem = mem.clone();
            async move {
                mem.list(None)
                    .map(|m| m.unwrap().location.to_string())
                    .collect::<Vec<_>>()
                    .await
            }
        });
        let mut keys = keys;
        keys.sort();
        assert_eq!(
            keys,
            [
                "metrics/prod/2024-03-01/a%2Fb.parquet",
                "metrics/prod/2024-03-01/api-1.parquet",
                "metrics/prod/2024-03-02/a%2Fb.parquet",
                "metrics/prod/2024-03-02/api-1.parquet"
            ]
        );
        // 0+1+…+9 = 45 per partition.
        assert_eq!(sum_values(&st, &Selection::default()), (40, 180.0));
        let one = Selection {
            from: Some(d("2024-03-02")),
            to: Some(d("2024-03-02")),
            proxies: Some(vec!["a/b".into(), "a/b".into(), "missing".into()]),
        };
        assert_eq!(sum_values(&st, &one), (10, 45.0));
        let files = st.select(&one).unwrap();
        assert_eq!(
            files.len(),
            2,
            "looked up directly, the missing one included"
        );
        let listed = Selection {
            from: Some(d("2024-03-01")),
            to: None,
            proxies: Some(vec!["api-1".into()]),
        };
        assert_eq!(sum_values(&st, &listed), (20, 90.0));
        // Re-writing replaces, never duplicates.
        st.write_partition(
            d("2024-03-01"),
            "api-1",
            &batch("api-1", d("2024-03-01"), 3),
            &cfg,
        )
        .unwrap();
        assert_eq!(sum_values(&st, &Selection::default()), (33, 138.0));
        // The rows of a metric are read back for keeping.
        let kept = st
            .read_metric_rows(d("2024-03-01"), "api-1", &["m".into()])
            .unwrap()
            .unwrap();
        assert_eq!(kept.num_rows(), 3);
        assert!(st
            .read_metric_rows(d("2024-03-09"), "api-1", &["m".into()])
            .unwrap()
            .is_none());
        st.delete_partition(d("2024-03-01"), "api-1").unwrap();
        st.delete_partition(d("2024-03-01"), "api-1").unwrap();
        assert_eq!(sum_values(&st, &Selection::default()), (30, 135.0));
    }

    #[test]
    fn prefetched_scans_read_the_same_rows_and_stop_when_dropped() {
        let mem = Arc::new(InMemory::new());
        let st = ObjectStorage::with_store(mem.clone(), "b", "");
        let cfg = StorageConfig::default();
        let first = d("2024-01-01");
        for i in 0..100u64 {
            let day = first + chrono::Days::new(i);
            st.write_partition(day, "p", &batch("p", day, 5), &cfg)
                .unwrap();
        }
        let spec = Arc::new(ReadSpec {
            want: vec![Column::Value],
            metrics: None,
            batch_rows: 1000,
        });
        let files = st.select(&Selection::default()).unwrap();
        assert_eq!(files.len(), 100);
        st.prefetch(&files);
        assert_eq!(st.prefetched.lock().unwrap().len(), 100);
        let mut rows = 0;
        for f in &files {
            let mut r = st.open(f, &spec).unwrap();
            while let Some(b) = r.next_batch().unwrap() {
                rows += b.value.unwrap().len();
            }
        }
        assert_eq!(rows, 500);
        assert!(st.prefetched.lock().unwrap().is_empty());
        // Stopped early (a LIMIT): dropping the storage stops the prefetch.
        st.prefetch(&files);
        let task = st.tasks.lock().unwrap().last().unwrap().clone();
        let mut r = st.open(&files[0], &spec).unwrap();
        assert!(r.next_batch().unwrap().is_some());
        drop(r);
        drop(st);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !task.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(task.is_finished());
    }

    #[test]
    fn scrubs_secrets() {
        let s = scrub(
            "x-amz-security-token:TOKEN123 and SECRETKEY",
            &["TOKEN123".into(), "SECRETKEY".into()],
        );
        assert_eq!(s, "x-amz-security-token:*** and ***");
    }
}
