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
//!   and proxies are not listed at all: a point query is a GET of the month file's
//!   last MiB (404 unless the month is compacted) and a GET of the partition. A
//!   compacted month (its month file exists) is read from its month file alone, as
//!   on disk; a month file of at most 1 MiB arrives whole with that first GET.
//! - **Reads**: a small object (a daily partition) is fetched with one GET and
//!   decoded in memory; a large one (a month file) through the parquet crate's
//!   async reader: the footer, then only the projected columns of the selected row
//!   groups, by range.
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
/// A month file is looked for with a GET of its last this many bytes rather than a
/// HEAD: a month file no larger (most are) arrives whole with the same one request,
/// so a scan of compacted months costs one request per month; a larger one gives
/// its size and version as a HEAD would, and is then read by range.
const MONTH_PROBE_BYTES: u64 = 1024 * 1024;
/// The footer read of a month file read by range: its last this many bytes, in one
/// request (enough for a month file's metadata), or from what the look-up brought.
const FOOTER_PREFETCH: usize = 64 * 1024;
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

/// Run at the start of each of the object-store runtime's threads, if set before the
/// runtime starts: the DuckDB extension blocks SIGPIPE there (a host such as the
/// DuckDB CLI keeps its default action, which would kill it on a write to a closed
/// connection).
static THREAD_START: OnceLock<fn()> = OnceLock::new();

/// Sets [`THREAD_START`] (once; later calls are ignored).
pub fn set_thread_start_hook(f: fn()) {
    let _ = THREAD_START.set(f);
}

/// The runtime object-store requests run on: two threads of their own, so that
/// the blocking [`Storage`] calls work from any thread (DuckDB's, the collector's
/// blocking pool, even an async task) without nesting runtimes.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("promduck-objstore")
            .on_thread_start(|| {
                if let Some(f) = THREAD_START.get() {
                    f()
                }
            })
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
    /// The version (ETag, version id) of each month file `select` found, by key:
    /// its ranged reads ask for that version only, so a month file replaced by a
    /// compaction while it is read is an error, never a mix of two files.
    pins: std::sync::Mutex<std::collections::HashMap<String, Pin>>,
    /// Month files that arrived whole when `select` looked for them, by key (read
    /// from here by `open`, never fetched again).
    probed: std::sync::Mutex<std::collections::HashMap<String, Bytes>>,
    /// The last [`FOOTER_PREFETCH`] bytes of month files read by range, from the same
    /// look-up, by key: their footer is read from here, not fetched again.
    tails: std::sync::Mutex<std::collections::HashMap<String, Bytes>>,
    /// Signed requests object_store has no call for (S3 only; see [`Signer`]).
    signer: Option<Signer>,
    /// The part size of multipart uploads (see [`MonthUpload`]).
    part_size: usize,
}

/// The version of an object a read asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pin {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

impl Pin {
    fn of(meta: &object_store::ObjectMeta) -> Pin {
        Pin {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        }
    }

    /// Options asking for this version: by version id on a versioned bucket (the
    /// old version stays readable), else by ETag (a replaced object is a 412).
    fn options(&self) -> object_store::GetOptions {
        object_store::GetOptions {
            if_match: self.version.is_none().then(|| self.e_tag.clone()).flatten(),
            version: self.version.clone(),
            ..Default::default()
        }
    }
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
                 the config (in SQL: s3_access_key_id := and s3_secret_access_key :=), or \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
            )));
        }
        // object_store refuses a plain-HTTP endpoint with "builder error" when the
        // request is sent; say where the fix is before anything is asked.
        if let Some(e) = cfg.endpoint.as_deref().filter(|e| {
            e.get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        }) {
            if cfg.allow_http != Some(true) {
                return Err(Error::Invalid(format!(
                    "{url}: the S3 endpoint {e} is plain HTTP, which is refused unless allowed: \
                     set storage.s3.allowHttp: true in the config (in SQL: s3_use_ssl := false), \
                     or use an https:// endpoint"
                )));
            }
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
        let b = b
            .with_http_connector(super::s3_http::SameEndpointConnector)
            .with_retry(retry)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "30s")
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            );
        let signer = Signer::from_builder(&b, bucket);
        let store = b
            .build()
            .map_err(|e| Error::Invalid(format!("{url}: {}", scrub(&e.to_string(), &secrets))))?;
        let store = Arc::new(store);
        let signer = signer.map(|mut s| {
            s.s3 = Some(store.clone());
            s
        });
        Ok(ObjectStorage {
            store,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            secrets,
            prefetched: Default::default(),
            tasks: Default::default(),
            pins: Default::default(),
            probed: Default::default(),
            tails: Default::default(),
            signer,
            part_size: part_bytes(),
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
            pins: Default::default(),
            probed: Default::default(),
            tails: Default::default(),
            signer: None,
            part_size: part_bytes(),
        }
    }

    /// The same archive with uploads in parts of `bytes` (tests: many parts from little data).
    pub fn with_part_size(mut self, bytes: usize) -> ObjectStorage {
        self.part_size = bytes.max(1);
        self
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
        let text = scrub(&e.to_string(), &self.secrets);
        // The causes that make the whole archive unusable, said in one short line (the
        // server's XML body, repeated for every partition of a backfill, says no more).
        let unusable = if text.contains("NoSuchBucket") {
            Some(format!(
                "bucket {:?} does not exist (NoSuchBucket)",
                self.bucket
            ))
        } else {
            ["SignatureDoesNotMatch", "InvalidAccessKeyId"]
                .into_iter()
                .find(|c| text.contains(c))
                .map(|code| format!("the server refused the credentials ({code})"))
        };
        if let Some(why) = unusable {
            return Error::ArchiveUnusable {
                path: PathBuf::from(format!("s3://{}", self.bucket)),
                message: format!("cannot {what}: {why}"),
            };
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

    /// Whether each month of `months` has its month file (its size if so). One GET
    /// of the last [`MONTH_PROBE_BYTES`] each: a month file that arrives whole is kept
    /// for `open`; of a larger one the size, the version and those last bytes (its
    /// footer, read from them without another request).
    fn month_files(&self, months: &[NaiveDate]) -> Result<Vec<Option<u64>>> {
        let keys: Vec<ObjectPath> = months
            .iter()
            .map(|m| self.key(&Self::month_rel(*m)))
            .collect();
        let store = self.store.clone();
        let probes = run(async move {
            futures::stream::iter(keys.into_iter().map(|k| {
                let store = store.clone();
                async move {
                    let r = probe(&store, &k).await;
                    (k, r)
                }
            }))
            .buffered(LIST_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
        });
        probes
            .into_iter()
            .map(|(k, r)| match r {
                Ok((meta, tail)) => {
                    if let Ok(mut pins) = self.pins.lock() {
                        pins.insert(k.to_string(), Pin::of(&meta));
                    }
                    match tail {
                        Some(bytes) if bytes.len() as u64 == meta.size => {
                            if let Ok(mut probed) = self.probed.lock() {
                                probed.insert(k.to_string(), bytes);
                            }
                        }
                        // Read by range: its footer's share of those bytes is kept
                        // (copied, so the rest of the MiB is freed now).
                        Some(bytes) if meta.size > WHOLE_OBJECT_MAX => {
                            let keep = bytes.len().min(FOOTER_PREFETCH);
                            let tail = Bytes::copy_from_slice(&bytes[bytes.len() - keep..]);
                            if let Ok(mut tails) = self.tails.lock() {
                                tails.insert(k.to_string(), tail);
                            }
                        }
                        _ => {}
                    }
                    Ok(Some(meta.size))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("look for the month file", &k, e)),
            })
            .collect()
    }

    /// The daily partitions of `days` inside `sel`: few known names are looked up
    /// by name (no listing; a missing one reads as absent), else each day is listed.
    fn daily_files(&self, days: &[NaiveDate], sel: &Selection) -> Result<Vec<PartitionFile>> {
        match &sel.proxies {
            Some(proxies) if days.len() * proxies.len() <= DIRECT_LOOKUPS_MAX => {
                let mut out = Vec::with_capacity(days.len() * proxies.len());
                for d in days {
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
                Ok(out)
            }
            _ => self.list_daily(days, |p| sel.proxy_ok(p)),
        }
    }

    /// The daily partitions in the folders of `days` whose proxy `proxy_ok` keeps: one
    /// listing per day, [`LIST_CONCURRENCY`] at a time. Objects whose name is not an
    /// encoded proxy name (`.parquet`) are not partitions and are left out.
    fn list_daily(
        &self,
        days: &[NaiveDate],
        proxy_ok: impl Fn(&str) -> bool,
    ) -> Result<Vec<PartitionFile>> {
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
        let mut out = Vec::new();
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
                if stem.is_empty() || !proxy_ok(&proxy) {
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
        Ok(out)
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
}

/// A large object read by range, as the parquet crate's async reader asks: the
/// footer with one suffix request (64 KiB, enough for a month file's metadata),
/// then the column chunks of the projected columns and selected row groups
/// (nearby ranges merged into one request). Every request asks for one version
/// of the object (see [`Pin`]): the one `select` saw, or, if a compaction replaced
/// it before its footer was read, the new one (a later month file holds every row
/// of the month too); replaced after that, reading it is an error.
#[derive(Debug, Clone)]
pub(crate) struct RangeReader {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    /// The size and version read, shared by the clones the parquet crate's
    /// `SpawnedReader` makes for each request (a re-pin while reading the footer
    /// holds for every later request).
    version: Arc<std::sync::Mutex<Version>>,
}

/// The object version a [`RangeReader`] reads, and the bytes of its end already
/// fetched (by `select`'s month probe), which serve the footer and any range inside
/// them without a request.
#[derive(Debug, Clone, Default)]
struct Version {
    size: u64,
    pin: Pin,
    /// `(offset, bytes)`: the object's bytes from `offset` to its end.
    tail: Option<(u64, Bytes)>,
}

impl Version {
    /// `range` from the tail, if the tail holds all of it.
    fn slice(&self, range: &std::ops::Range<u64>) -> Option<Bytes> {
        let (start, bytes) = self.tail.as_ref()?;
        let end = start + bytes.len() as u64;
        (range.start >= *start && range.end <= end && range.start <= range.end)
            .then(|| bytes.slice((range.start - start) as usize..(range.end - start) as usize))
    }
}

fn parquet_io(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl RangeReader {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        key: ObjectPath,
        size: u64,
        pin: Pin,
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

    fn current(&self) -> Version {
        self.version
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    async fn fetch(
        store: Arc<dyn ObjectStore>,
        key: ObjectPath,
        pin: Pin,
        range: std::ops::Range<u64>,
    ) -> std::result::Result<Bytes, object_store::Error> {
        let opts = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            ..pin.options()
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
                                pin: Pin::of(&meta),
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
fn is_precondition(e: &parquet::errors::ParquetError) -> bool {
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

async fn get_bytes(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
) -> std::result::Result<Bytes, object_store::Error> {
    store.get(key).await?.bytes().await
}

/// An object's metadata and its last [`MONTH_PROBE_BYTES`] (all of it if it is no
/// longer): one GET with a suffix range (a suffix longer than the object returns all
/// of it). A server that refuses the range (e.g. 416 for an empty object) is asked
/// with a HEAD instead, and no bytes come back.
async fn probe(
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
        out.extend(self.daily_files(&days, &sel)?);
        out.sort_by(|a, b| (a.day, &a.proxy, &a.path).cmp(&(b.day, &b.proxy, &b.path)));
        Ok(out)
    }

    fn select_pending(&self, sel: &Selection) -> Result<Vec<PartitionFile>> {
        let (Some(from), Some(to)) = (sel.from, sel.to) else {
            return Err(Error::Invalid(
                "daily partitions are looked up for a bounded range of days".into(),
            ));
        };
        let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
        self.daily_files(&days, sel)
    }

    fn open(&self, file: &PartitionFile, spec: &Arc<ReadSpec>) -> Result<PartitionReader> {
        let Some(obj) = &file.object else {
            // Only this storage's own listings make the files it opens: never a local path.
            return Err(Error::Invalid(format!(
                "{}: not an object of {}",
                file.path.display(),
                self.url()
            )));
        };
        let key =
            ObjectPath::parse(&obj.key).unwrap_or_else(|_| ObjectPath::from(obj.key.as_str()));
        match obj.size {
            Some(size) if size > WHOLE_OBJECT_MAX => {
                let pin = self
                    .pins
                    .lock()
                    .ok()
                    .and_then(|p| p.get(&obj.key).cloned())
                    .unwrap_or_default();
                // Taken, not cloned: held only until the month is opened.
                let tail = self.tails.lock().ok().and_then(|mut t| t.remove(&obj.key));
                let mut reader = RangeReader::new(self.store.clone(), key, size, pin);
                if let Some(tail) = tail {
                    reader = reader.with_tail(tail);
                }
                let reader = parquet::arrow::async_reader::SpawnedReader::new(
                    reader,
                    runtime().handle().clone(),
                );
                PartitionReader::open_async(file, spec, Box::new(reader))
            }
            _ => {
                let probed = self
                    .probed
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&obj.key).cloned());
                if let Some(bytes) = probed {
                    return PartitionReader::open_bytes(file, spec, bytes);
                }
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
        let probed: HashSet<String> = self
            .probed
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let wanted: Vec<&crate::reader::ObjectFile> = files
            .iter()
            .filter_map(|f| f.object.as_ref())
            .filter(|o| o.size.is_none_or(|s| s <= WHOLE_OBJECT_MAX))
            .filter(|o| !probed.contains(&o.key))
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
    fn months_with_daily_files(&self, before: NaiveDate) -> Result<Vec<NaiveDate>> {
        crate::compact::s3::months_with_daily_objects(self, before)
    }

    fn is_compacted(&self, day: NaiveDate) -> Result<bool> {
        crate::compact::s3::is_compacted(self, day)
    }

    fn compact(
        &self,
        months: &[NaiveDate],
        cfg: &StorageConfig,
        opts: &crate::compact::CompactOptions,
        cancelled: &dyn Fn() -> bool,
    ) -> Vec<crate::compact::MonthOutcome> {
        crate::compact::s3::compact_months(self, months, cfg, opts, cancelled)
    }
}

// ---------------------------------------------------------------------------
// What compaction needs from a bucket (see `compact.rs` and `compact/s3.rs`).

/// Requests object_store has no call for, signed by object_store's own SigV4
/// signer ([`object_store::aws::AwsAuthorizer`]) with the store's credentials and
/// sent by its HTTP client: listing the unfinished multipart uploads of a key
/// (a compaction killed mid-upload leaves one, invisible but billed, which the
/// next one aborts) and a DELETE that happens only while the object is still the
/// version compaction read (`If-Match`). S3 stores only; the in-memory store of
/// the unit tests has none.
#[derive(Clone)]
struct Signer {
    s3: Option<Arc<object_store::aws::AmazonS3>>,
    http: object_store::client::HttpClient,
    /// `https://host/bucket` (path style) or `https://bucket.host`, as object_store builds it.
    bucket_endpoint: String,
    region: String,
}

impl Signer {
    fn from_builder(b: &AmazonS3Builder, bucket: &str) -> Option<Signer> {
        use object_store::aws::AmazonS3ConfigKey as K;
        use object_store::client::HttpConnector;
        let region = b
            .get_config_value(&K::Region)
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = b
            .get_config_value(&K::S3Endpoint)
            .or_else(|| b.get_config_value(&K::Endpoint));
        let virtual_hosted =
            b.get_config_value(&K::VirtualHostedStyleRequest).as_deref() == Some("true");
        let bucket_endpoint = match (endpoint, virtual_hosted) {
            (Some(e), true) => e,
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let allow_http = b
            .get_config_value(&K::Client(object_store::ClientConfigKey::AllowHttp))
            .as_deref()
            == Some("true");
        let options = object_store::ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(Duration::from_secs(30))
            .with_connect_timeout(Duration::from_secs(5));
        let http = super::s3_http::SameEndpointConnector
            .connect(&options)
            .ok()?;
        Some(Signer {
            s3: None,
            http,
            bucket_endpoint,
            region,
        })
    }

    /// Sends a signed request for `key` (the bucket itself when empty), retried on
    /// 5xx and transport errors (4 attempts, 100 ms doubling); returns the status
    /// and body.
    async fn send(
        &self,
        method: &'static str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&'static str, String)],
    ) -> std::result::Result<(u16, Bytes), String> {
        use object_store::client::{HttpRequest, HttpRequestBody};
        let s3 = self.s3.as_ref().ok_or("no S3 client")?;
        let mut url = format!("{}/{}", self.bucket_endpoint, uri_encode(key, true));
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&uri_encode(k, false));
            url.push('=');
            url.push_str(&uri_encode(v, false));
        }
        let mut wait = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let credential = s3
                .credentials()
                .get_credential()
                .await
                .map_err(|e| e.to_string())?;
            let mut req = HttpRequest::new(HttpRequestBody::empty());
            *req.method_mut() = method.parse().map_err(|_| "bad method")?;
            *req.uri_mut() = url.parse().map_err(|e| format!("{url}: {e}"))?;
            for (name, value) in headers {
                let v = object_store::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                req.headers_mut().insert(*name, v);
            }
            object_store::aws::AwsAuthorizer::new(&credential, "s3", &self.region)
                .try_authorize(&mut req, None)
                .map_err(|e| e.to_string())?;
            let outcome = match self.http.execute(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.into_body().bytes().await {
                        // 5xx other than these (501 NotImplemented…) is an answer, not a hiccup.
                        Ok(body) if !matches!(status, 500 | 502 | 503 | 504) => {
                            return Ok((status, body))
                        }
                        Ok(body) => format!("{status}: {}", String::from_utf8_lossy(&body)),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            if attempt >= 4 {
                return Err(outcome);
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }

    /// The upload ids of every unfinished multipart upload of exactly `key`;
    /// `None` when the server cannot list them (501 NotImplemented).
    async fn list_uploads(&self, key: &str) -> std::result::Result<Option<Vec<String>>, String> {
        let mut ids = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        for _ in 0..100 {
            let mut query = vec![("uploads", ""), ("prefix", key)];
            if !key_marker.is_empty() {
                query.push(("key-marker", &key_marker));
                query.push(("upload-id-marker", &id_marker));
            }
            let (status, body) = self.send("GET", "", &query, &[]).await?;
            let text = String::from_utf8_lossy(&body);
            if status == 501 {
                return Ok(None);
            }
            if status != 200 {
                return Err(format!("{status}: {text}"));
            }
            for upload in text.split("<Upload>").skip(1) {
                if let (Some(k), Some(id)) =
                    (xml_value(upload, "Key"), xml_value(upload, "UploadId"))
                {
                    if k == key {
                        ids.push(id);
                    }
                }
            }
            if xml_value(&text, "IsTruncated").as_deref() != Some("true") {
                break;
            }
            key_marker = xml_value(&text, "NextKeyMarker").unwrap_or_default();
            id_marker = xml_value(&text, "NextUploadIdMarker").unwrap_or_default();
            if key_marker.is_empty() {
                break;
            }
        }
        Ok(Some(ids))
    }
}

/// `text` percent-encoded as S3 wants it: unreserved characters kept (and `/` in a path).
fn uri_encode(text: &str, path: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (path && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the first `<tag>…</tag>` in `xml`, entities decoded.
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Objects fetched whole in a given order, up to [`FETCH_AHEAD`] ahead of the
/// consumer ([`PREFETCH_CONCURRENCY`] requests in flight); stopped when dropped.
pub(crate) struct OrderedFetch {
    rx: tokio::sync::mpsc::Receiver<(usize, Fetch)>,
    task: tokio::task::AbortHandle,
}

/// A fetched object: its bytes and the version they are (ETag), or why not.
pub(crate) type Fetch = std::result::Result<(Bytes, Option<String>), object_store::Error>;

/// Objects fetched and not yet taken by compaction, at most.
const FETCH_AHEAD: usize = 64;

impl OrderedFetch {
    /// The next object, in order, with its position; `None` once all were given.
    pub(crate) fn next(&mut self) -> Option<(usize, Fetch)> {
        futures::executor::block_on(self.rx.recv())
    }
}

impl Drop for OrderedFetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The whole month file being written to a bucket: a `Write` sink for the
/// Parquet writer. Bytes are buffered up to a part's size; the first full part
/// starts a multipart upload (invisible until completed), parts are sent as
/// they fill (at most [`PARTS_IN_FLIGHT`] at once), and [`MonthUpload::finish`]
/// completes it, which makes the object appear whole at once. A file smaller
/// than one part is sent with one PUT, just as atomic. Dropped unfinished, or
/// on [`MonthUpload::abort`], the upload is aborted.
pub(crate) struct MonthUpload {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    at: PathBuf,
    secrets: Vec<String>,
    part_size: usize,
    buf: Vec<u8>,
    upload: Option<Box<dyn object_store::MultipartUpload>>,
    in_flight: std::collections::VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
    parts: usize,
    bytes: u64,
}

/// Parts being uploaded at once: the memory of an upload is about
/// `(PARTS_IN_FLIGHT + 1) × part size`.
const PARTS_IN_FLIGHT: usize = 2;
/// A part's size: S3's minimum is 5 MiB (`PROMDUCK_S3_PART_BYTES` overrides it,
/// for servers and tests that accept smaller parts).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

fn part_bytes() -> usize {
    std::env::var("PROMDUCK_S3_PART_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n >= 1024)
        .unwrap_or(PART_BYTES)
}

impl MonthUpload {
    fn io_err(&self, what: &str, e: impl std::fmt::Display) -> std::io::Error {
        std::io::Error::other(format!(
            "{}: cannot {what}: {}",
            self.at.display(),
            scrub(&e.to_string(), &self.secrets)
        ))
    }

    /// Sends the buffered bytes as the next part (starting the upload first).
    fn send_part(&mut self) -> std::io::Result<()> {
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

    fn wait_one(&mut self) -> std::io::Result<()> {
        let Some(h) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match futures::executor::block_on(h) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_err("upload a part", e)),
            Err(e) => Err(self.io_err("upload a part", e)),
        }
    }

    /// Makes the object visible, whole; returns its size and the parts it took (0: one PUT).
    pub(crate) fn finish(mut self) -> Result<(u64, usize)> {
        let r = self.finish_inner();
        if r.is_err() {
            self.abort();
        }
        r.map_err(|e| Error::Parquet {
            path: self.at.clone(),
            message: e.to_string(),
        })
    }

    fn finish_inner(&mut self) -> std::io::Result<(u64, usize)> {
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

/// Who holds a compaction lock, as written in the lock object.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
struct LockBody {
    host: String,
    boot_id: String,
    pid: u32,
    /// The process's start time (clock ticks since boot): a reused pid is another process.
    start: u64,
    /// Unique per acquisition.
    token: String,
    /// Seconds since the Unix epoch, by the holder's clock.
    acquired: u64,
    expires: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A process's start time in clock ticks since boot, and whether it is alive (not
/// a zombie); `None` when there is no such process.
fn process_start(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state != "Z" && *state != "X"))
}

/// How long a lock lives without a heartbeat: a holder refreshes it every third
/// of this; another host takes it over once it has expired
/// (`PROMDUCK_COMPACT_LOCK_TTL`, seconds, overrides it).
pub const LOCK_TTL: Duration = Duration::from_secs(120);

fn lock_ttl() -> Duration {
    std::env::var("PROMDUCK_COMPACT_LOCK_TTL")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s >= 1.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(LOCK_TTL)
}

impl LockBody {
    fn mine(token: &str, ttl: Duration) -> LockBody {
        let pid = std::process::id();
        let now = unix_now();
        LockBody {
            host: read_trimmed("/proc/sys/kernel/hostname"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid,
            start: process_start(pid).map(|s| s.0).unwrap_or(0),
            token: token.to_string(),
            acquired: now,
            expires: now + ttl.as_secs().max(1),
        }
    }

    /// Whether the lock can be taken over: expired, or held by a process of this
    /// machine that is gone.
    fn stale(&self) -> bool {
        if unix_now() > self.expires {
            return true;
        }
        let here = LockBody::mine("", Duration::ZERO);
        if self.host.is_empty() || self.boot_id.is_empty() {
            return false;
        }
        if self.host != here.host || self.boot_id != here.boot_id {
            return false;
        }
        match process_start(self.pid) {
            Some((start, alive)) => !alive || start != self.start,
            None => true,
        }
    }

    fn describe(&self) -> String {
        format!("pid {} on {}", self.pid, self.host)
    }
}

/// The compaction lock of an archive in a bucket: the object
/// `<prefix>/.promduck-compact.lock`, created with a conditional PUT
/// (`If-None-Match: *`, so two compactors never both create it), refreshed by a
/// heartbeat with `If-Match` on its ETag, and deleted (if still ours) when
/// dropped. A stale one (expired, or its holder on this machine gone) is taken
/// over with `If-Match` on the stale object's ETag. A holder whose refresh finds
/// the lock taken over marks it lost: compaction then stops before making
/// anything visible or deleting anything.
pub(crate) struct CompactionLock {
    store: Arc<dyn ObjectStore>,
    signer: Option<Signer>,
    secrets: Vec<String>,
    key: ObjectPath,
    state: Arc<LockState>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

struct LockState {
    e_tag: std::sync::Mutex<Option<String>>,
    lost: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
}

impl CompactionLock {
    /// Whether another compactor took the lock over (this one must stop).
    pub(crate) fn lost(&self) -> bool {
        self.state.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CompactionLock {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if self.lost() {
            return;
        }
        let e_tag = self.state.e_tag.lock().ok().and_then(|e| e.clone());
        let (store, key, signer) = (self.store.clone(), self.key.clone(), self.signer.clone());
        let r = run(async move {
            // Deleted only if still ours (its ETag): with `If-Match` where the
            // store takes it, else after a HEAD (a window of one request, harmless:
            // the lock was alive until now).
            if let (Some(signer), Some(tag)) = (signer, e_tag.clone()) {
                return match signer
                    .send("DELETE", key.as_ref(), &[], &[("if-match", tag)])
                    .await
                {
                    Ok((200 | 204 | 404 | 412, _)) => Ok(()),
                    Ok((status, body)) => {
                        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
                    }
                    Err(e) => Err(e),
                };
            }
            match store.head(&key).await {
                Ok(m) if m.e_tag == e_tag => store.delete(&key).await.map_err(|e| e.to_string()),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        });
        if let Err(e) = r {
            tracing::warn!(key = %self.key, error = %scrub(&e, &self.secrets), "cannot remove the compaction lock; it expires by itself");
        }
    }
}

impl ObjectStorage {
    /// An error about `key` (the server's message scrubbed of secrets).
    pub(crate) fn error(&self, what: &str, key: &ObjectPath, e: object_store::Error) -> Error {
        self.err(what, key, e)
    }

    /// The key of a month's file.
    pub(crate) fn month_key(&self, first: NaiveDate) -> ObjectPath {
        self.key(&Self::month_rel(first))
    }

    /// `s3://bucket/key`.
    pub(crate) fn location(&self, key: &ObjectPath) -> PathBuf {
        self.display(key)
    }

    /// The days that have a prefix (some object) at the archive's top level.
    pub(crate) fn listed_days(&self) -> Result<Vec<NaiveDate>> {
        let root = self.key("");
        let (store, k) = (self.store.clone(), root.clone());
        let (dirs, _) =
            run(Self::list(store, k)).map_err(|e| self.err("list the archive", &root, e))?;
        let mut days: Vec<NaiveDate> = dirs.iter().filter_map(|d| parse_day_dir(d)).collect();
        days.sort();
        Ok(days)
    }

    /// The daily partitions of `days` (listed, with their sizes), sorted by day then proxy.
    pub(crate) fn daily_objects(&self, days: &[NaiveDate]) -> Result<Vec<PartitionFile>> {
        let mut out = self.list_daily(days, |_| true)?;
        out.sort_by(|a, b| (a.day, &a.proxy).cmp(&(b.day, &b.proxy)));
        Ok(out)
    }

    /// The object at `key` (size, ETag, version), or `None`.
    pub(crate) fn head(&self, key: &ObjectPath) -> Result<Option<object_store::ObjectMeta>> {
        let (store, k) = (self.store.clone(), key.clone());
        match run(async move { store.head(&k).await }) {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("look for", key, e)),
        }
    }

    /// Fetches `keys` whole, in their order, a bounded number ahead.
    pub(crate) fn fetch_in_order(&self, keys: Vec<ObjectPath>) -> OrderedFetch {
        let (tx, rx) = tokio::sync::mpsc::channel(FETCH_AHEAD);
        let store = self.store.clone();
        let task = runtime().spawn(async move {
            let mut fetches = futures::stream::iter(keys.into_iter().enumerate().map(|(i, k)| {
                let store = store.clone();
                async move {
                    let r: Fetch = async {
                        let got = store.get(&k).await?;
                        let e_tag = got.meta.e_tag.clone();
                        Ok((got.bytes().await?, e_tag))
                    }
                    .await;
                    (i, r)
                }
            }))
            .buffered(PREFETCH_CONCURRENCY);
            while let Some(item) = fetches.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        OrderedFetch {
            rx,
            task: task.abort_handle(),
        }
    }

    /// A reader of `meta`'s object by range, every request for that version only.
    pub(crate) fn range_reader(
        &self,
        meta: &object_store::ObjectMeta,
    ) -> parquet::arrow::async_reader::SpawnedReader<RangeReader> {
        let reader = RangeReader::new(
            self.store.clone(),
            meta.location.clone(),
            meta.size,
            Pin::of(meta),
        );
        parquet::arrow::async_reader::SpawnedReader::new(reader, runtime().handle().clone())
    }

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
            run(async move { signer.list_uploads(&k).await }).map_err(|e| Error::Parquet {
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

    /// Deletes `key` only if it is still the version `e_tag` (a partition
    /// re-collected since compaction read it is kept). S3: one DELETE with
    /// `If-Match`; elsewhere a HEAD first. Returns whether it was deleted.
    pub(crate) fn delete_if_same(&self, key: &ObjectPath, e_tag: Option<&str>) -> Result<bool> {
        let Some(e_tag) = e_tag else {
            return Ok(false);
        };
        if let Some(signer) = &self.signer {
            let signer = signer.clone();
            let (k, tag) = (key.to_string(), e_tag.to_string());
            let r = run(async move { signer.send("DELETE", &k, &[], &[("if-match", tag)]).await });
            return match r {
                Ok((204 | 200, _)) => Ok(true),
                // 412: replaced since it was read; 404: gone already.
                Ok((412 | 404, _)) => Ok(false),
                Ok((status, body)) => Err(Error::Parquet {
                    path: self.display(key),
                    message: format!(
                        "cannot delete: {status} {}",
                        scrub(&String::from_utf8_lossy(&body), &self.secrets)
                    ),
                }),
                Err(e) => Err(Error::Parquet {
                    path: self.display(key),
                    message: format!("cannot delete: {}", scrub(&e, &self.secrets)),
                }),
            };
        }
        match self.head(key)? {
            Some(m) if m.e_tag.as_deref() == Some(e_tag) => {
                let (store, k) = (self.store.clone(), key.clone());
                match run(async move { store.delete(&k).await }) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
                    Err(e) => Err(self.err("delete", key, e)),
                }
            }
            _ => Ok(false),
        }
    }

    /// Takes the archive's compaction lock (see [`CompactionLock`]), waiting for
    /// a live holder; `cancelled` is asked while waiting.
    pub(crate) fn lock_compaction(&self, cancelled: &dyn Fn() -> bool) -> Result<CompactionLock> {
        use object_store::{PutMode, PutOptions, UpdateVersion};
        let key = self.key(".promduck-compact.lock");
        let ttl = lock_ttl();
        let token = format!("{:016x}", {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            h.finish()
        });
        let mut said = false;
        loop {
            let body = serde_json::to_vec(&LockBody::mine(&token, ttl)).unwrap_or_default();
            let (store, k, b) = (self.store.clone(), key.clone(), body.clone());
            let created = run(async move {
                store
                    .put_opts(&k, PutPayload::from(b), PutOptions::from(PutMode::Create))
                    .await
            });
            let e_tag = match created {
                Ok(r) => r.e_tag,
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let (store, k) = (self.store.clone(), key.clone());
                    let held = run(async move {
                        let got = store.get(&k).await?;
                        let meta = got.meta.clone();
                        Ok::<_, object_store::Error>((got.bytes().await?, meta))
                    });
                    let (bytes, meta) = match held {
                        Ok(x) => x,
                        // Released meanwhile: try again at once.
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(self.err("read the compaction lock", &key, e)),
                    };
                    let holder = serde_json::from_slice::<LockBody>(&bytes).ok();
                    let stale = match &holder {
                        Some(h) => h.stale(),
                        // Not ours to read: stale once it is older than a TTL.
                        None => (crate::clock::system_now() - meta.last_modified)
                            .to_std()
                            .is_ok_and(|age| age > ttl),
                    };
                    if !stale {
                        if !said {
                            tracing::info!(lock = %self.display(&key).display(), holder = %holder.as_ref().map(LockBody::describe).unwrap_or_default(), "another compaction of this archive is running: waiting for it");
                            said = true;
                        }
                        if cancelled() {
                            return Err(Error::Invalid(format!(
                                "stopped while waiting for the compaction lock {}",
                                self.display(&key).display()
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                    let (store, k, b) = (self.store.clone(), key.clone(), body.clone());
                    let update = UpdateVersion {
                        e_tag: meta.e_tag.clone(),
                        version: None,
                    };
                    let taken = run(async move {
                        store
                            .put_opts(
                                &k,
                                PutPayload::from(b),
                                PutOptions::from(PutMode::Update(update)),
                            )
                            .await
                    });
                    match taken {
                        Ok(r) => {
                            tracing::warn!(lock = %self.display(&key).display(), holder = %holder.as_ref().map(LockBody::describe).unwrap_or_default(), "took over a stale compaction lock (its holder stopped)");
                            r.e_tag
                        }
                        Err(object_store::Error::Precondition { .. })
                        | Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(self.err("take over the compaction lock", &key, e)),
                    }
                }
                Err(e) => return Err(self.err("create the compaction lock", &key, e)),
            };
            let state = Arc::new(LockState {
                e_tag: std::sync::Mutex::new(e_tag),
                lost: Default::default(),
                stop: Default::default(),
            });
            let heartbeat = {
                let (state, store, k, token, secrets) = (
                    state.clone(),
                    self.store.clone(),
                    key.clone(),
                    token.clone(),
                    self.secrets.clone(),
                );
                std::thread::Builder::new()
                    .name("promduck-lock".into())
                    .spawn(move || heartbeat(state, store, k, token, ttl, secrets))
                    .ok()
            };
            return Ok(CompactionLock {
                store: self.store.clone(),
                signer: self.signer.clone(),
                secrets: self.secrets.clone(),
                key,
                state,
                heartbeat,
            });
        }
    }
}

/// Refreshes a held lock every third of its TTL until stopped or lost.
fn heartbeat(
    state: Arc<LockState>,
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    token: String,
    ttl: Duration,
    secrets: Vec<String>,
) {
    use object_store::{PutMode, PutOptions, UpdateVersion};
    use std::sync::atomic::Ordering;
    let every = ttl / 3;
    let mut last = std::time::Instant::now();
    while !state.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(every));
        if last.elapsed() < every {
            continue;
        }
        last = std::time::Instant::now();
        let e_tag = state.e_tag.lock().ok().and_then(|e| e.clone());
        let body = serde_json::to_vec(&LockBody::mine(&token, ttl)).unwrap_or_default();
        let (s, k) = (store.clone(), key.clone());
        let update = UpdateVersion {
            e_tag,
            version: None,
        };
        let r = run(async move {
            s.put_opts(
                &k,
                PutPayload::from(body),
                PutOptions::from(PutMode::Update(update)),
            )
            .await
        });
        match r {
            Ok(r) => {
                if let Ok(mut e) = state.e_tag.lock() {
                    *e = r.e_tag;
                }
            }
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => {
                // The flag first: once the log says so, compaction has stopped.
                state.lost.store(true, Ordering::SeqCst);
                tracing::error!(lock = %key, "the compaction lock was taken over by another compactor: stopping");
                return;
            }
            Err(e) => {
                tracing::warn!(lock = %key, error = %scrub(&e.to_string(), &secrets), "cannot refresh the compaction lock; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Column;
    use object_store::memory::InMemory;
    use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

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

    /// Every row of the month file `reader` reads, through parquet's async reader.
    fn rows_of(reader: RangeReader) -> std::result::Result<usize, String> {
        let reader =
            parquet::arrow::async_reader::SpawnedReader::new(reader, runtime().handle().clone());
        let mut stream = futures::executor::block_on(ParquetRecordBatchStreamBuilder::new(reader))
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        while let Some(b) = futures::executor::block_on(stream.next()) {
            n += b.map_err(|e| e.to_string())?.num_rows();
        }
        Ok(n)
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
            .read_metric_rows(d("2024-03-01"), "api-1", Some(&["m".into()]))
            .unwrap()
            .unwrap();
        assert_eq!(kept.num_rows(), 3);
        assert!(st
            .read_metric_rows(d("2024-03-09"), "api-1", Some(&["m".into()]))
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
    fn ranged_reads_ask_for_one_version_of_a_month_file() {
        let mem = Arc::new(InMemory::new());
        let store: Arc<dyn ObjectStore> = mem.clone();
        let key = ObjectPath::from("2024-02/2024-02.parquet");
        let cfg = StorageConfig::default();
        let encode = |rows: usize| {
            let b = batch("p", d("2024-02-01"), rows);
            Bytes::from(
                crate::writer::encode_partition(Vec::new(), std::path::Path::new("x"), &b, &cfg)
                    .unwrap(),
            )
        };
        let put = |bytes: Bytes| {
            let (s, k) = (store.clone(), key.clone());
            run(async move { s.put(&k, PutPayload::from(bytes)).await.unwrap() });
        };
        let head = || {
            let (s, k) = (store.clone(), key.clone());
            run(async move { s.head(&k).await.unwrap() })
        };
        put(encode(10));
        let seen = head();
        // Replaced before its footer was read: the new version is read, whole.
        put(encode(20));
        let r = RangeReader::new(store.clone(), key.clone(), seen.size, Pin::of(&seen));
        assert_eq!(rows_of(r), Ok(20));
        // Replaced after its footer was read: an error, never rows of two files.
        let seen = head();
        let reader = parquet::arrow::async_reader::SpawnedReader::new(
            RangeReader::new(store.clone(), key.clone(), seen.size, Pin::of(&seen)),
            runtime().handle().clone(),
        );
        let mut stream = futures::executor::block_on(ParquetRecordBatchStreamBuilder::new(reader))
            .unwrap()
            .build()
            .unwrap();
        put(encode(30));
        let r = futures::executor::block_on(stream.next()).unwrap();
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("Precondition") || e.contains("precondition"),
            "{e}"
        );
    }

    #[test]
    fn a_month_probe_brings_a_small_object_whole_and_the_last_mib_of_a_large_one() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let put = |k: &str, bytes: Vec<u8>| {
            let (s, k) = (store.clone(), ObjectPath::from(k));
            run(async move { s.put(&k, PutPayload::from(bytes)).await.unwrap() });
        };
        let probe_of = |k: &str| {
            let (s, k) = (store.clone(), ObjectPath::from(k));
            run(async move { probe(&s, &k).await })
        };
        let small: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        put("small", small.clone());
        let (meta, tail) = probe_of("small").unwrap();
        assert_eq!(meta.size, 1000);
        assert_eq!(tail.as_deref(), Some(small.as_slice()));
        // Exactly the probe's length: still whole.
        put("edge", vec![7; MONTH_PROBE_BYTES as usize]);
        let (meta, tail) = probe_of("edge").unwrap();
        assert_eq!(meta.size, MONTH_PROBE_BYTES);
        assert_eq!(tail.map(|b| b.len() as u64), Some(MONTH_PROBE_BYTES));
        // Larger: its size, version and last MiB (which serve its footer later).
        let large: Vec<u8> = (0..MONTH_PROBE_BYTES as usize + 10)
            .map(|i| (i % 253) as u8)
            .collect();
        put("large", large.clone());
        let (meta, tail) = probe_of("large").unwrap();
        assert_eq!(meta.size, MONTH_PROBE_BYTES + 10);
        assert!(meta.e_tag.is_some());
        assert_eq!(tail.as_deref(), Some(&large[10..]));
        // Missing: NotFound, as a HEAD would say.
        assert!(matches!(
            probe_of("missing"),
            Err(object_store::Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_tail_at_hand_serves_the_footer_and_the_ranges_inside_it() {
        use parquet::arrow::async_reader::AsyncFileReader;
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = ObjectPath::from("2024-02/2024-02.parquet");
        let cfg = StorageConfig::default();
        let b = batch("p", d("2024-02-01"), 50_000);
        let bytes = Bytes::from(
            crate::writer::encode_partition(Vec::new(), std::path::Path::new("x"), &b, &cfg)
                .unwrap(),
        );
        let size = bytes.len() as u64;
        assert!(size > 2 * 64 * 1024, "{size}");
        let reader = |tail: Bytes| {
            RangeReader::new(store.clone(), key.clone(), size, Pin::default()).with_tail(tail)
        };
        // The store is empty: whatever is read comes from the tail, or fails.
        // The whole file at hand: every row, no request.
        assert_eq!(rows_of(reader(bytes.clone())), Ok(50_000));
        // Its last 64 KiB: the footer loads from them; the column chunks before them
        // need the object, which is not there.
        let tail = bytes.slice(bytes.len() - 64 * 1024..);
        let mut r = reader(tail.clone());
        let md = futures::executor::block_on(r.get_metadata(None)).unwrap();
        assert_eq!(md.file_metadata().num_rows(), 50_000);
        let inside = futures::executor::block_on(r.get_bytes(size - 100..size - 10)).unwrap();
        assert_eq!(inside, bytes.slice(bytes.len() - 100..bytes.len() - 10));
        let both = futures::executor::block_on(
            r.get_byte_ranges(vec![size - 50..size - 40, size - 30..size - 20]),
        )
        .unwrap();
        assert_eq!(
            both,
            vec![
                bytes.slice(bytes.len() - 50..bytes.len() - 40),
                bytes.slice(bytes.len() - 30..bytes.len() - 20)
            ]
        );
        assert!(futures::executor::block_on(r.get_bytes(0..10)).is_err());
        assert!(rows_of(reader(tail.clone())).is_err());
        // Stored: ranges outside the tail are fetched, inside it cut, in the order asked.
        let (s, k) = (store.clone(), key.clone());
        let put = bytes.clone();
        run(async move { s.put(&k, PutPayload::from(put)).await.unwrap() });
        let mut r = reader(tail.clone());
        let mixed = futures::executor::block_on(r.get_byte_ranges(vec![
            0..10,
            size - 30..size - 20,
            100..120,
        ]))
        .unwrap();
        assert_eq!(
            mixed,
            vec![
                bytes.slice(0..10),
                bytes.slice(bytes.len() - 30..bytes.len() - 20),
                bytes.slice(100..120)
            ]
        );
        assert_eq!(rows_of(reader(tail)), Ok(50_000));
    }

    #[test]
    fn a_large_month_file_is_read_by_range_with_its_footer_from_the_look_up() {
        let mem = Arc::new(InMemory::new());
        let st = ObjectStorage::with_store(mem.clone(), "b", "metrics/prod");
        let n = 1_000_000;
        let bytes = crate::writer::encode_partition(
            Vec::new(),
            std::path::Path::new("x"),
            &batch("p", d("2024-02-01"), n),
            &StorageConfig::default(),
        )
        .unwrap();
        assert!(bytes.len() as u64 > WHOLE_OBJECT_MAX, "{}", bytes.len());
        let key = ObjectPath::from("metrics/prod/2024-02/2024-02.parquet");
        let (m, k) = (mem.clone(), key.clone());
        run(async move { m.put(&k, PutPayload::from(bytes)).await.unwrap() });
        let feb = Selection {
            from: Some(d("2024-02-01")),
            to: Some(d("2024-02-29")),
            proxies: None,
        };
        let files = st.select(&feb).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].layout, Layout::Month);
        // The look-up kept the footer's bytes, not the whole MiB it fetched.
        let kept = st.tails.lock().unwrap().get(key.as_ref()).map(|b| b.len());
        assert_eq!(kept, Some(FOOTER_PREFETCH));
        assert!(st.probed.lock().unwrap().is_empty());
        // 0 + 1 + ... + (n - 1), every row once.
        let total = (n as f64) * (n as f64 - 1.0) / 2.0;
        assert_eq!(sum_values(&st, &feb), (n, total));
        // Taken by the open: nothing held once the month is read.
        assert!(st.tails.lock().unwrap().is_empty());
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
