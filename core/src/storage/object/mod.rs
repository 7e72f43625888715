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
use crate::cancel::Cancel;
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
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, UpdateVersion};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
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

mod lock;
mod prefetch;
mod proc;
mod range;
mod runtime;
mod select;
mod signer;
#[cfg(test)]
mod tests;
mod upload;

pub(crate) use lock::CompactionLock;
pub use lock::LOCK_TTL;
pub(crate) use prefetch::OrderedFetch;
pub(crate) use range::RangeReader;
use range::{get_bytes, probe};
pub use runtime::set_thread_start_hook;
use runtime::{run, runtime};
use signer::Signer;
use upload::part_bytes;
pub use upload::PART_BYTES;

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
    pins: std::sync::Mutex<std::collections::HashMap<String, UpdateVersion>>,
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

/// The version of `meta`'s object, as a read asks for it (object_store's own
/// compare-and-swap type: an ETag and, on a versioned bucket, a version id).
pub(crate) fn version_of(meta: &object_store::ObjectMeta) -> UpdateVersion {
    UpdateVersion {
        e_tag: meta.e_tag.clone(),
        version: meta.version.clone(),
    }
}

/// No version asked for: whatever the object is when read (a month file `select`
/// did not see, or a test's).
pub(crate) fn any_version() -> UpdateVersion {
    UpdateVersion {
        e_tag: None,
        version: None,
    }
}

/// Options asking for `v`: by version id on a versioned bucket (the old version
/// stays readable), else by ETag (a replaced object is a 412).
fn get_options(v: &UpdateVersion) -> object_store::GetOptions {
    object_store::GetOptions {
        if_match: v.version.is_none().then(|| v.e_tag.clone()).flatten(),
        version: v.version.clone(),
        ..Default::default()
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
        Error::Storage { path: at, message }
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
                    .unwrap_or_else(any_version);
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
    fn backend(&self) -> super::Backend<'_> {
        super::Backend::Object(self)
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

    /// A reader of `meta`'s object by range, every request for that version only.
    pub(crate) fn range_reader(
        &self,
        meta: &object_store::ObjectMeta,
    ) -> parquet::arrow::async_reader::SpawnedReader<RangeReader> {
        let reader = RangeReader::new(
            self.store.clone(),
            meta.location.clone(),
            meta.size,
            version_of(meta),
        );
        parquet::arrow::async_reader::SpawnedReader::new(reader, runtime().handle().clone())
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
                Ok((status, body)) => Err(Error::Storage {
                    path: self.display(key),
                    message: format!(
                        "cannot delete: {status} {}",
                        scrub(&String::from_utf8_lossy(&body), &self.secrets)
                    ),
                }),
                Err(e) => Err(Error::Storage {
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
}
