//! Finding partitions for a query: which files hold the selected days and proxies.
//!
//! Pruning works on paths alone, so a file outside the selection is never opened
//! (DuckDB's own glob cannot skip files by a folder name that is not Hive-style;
//! on a year of partitions this is three orders of magnitude). Two layouts are
//! understood: promduck's (and the original Go tool's) `YYYY-MM-DD/<proxy>.parquet`,
//! and the Go tool's Hive-style `year=YYYY/month=MM/day=DD/app=<proxy>/*.parquet`.
//!
//! Proxy names from file names. promduck encodes names ([`encode_proxy`]); the Go
//! tool used the raw name, so `sp ace.parquet`, `é.parquet`, `.hidden.parquet` are
//! its proxies and a proxy `a/b` is the file `a/b.parquet` in a subfolder. A file
//! name's proxy is its raw stem, except for stems that are a promduck encoding
//! differing from the raw name ([`ambiguous_stem`], e.g. `a%2Fb`): those files
//! (only those) are opened at listing time, and their footer's
//! [`CREATED_BY_KEY`] stamp decides (promduck: the decoded name; else: raw).
//! Only promduck's own temporary files are skipped.
//!
//! Each file is selected at most once: repeated proxy names, a name found under
//! two spellings, a day folder or file reachable through a symlink are
//! deduplicated by the file's real path (a path without symlinks is preferred).
//!
//! Compacted months (`YYYY-MM/YYYY-MM.parquet`, see `compact.rs`): where a month
//! file exists it is the whole month, and that month's day folders are not
//! listed. The month file is looked for before any day folder is listed, and
//! compaction removes daily files only after its month file is visible, so a
//! listing sees every row exactly once: either the month file, or daily files that
//! are still there when listed. A month file is one [`PartitionFile`] carrying the
//! selection: its row groups are chosen by their statistics (files are sorted by
//! `api_proxy, date`, so one day of one proxy is in one row group) and its rows
//! filtered by day and proxy.

use crate::error::{Error, Result};
use crate::layout::{
    ambiguous_stem, decode_proxy, encode_proxy, is_temp_file, month_end, month_of, month_path,
    parse_day_dir, parse_month_dir, CREATED_BY_KEY, PARQUET_EXT,
};
use chrono::NaiveDate;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Which layout a file was found in (it decides how its columns are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `YYYY-MM-DD/<proxy>.parquet`.
    Daily,
    /// `year=/month=/day=/app=/<file>.parquet`.
    Hive,
    /// `YYYY-MM/YYYY-MM.parquet`: a compacted month, every proxy and day of it.
    Month,
}

/// One selected file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFile {
    /// The day of a daily file; the first day of a month file's month.
    pub day: NaiveDate,
    /// The proxy of a daily file; empty for a month file (its rows say).
    pub proxy: String,
    pub path: PathBuf,
    pub layout: Layout,
    /// A month file: the days and proxies to read from it (`None`: all).
    pub filter: Option<Arc<Selection>>,
    /// An object in a bucket (`path` is then its `s3://` URL); `None`: a local file.
    pub object: Option<ObjectFile>,
}

/// Where a partition is in an object store (see `storage::object`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFile {
    /// The object's key.
    pub key: String,
    /// Its size, when a listing said; `None`: looked up by name (it may not exist).
    pub size: Option<u64>,
}

impl PartitionFile {
    fn daily(day: NaiveDate, proxy: String, path: PathBuf, layout: Layout) -> PartitionFile {
        PartitionFile {
            day,
            proxy,
            path,
            layout,
            filter: None,
            object: None,
        }
    }
}

/// What to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Inclusive bounds; `None` is open.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// `None`: all proxies. Repeated names select a file once.
    pub proxies: Option<Vec<String>>,
}

impl Selection {
    pub(crate) fn day_ok(&self, d: NaiveDate) -> bool {
        self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d <= t)
    }
    /// Whether any day of `first..=last` is selected.
    pub(crate) fn day_ok_any(&self, first: NaiveDate, last: NaiveDate) -> bool {
        self.from.is_none_or(|f| last >= f) && self.to.is_none_or(|t| first <= t)
    }
    pub(crate) fn proxy_ok(&self, p: &str) -> bool {
        self.proxies
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|x| x == p))
    }
}

/// A folder entry. `symlink`: the entry itself is a symbolic link (its kind is its
/// target's; a dangling link counts as a file, so reading it fails naming it).
struct Entry {
    name: String,
    path: PathBuf,
    is_dir: bool,
    symlink: bool,
}

fn list_dir(dir: &Path) -> Result<Vec<Entry>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|err| Error::io(dir, err))?;
        // An entry gone since the listing (a temporary file renamed meanwhile) is skipped.
        let Ok(ft) = e.file_type() else { continue };
        let symlink = ft.is_symlink();
        let path = e.path();
        let is_dir = if symlink { path.is_dir() } else { ft.is_dir() };
        out.push(Entry {
            name: e.file_name().to_string_lossy().into_owned(),
            path,
            is_dir,
            symlink,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Where a folder really is: its path with symlinks resolved, and whether the path
/// we reached it by has none below the data dir (`direct`).
#[derive(Clone)]
struct Real {
    path: PathBuf,
    direct: bool,
}

impl Real {
    fn child(&self, e: &Entry) -> Real {
        if e.symlink {
            Real {
                path: std::fs::canonicalize(&e.path).unwrap_or_else(|_| e.path.clone()),
                direct: false,
            }
        } else {
            Real {
                path: self.path.join(&e.name),
                direct: self.direct,
            }
        }
    }
}

/// Files found, before deduplication.
struct Found {
    files: Vec<(PartitionFile, Real)>,
    /// Some path went through a symlink: the same file may have been found twice.
    via_symlink: bool,
}

impl Found {
    fn push(&mut self, file: PartitionFile, real: Real) {
        self.via_symlink |= !real.direct;
        self.files.push((file, real));
    }
}

/// Whether promduck wrote this file (its footer carries [`CREATED_BY_KEY`]).
/// `None` when the footer cannot be read.
pub fn written_by_promduck(path: &Path) -> Option<bool> {
    let f = std::fs::File::open(path).ok()?;
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&f)
        .ok()?;
    Some(
        meta.file_metadata()
            .key_value_metadata()
            .is_some_and(|kv| kv.iter().any(|k| k.key == CREATED_BY_KEY)),
    )
}

/// The proxy of a file directly in a day folder, from its stem (see the module
/// docs). An ambiguous file whose footer cannot be read is taken as promduck's
/// (reading it fails later, naming it).
fn top_level_proxy(stem: &str, path: &Path) -> String {
    match ambiguous_stem(stem) {
        Some(decoded) if written_by_promduck(path) != Some(false) => decoded,
        _ => stem.to_string(),
    }
}

/// The file a Go-tool proxy name maps to under a day folder, if the name is a
/// relative path that stays inside it (its folders are neither empty, `.` nor `..`).
fn raw_relative_file(name: &str) -> Option<String> {
    if name.is_empty() || name.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let last = parts.pop()?;
    if last.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    Some(format!("{name}.{PARQUET_EXT}"))
}

/// Lists the files of `data_dir` inside the selection, sorted by day then proxy.
/// A missing `data_dir` is an error naming it; an empty selection is no files.
/// A compacted month is its month file (carrying the selection); its day folders
/// are then not listed (see the module docs).
pub fn select_files(data_dir: &Path, sel: &Selection) -> Result<Vec<PartitionFile>> {
    select(data_dir, sel, true)
}

/// The daily files (`YYYY-MM-DD/<proxy>.parquet`) of the month starting on
/// `first`, whether or not the month has a month file: what compaction takes in.
pub fn daily_files_of_month(data_dir: &Path, first: NaiveDate) -> Result<Vec<PartitionFile>> {
    let sel = Selection {
        from: Some(first),
        to: Some(month_end(first)),
        proxies: None,
    };
    Ok(select(data_dir, &sel, false)?
        .into_iter()
        .filter(|f| f.layout == Layout::Daily)
        .collect())
}

/// The month file of `day`'s month, if there is one: what a reader uses instead of a
/// daily file that vanished after it was listed (compaction removed it once the
/// month file had taken in its rows), restricted to that file's day and proxy.
pub fn month_fallback(file: &PartitionFile) -> Option<PartitionFile> {
    if file.layout != Layout::Daily {
        return None;
    }
    // <data_dir>/<YYYY-MM-DD>/<name>.parquet, `name` possibly in subfolders (raw Go-tool names).
    let day_dir = file.path.ancestors().find(|a| {
        a.file_name()
            .is_some_and(|n| parse_day_dir(&n.to_string_lossy()) == Some(file.day))
    })?;
    let path = month_path(day_dir.parent()?, file.day);
    path.is_file().then(|| PartitionFile {
        day: month_of(file.day),
        proxy: String::new(),
        path,
        layout: Layout::Month,
        filter: Some(Arc::new(Selection {
            from: Some(file.day),
            to: Some(file.day),
            proxies: Some(vec![file.proxy.clone()]),
        })),
        object: None,
    })
}

fn select(data_dir: &Path, sel: &Selection, month_files: bool) -> Result<Vec<PartitionFile>> {
    let meta = std::fs::metadata(data_dir).map_err(|e| Error::io(data_dir, e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not a directory",
            data_dir.display()
        )));
    }
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
    let root = Real {
        path: std::fs::canonicalize(data_dir).map_err(|e| Error::io(data_dir, e))?,
        direct: true,
    };
    let mut found = Found {
        files: Vec::new(),
        via_symlink: false,
    };
    let entries = list_dir(data_dir)?;
    // Month files first, before any day folder is listed: a month whose file is
    // seen is read from it alone; one whose file is not (yet) seen is read from
    // daily files, which compaction removes only after its month file is visible.
    let mut compacted: HashSet<NaiveDate> = HashSet::new();
    if month_files {
        for e in entries.iter().filter(|e| e.is_dir) {
            let Some(first) = parse_month_dir(&e.name) else {
                continue;
            };
            if !sel.day_ok_any(first, month_end(first)) {
                continue;
            }
            let file_name = format!("{}.{PARQUET_EXT}", e.name);
            let path = e.path.join(&file_name);
            if !path.is_file() {
                continue;
            }
            compacted.insert(first);
            let from = sel.from.filter(|f| *f > first);
            let to = sel.to.filter(|t| *t < month_end(first));
            let filter = (from.is_some() || to.is_some() || sel.proxies.is_some()).then(|| {
                Arc::new(Selection {
                    from,
                    to,
                    proxies: sel.proxies.clone(),
                })
            });
            let real = root.child(e);
            let file_real = Real {
                path: real.path.join(&file_name),
                direct: real.direct,
            };
            found.push(
                PartitionFile {
                    day: first,
                    proxy: String::new(),
                    path,
                    layout: Layout::Month,
                    filter,
                    object: None,
                },
                file_real,
            );
        }
    }
    for e in entries {
        if !e.is_dir {
            continue;
        }
        if let Some(day) = parse_day_dir(&e.name) {
            if sel.day_ok(day) && !compacted.contains(&month_of(day)) {
                let real = root.child(&e);
                if root.path.starts_with(&real.path) {
                    continue; // a day folder linked to the data dir or above it
                }
                match &sel.proxies {
                    Some(proxies) => daily_lookup(day, &e.path, &real, proxies, &mut found)?,
                    None => daily_list(day, &e.path, &real, "", &mut HashSet::new(), &mut found)?,
                }
            }
        } else if let Some(year) = e
            .name
            .strip_prefix("year=")
            .and_then(|y| y.parse::<i32>().ok())
        {
            hive_files(year, &e.path, &root.child(&e), &sel, &mut found)?;
        }
    }
    let mut files = found.files;
    if found.via_symlink {
        // Keep one entry per real file: a direct path if there is one, else the first.
        let mut best: HashMap<OsString, usize> = HashMap::new();
        for (i, (_, real)) in files.iter().enumerate() {
            let slot = best.entry(real.path.clone().into_os_string()).or_insert(i);
            let cur = &files[*slot].1;
            if real.direct && !cur.direct {
                *slot = i;
            }
        }
        let keep: HashSet<usize> = best.into_values().collect();
        files = files
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, f)| f)
            .collect();
    }
    let mut out: Vec<PartitionFile> = files.into_iter().map(|(f, _)| f).collect();
    out.sort_by(|a, b| (a.day, &a.proxy, &a.path).cmp(&(b.day, &b.proxy, &b.path)));
    Ok(out)
}

/// Known names: look their files up directly instead of listing the folder. Each
/// name has up to two candidates, promduck's encoded file name and the Go tool's
/// raw one; a candidate is kept only if its proxy (as listing resolves it) is the
/// requested name.
fn daily_lookup(
    day: NaiveDate,
    dir: &Path,
    real: &Real,
    proxies: &[String],
    found: &mut Found,
) -> Result<()> {
    for p in proxies {
        let encoded = encode_proxy(p);
        let mut candidates = vec![format!("{encoded}.{PARQUET_EXT}")];
        if let Some(raw) = raw_relative_file(p) {
            if p != &encoded {
                candidates.push(raw);
            }
        }
        for name in candidates {
            let path = dir.join(&name);
            let Ok(lmeta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let symlink = lmeta.file_type().is_symlink();
            if symlink || name.contains('/') {
                if !path.is_file() {
                    continue;
                }
            } else if !lmeta.is_file() {
                continue;
            }
            let proxy = match name.strip_suffix(&format!(".{PARQUET_EXT}")) {
                Some(stem) if !stem.contains('/') => top_level_proxy(stem, &path),
                Some(stem) => stem.to_string(),
                None => continue,
            };
            if &proxy != p {
                continue;
            }
            let file_real = if symlink || name.contains('/') {
                let canon = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
                let direct = real.direct && canon == real.path.join(&name);
                Real {
                    path: canon,
                    direct,
                }
            } else {
                Real {
                    path: real.path.join(&name),
                    direct: real.direct,
                }
            };
            found.push(
                PartitionFile::daily(day, proxy, path, Layout::Daily),
                file_real,
            );
        }
    }
    Ok(())
}

/// Every partition of a day folder. `prefix` is the proxy-name prefix of a
/// subfolder (a Go-tool proxy with `/` in its name); `visited` guards against
/// symlink loops.
fn daily_list(
    day: NaiveDate,
    dir: &Path,
    real: &Real,
    prefix: &str,
    visited: &mut HashSet<PathBuf>,
    found: &mut Found,
) -> Result<()> {
    if !visited.insert(real.path.clone()) {
        return Ok(());
    }
    for e in list_dir(dir)? {
        if e.is_dir {
            let sub = real.child(&e);
            if real.path.starts_with(&sub.path) {
                continue; // a link to an enclosing folder (`..`, the data dir): never followed
            }
            daily_list(
                day,
                &e.path,
                &sub,
                &format!("{prefix}{}/", e.name),
                visited,
                found,
            )?;
            continue;
        }
        if is_temp_file(&e.name) {
            continue;
        }
        let Some(stem) = e.name.strip_suffix(&format!(".{PARQUET_EXT}")) else {
            continue;
        };
        if stem.is_empty() {
            continue;
        }
        let proxy = if prefix.is_empty() {
            top_level_proxy(stem, &e.path)
        } else {
            format!("{prefix}{stem}")
        };
        let file_real = real.child(&e);
        found.push(
            PartitionFile::daily(day, proxy, e.path, Layout::Daily),
            file_real,
        );
    }
    Ok(())
}

fn hive_value<'a>(name: &'a str, key: &str) -> Option<&'a str> {
    name.strip_prefix(key)?.strip_prefix('=')
}

fn hive_files(
    year: i32,
    ydir: &Path,
    yreal: &Real,
    sel: &Selection,
    found: &mut Found,
) -> Result<()> {
    // Prune whole years and months before listing below them.
    let year_ok = |y: i32| {
        sel.from.is_none_or(|f| y >= chrono::Datelike::year(&f))
            && sel.to.is_none_or(|t| y <= chrono::Datelike::year(&t))
    };
    if !year_ok(year) {
        return Ok(());
    }
    for m in list_dir(ydir)? {
        let Some(month) = hive_value(&m.name, "month").and_then(|m| m.parse::<u32>().ok()) else {
            continue;
        };
        if !m.is_dir {
            continue;
        }
        let mreal = yreal.child(&m);
        for d in list_dir(&m.path)? {
            let Some(dd) = hive_value(&d.name, "day").and_then(|d| d.parse::<u32>().ok()) else {
                continue;
            };
            let Some(day) = NaiveDate::from_ymd_opt(year, month, dd) else {
                continue;
            };
            if !d.is_dir || !sel.day_ok(day) {
                continue;
            }
            let dreal = mreal.child(&d);
            for a in list_dir(&d.path)? {
                // Hive partition values are percent-encoded by convention; a value
                // that is not valid percent-encoding is taken as it is.
                let Some(raw) = hive_value(&a.name, "app") else {
                    continue;
                };
                let app = decode_proxy(raw).unwrap_or_else(|| raw.to_string());
                if !a.is_dir || !sel.proxy_ok(&app) {
                    continue;
                }
                let areal = dreal.child(&a);
                // File names here are not proxy names: hidden ones are skipped, as
                // Hive-style readers do.
                for f in list_dir(&a.path)? {
                    if f.is_dir
                        || f.name.starts_with('.')
                        || !f.name.ends_with(&format!(".{PARQUET_EXT}"))
                    {
                        continue;
                    }
                    let freal = areal.child(&f);
                    found.push(
                        PartitionFile::daily(day, app.clone(), f.path, Layout::Hive),
                        freal,
                    );
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading a selected file into normalised Arrow columns.
//
// Files in the layout may come from other writers, so every conversion is exact
// or an error naming the file, the column and the offending value: casts never
// turn a value they cannot convert into NULL (NULLs stay NULL), timestamps never
// overflow silently, and a file's `date` column must hold the day its folder (or
// Hive path) says on every row.
// ---------------------------------------------------------------------------

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use parquet::arrow::arrow_reader::{
    ArrowReaderBuilder, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::{
    AsyncFileReader, ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use std::sync::Arc;

/// The columns `prom_metrics` returns, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    Timestamp,
    Date,
    Proxy,
    Metric,
    Value,
    Labels,
}

impl Column {
    pub const ALL: [Column; 6] = [
        Column::Timestamp,
        Column::Date,
        Column::Proxy,
        Column::Metric,
        Column::Value,
        Column::Labels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::Timestamp => crate::schema::COL_TIMESTAMP,
            Column::Date => crate::schema::COL_DATE,
            Column::Proxy => crate::schema::COL_PROXY,
            Column::Metric => crate::schema::COL_METRIC,
            Column::Value => crate::schema::COL_VALUE,
            Column::Labels => crate::schema::COL_LABELS,
        }
    }
}

/// Labels of a batch: row `i` has entries `offsets[i]..offsets[i+1]` of `keys`/`values`.
/// Keys are never NULL.
#[derive(Debug, Clone)]
pub struct LabelColumn {
    pub offsets: OffsetBuffer<i32>,
    pub keys: StringArray,
    pub values: StringArray,
    /// Null rows (a missing map), if any.
    pub nulls: Option<arrow::buffer::NullBuffer>,
}

/// One batch of rows in `prom_metrics`' shape. Only requested columns are set.
/// `api_proxy` and `date` fall back to the partition's path when the file has no
/// such column (the Hive layout).
#[derive(Debug, Clone)]
pub struct ReadBatch {
    pub len: usize,
    /// Epoch microseconds (a DuckDB TIMESTAMP's unit), each within
    /// [`MIN_TIMESTAMP_US`, `MAX_TIMESTAMP_US`].
    pub timestamp_us: Option<Int64Array>,
    pub date: Option<Date32Array>,
    pub proxy: Option<StringArray>,
    pub metric: Option<StringArray>,
    pub value: Option<Float64Array>,
    pub labels: Option<LabelColumn>,
}

/// The range of finite DuckDB timestamps in microseconds (`i64::MAX` and
/// `-i64::MAX` are its infinities).
pub const MAX_TIMESTAMP_US: i64 = i64::MAX - 1;
pub const MIN_TIMESTAMP_US: i64 = -i64::MAX + 1;

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::parquet(path, format!("cannot read Parquet file: {e}"))
}

fn col_err(path: &Path, column: &str, e: impl std::fmt::Display) -> Error {
    Error::parquet(path, format!("column `{column}`: {e}"))
}

/// What to read from each partition file of a scan: the columns in `want` (plus
/// `metric_name` when filtering by `metrics`, and `date` when its statistics
/// cannot vouch for the folder's day), in batches of at most `batch_rows` rows.
/// Shared by every file of a scan, so opening a file copies nothing of it.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub want: Vec<Column>,
    pub metrics: Option<Vec<String>>,
    pub batch_rows: usize,
}

/// One open partition file, decoded a batch at a time: it holds the file, the
/// Parquet reader's current pages and nothing decoded beyond the batch it
/// returns, so memory stays bounded whatever the file's size, and a consumer
/// that stops early (a `LIMIT`) never decodes the rest. Every check of
/// [`read_partition`] applies to each batch as it is read; a file's footer
/// (its schema, the `date` statistics of promduck's files) is checked on open.
pub struct PartitionReader {
    file: PartitionFile,
    spec: Arc<ReadSpec>,
    batches: Batches,
    check_dates: bool,
    /// A month file read for some days or proxies only: the rows to keep.
    rows: Option<RowFilter>,
    int_unit: TimeUnit,
    /// Rows decoded so far (before the metric filter) and the file's total.
    first_row: usize,
    total_rows: usize,
}

/// Where a reader's batches come from.
enum Batches {
    /// A local file, or an object fetched whole.
    Sync(ParquetRecordBatchReader),
    /// A large object, read by range (footer, then the projected column chunks).
    Object(Box<ParquetRecordBatchStream<Box<dyn AsyncFileReader>>>),
    /// A partition looked up by name that does not exist.
    None,
}

/// What opening a file decided, whatever it is read from.
struct Opened {
    check_dates: bool,
    rows: Option<RowFilter>,
    int_unit: TimeUnit,
    total_rows: usize,
}

impl PartitionReader {
    /// Opens a local `file` and checks its footer; no row is decoded yet.
    pub fn open(file: &PartitionFile, spec: &Arc<ReadSpec>) -> Result<PartitionReader> {
        let path = file.path.as_path();
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(f, reader_options())
            .map_err(|e| parquet_err(path, e))?;
        let (builder, opened) = prepare(builder, file, spec)?;
        let reader = builder.build().map_err(|e| parquet_err(path, e))?;
        Ok(Self::new(file, spec, Batches::Sync(reader), opened))
    }

    /// Opens a file whose bytes are in memory (an object fetched with one GET).
    pub fn open_bytes(
        file: &PartitionFile,
        spec: &Arc<ReadSpec>,
        bytes: bytes::Bytes,
    ) -> Result<PartitionReader> {
        let path = file.path.as_path();
        let builder =
            ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, reader_options())
                .map_err(|e| parquet_err(path, e))?;
        let (builder, opened) = prepare(builder, file, spec)?;
        let reader = builder.build().map_err(|e| parquet_err(path, e))?;
        Ok(Self::new(file, spec, Batches::Sync(reader), opened))
    }

    /// Opens an object read by range: the footer now, column chunks as batches are asked for.
    pub fn open_async(
        file: &PartitionFile,
        spec: &Arc<ReadSpec>,
        object: Box<dyn AsyncFileReader>,
    ) -> Result<PartitionReader> {
        let path = file.path.as_path();
        let builder = futures::executor::block_on(
            ParquetRecordBatchStreamBuilder::new_with_options(object, reader_options()),
        )
        .map_err(|e| parquet_err(path, e))?;
        let (builder, opened) = prepare(builder, file, spec)?;
        let stream: ParquetRecordBatchStream<_> =
            builder.build().map_err(|e| parquet_err(path, e))?;
        Ok(Self::new(
            file,
            spec,
            Batches::Object(Box::new(stream)),
            opened,
        ))
    }

    /// A reader of a partition that does not exist: no rows.
    pub fn empty(file: &PartitionFile, spec: &Arc<ReadSpec>) -> PartitionReader {
        let opened = Opened {
            check_dates: false,
            rows: None,
            int_unit: TimeUnit::Millisecond,
            total_rows: 0,
        };
        Self::new(file, spec, Batches::None, opened)
    }

    fn new(file: &PartitionFile, spec: &Arc<ReadSpec>, batches: Batches, o: Opened) -> Self {
        PartitionReader {
            file: file.clone(),
            spec: spec.clone(),
            batches,
            check_dates: o.check_dates,
            rows: o.rows,
            int_unit: o.int_unit,
            first_row: 0,
            total_rows: o.total_rows,
        }
    }

    fn next_raw(&mut self) -> Option<std::result::Result<RecordBatch, String>> {
        match &mut self.batches {
            Batches::Sync(r) => r.next().map(|b| b.map_err(|e| e.to_string())),
            Batches::Object(s) => {
                futures::executor::block_on(s.next()).map(|b| b.map_err(|e| e.to_string()))
            }
            Batches::None => None,
        }
    }

    /// The file being read.
    pub fn file(&self) -> &PartitionFile {
        &self.file
    }

    /// Whether every row of the file has been decoded (the next call of
    /// [`next_batch`](Self::next_batch) would return `None`), known without a read.
    pub fn is_exhausted(&self) -> bool {
        self.first_row >= self.total_rows
    }

    /// The next batch with at least one row, or `None` at the end of the file.
    /// Batches whose rows the metric filter drops entirely are skipped.
    pub fn next_batch(&mut self) -> Result<Option<ReadBatch>> {
        let path = self.file.path.clone();
        let path = path.as_path();
        loop {
            let Some(batch) = self.next_raw() else {
                self.first_row = self.total_rows;
                return Ok(None);
            };
            let mut batch = batch.map_err(|e| parquet_err(path, e))?;
            let rows = batch.num_rows();
            if self.check_dates {
                if let Some(col) = batch.column_by_name(Column::Date.name()) {
                    check_dates_are(col, &self.file, self.first_row)?;
                }
            }
            self.first_row += rows;
            if let Some(r) = &self.rows {
                let mask = r.mask(&batch, path)?;
                batch = filter_record_batch(&batch, &mask).map_err(|e| parquet_err(path, e))?;
            }
            if let Some(ms) = &self.spec.metrics {
                let col = batch
                    .column_by_name(Column::Metric.name())
                    .ok_or_else(|| Error::parquet(path, "no `metric_name` column to filter on"))?;
                let names = to_utf8(col, path, "metric_name")?;
                let mask: BooleanArray = names
                    .iter()
                    .map(|n| Some(n.is_some_and(|n| ms.iter().any(|m| m == n))))
                    .collect();
                batch = filter_record_batch(&batch, &mask).map_err(|e| parquet_err(path, e))?;
            }
            if batch.num_rows() == 0 {
                continue;
            }
            return normalise(&batch, &self.file, &self.spec.want, self.int_unit).map(Some);
        }
    }
}

fn reader_options() -> parquet::arrow::arrow_reader::ArrowReaderOptions {
    // The embedded Arrow schema is not needed (columns are normalised below) and
    // decoding it is a measurable part of the per-file cost on small partitions.
    parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_skip_arrow_metadata(true)
}

/// The checks and choices of opening a file, whatever it is read from: its footer
/// must be a metrics partition's; the columns to decode, the row groups of a month
/// file read in part, whether dates must be checked row by row.
fn prepare<T>(
    builder: ArrowReaderBuilder<T>,
    file: &PartitionFile,
    spec: &ReadSpec,
) -> Result<(ArrowReaderBuilder<T>, Opened)> {
    let path = file.path.as_path();
    let want = spec.want.as_slice();
    let schema = builder.schema().clone();
    let top_level: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut needed: Vec<&str> = want.iter().map(|c| c.name()).collect();
    if spec.metrics.is_some() {
        needed.push(Column::Metric.name());
    }
    if !top_level.contains(&Column::Timestamp.name()) || !top_level.contains(&Column::Value.name())
    {
        return Err(Error::parquet(
            path,
            "not a metrics partition: it has no `timestamp` and `value` columns",
        ));
    }
    let (first_day, last_day) = file.days();
    let kv = builder.metadata().file_metadata().key_value_metadata();
    let ours = kv.is_some_and(|kv| kv.iter().any(|k| k.key == CREATED_BY_KEY));
    let date_field = schema.field_with_name(Column::Date.name()).ok();
    if file.layout == Layout::Month
        && (date_field.is_none() || !top_level.contains(&Column::Proxy.name()))
    {
        return Err(Error::parquet(
            path,
            "not a month file: it has no `date` and `api_proxy` columns",
        ));
    }
    // Every row's date must be the folder's day (a month file's: in its month).
    // promduck's own files say so in their statistics (no decoding); anything
    // else is checked row by row.
    let check_dates = date_field.is_some_and(|f| {
        !(ours
            && date_stats_prove_days(
                builder.metadata(),
                builder.parquet_schema(),
                f.data_type(),
                first_day,
                last_day,
            ))
    });
    // A month file read in part: only the row groups whose statistics may hold
    // a selected (day, proxy), then only the selected rows.
    let rows = match (&file.layout, &file.filter) {
        (Layout::Month, Some(f)) => Some(RowFilter::new(f, first_day, last_day)),
        _ => None,
    };
    let row_groups: Option<Vec<usize>> = rows
        .as_ref()
        .map(|r| r.row_groups(builder.metadata(), builder.parquet_schema()));
    if let Some(r) = &rows {
        needed.push(Column::Date.name());
        if r.proxies.is_some() {
            needed.push(Column::Proxy.name());
        }
    }
    // A plain INT64 `timestamp` is epoch milliseconds, unless an Arrow writer's
    // schema hint says seconds (Parquet has no annotation for them). promduck's
    // files hold milliseconds; only foreign ones pay for decoding the hint.
    let mut int_unit = TimeUnit::Millisecond;
    if !ours
        && want.contains(&Column::Timestamp)
        && schema
            .field_with_name(Column::Timestamp.name())
            .is_ok_and(|f| *f.data_type() == DataType::Int64)
    {
        if let Some(kv) = kv.filter(|kv| kv.iter().any(|k| k.key == "ARROW:schema")) {
            let hinted =
                parquet::arrow::parquet_to_arrow_schema(builder.parquet_schema(), Some(kv))
                    .map_err(|e| parquet_err(path, e))?;
            if let Ok(f) = hinted.field_with_name(Column::Timestamp.name()) {
                if let DataType::Timestamp(TimeUnit::Second, _) = f.data_type() {
                    int_unit = TimeUnit::Second;
                }
            }
        }
    }
    if check_dates {
        needed.push(Column::Date.name());
    }
    let groups = builder.metadata().row_groups();
    let total_rows = match &row_groups {
        Some(sel) => sel
            .iter()
            .map(|&i| groups[i].num_rows().max(0) as usize)
            .sum(),
        None => groups.iter().map(|rg| rg.num_rows().max(0) as usize).sum(),
    };
    let roots: Vec<usize> = top_level
        .iter()
        .enumerate()
        .filter(|(_, n)| needed.contains(n))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut builder = builder
        .with_projection(mask)
        .with_batch_size(spec.batch_rows.max(1));
    if let Some(sel) = row_groups {
        builder = builder.with_row_groups(sel);
    }
    Ok((
        builder,
        Opened {
            check_dates,
            rows,
            int_unit,
            total_rows,
        },
    ))
}

/// Reads a whole partition file into memory (see [`PartitionReader`] to stream it).
pub fn read_partition(
    file: &PartitionFile,
    want: &[Column],
    metrics: Option<&[String]>,
    batch_rows: usize,
) -> Result<Vec<ReadBatch>> {
    let spec = Arc::new(ReadSpec {
        want: want.to_vec(),
        metrics: metrics.map(<[String]>::to_vec),
        batch_rows,
    });
    let mut reader = PartitionReader::open(file, &spec)?;
    let mut out = Vec::new();
    while let Some(b) = reader.next_batch()? {
        out.push(b);
    }
    Ok(out)
}

impl PartitionFile {
    /// The days this file may hold: its day, or its month's first and last day.
    fn days(&self) -> (i32, i32) {
        let first = crate::schema::date32(self.day);
        match self.layout {
            Layout::Month => (first, crate::schema::date32(month_end(self.day))),
            Layout::Daily | Layout::Hive => (first, first),
        }
    }
}

/// The leaf column index of a top-level column.
fn leaf_of(schema: &parquet::schema::types::SchemaDescriptor, name: &str) -> Option<usize> {
    schema
        .columns()
        .iter()
        .position(|c| c.path().parts() == [name])
}

/// Whether the footer's statistics show that every non-NULL value of a DATE
/// column is within `first..=last` (only for promduck's own files: their writer
/// is trusted to write exact statistics).
fn date_stats_prove_days(
    meta: &ParquetMetaData,
    schema: &parquet::schema::types::SchemaDescriptor,
    ty: &DataType,
    first: i32,
    last: i32,
) -> bool {
    if *ty != DataType::Date32 {
        return false;
    }
    let Some(leaf) = leaf_of(schema, Column::Date.name()) else {
        return false;
    };
    meta.row_groups().iter().all(|rg| {
        let rows = rg.num_rows() as u64;
        match rg.column(leaf).statistics() {
            _ if rows == 0 => true,
            Some(Statistics::Int32(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(&lo), Some(&hi)) => lo >= first && hi <= last,
                (None, None) => s.null_count_opt() == Some(rows),
                _ => false,
            },
            _ => false,
        }
    })
}

/// The rows of a month file a reader keeps: days `from..=to` (Date32) of the
/// selected proxies.
#[derive(Debug)]
struct RowFilter {
    from: i32,
    to: i32,
    proxies: Option<HashSet<String>>,
}

impl RowFilter {
    fn new(sel: &Selection, first: i32, last: i32) -> RowFilter {
        RowFilter {
            from: sel
                .from
                .map_or(first, |d| crate::schema::date32(d).max(first)),
            to: sel.to.map_or(last, |d| crate::schema::date32(d).min(last)),
            proxies: sel.proxies.as_ref().map(|ps| ps.iter().cloned().collect()),
        }
    }

    /// The row groups whose statistics allow a selected row (all of them where a
    /// statistic is missing). Month files are sorted by `api_proxy, date` and their
    /// row groups never split a (proxy, day): one day of one proxy is one group.
    fn row_groups(
        &self,
        meta: &ParquetMetaData,
        schema: &parquet::schema::types::SchemaDescriptor,
    ) -> Vec<usize> {
        let date_leaf = leaf_of(schema, Column::Date.name());
        let proxy_leaf = leaf_of(schema, Column::Proxy.name());
        (0..meta.num_row_groups())
            .filter(|&i| {
                let rg = meta.row_group(i);
                let dates_ok = match date_leaf.and_then(|l| rg.column(l).statistics()) {
                    Some(Statistics::Int32(s)) => match (s.min_opt(), s.max_opt()) {
                        (Some(&lo), Some(&hi)) => lo <= self.to && hi >= self.from,
                        _ => true,
                    },
                    _ => true,
                };
                let proxies_ok = match (
                    &self.proxies,
                    proxy_leaf.and_then(|l| rg.column(l).statistics()),
                ) {
                    (Some(ps), Some(Statistics::ByteArray(s))) => {
                        match (s.min_opt(), s.max_opt()) {
                            (Some(lo), Some(hi)) => ps
                                .iter()
                                .any(|p| p.as_bytes() >= lo.data() && p.as_bytes() <= hi.data()),
                            _ => true,
                        }
                    }
                    _ => true,
                };
                dates_ok && proxies_ok
            })
            .collect()
    }

    fn mask(&self, batch: &RecordBatch, path: &Path) -> Result<BooleanArray> {
        let date = batch
            .column_by_name(Column::Date.name())
            .ok_or_else(|| Error::parquet(path, "no `date` column"))?;
        let date = checked_cast(date, &DataType::Date32, path, Column::Date.name())?;
        let date = date.as_primitive::<arrow::datatypes::Date32Type>();
        let proxy = match &self.proxies {
            Some(_) => Some(to_utf8(
                batch
                    .column_by_name(Column::Proxy.name())
                    .ok_or_else(|| Error::parquet(path, "no `api_proxy` column"))?,
                path,
                Column::Proxy.name(),
            )?),
            None => None,
        };
        Ok((0..batch.num_rows())
            .map(|i| {
                let day_ok = date.is_valid(i) && (self.from..=self.to).contains(&date.value(i));
                let proxy_ok = match (&self.proxies, &proxy) {
                    (Some(ps), Some(p)) => p.is_valid(i) && ps.contains(p.value(i)),
                    _ => true,
                };
                Some(day_ok && proxy_ok)
            })
            .collect())
    }
}

/// Errors unless every non-NULL value of the `date` column is the file's day
/// (a month file's: a day of its month).
fn check_dates_are(col: &ArrayRef, file: &PartitionFile, first_row: usize) -> Result<()> {
    let path = file.path.as_path();
    let dates = checked_cast(col, &DataType::Date32, path, Column::Date.name())?;
    let dates = dates.as_primitive::<arrow::datatypes::Date32Type>();
    let (first, last) = file.days();
    if let Some(i) =
        (0..dates.len()).find(|&i| dates.is_valid(i) && !(first..=last).contains(&dates.value(i)))
    {
        let got = dates
            .value_as_date(i)
            .map_or_else(|| dates.value(i).to_string(), |d| d.to_string());
        let (place, what) = match file.layout {
            Layout::Daily => ("its folder", "a partition holds one day"),
            Layout::Hive => ("its year=/month=/day= path", "a partition holds one day"),
            Layout::Month => ("its folder", "a month file holds one month"),
        };
        let says = match file.layout {
            Layout::Month => crate::layout::month_dir_name(file.day),
            _ => file.day.to_string(),
        };
        return Err(col_err(
            path,
            Column::Date.name(),
            format!(
                "row {} holds {got}, but {place} says {says}; {what}",
                first_row + i
            ),
        ));
    }
    Ok(())
}

/// The (day, proxy) partitions a month file holds within its selection, in file
/// order (by proxy, then day), read from its `api_proxy` and `date` columns alone.
pub fn month_partitions(file: &PartitionFile) -> Result<Vec<(NaiveDate, String)>> {
    let path = file.path.as_path();
    let spec = Arc::new(ReadSpec {
        want: vec![Column::Date, Column::Proxy],
        metrics: None,
        batch_rows: 8192,
    });
    let mut reader = PartitionReader::open(file, &spec)?;
    let mut out: Vec<(NaiveDate, String)> = Vec::new();
    while let Some(b) = reader.next_batch()? {
        let (Some(dates), Some(proxies)) = (&b.date, &b.proxy) else {
            return Err(Error::parquet(path, "no `date`/`api_proxy` column"));
        };
        for i in 0..b.len {
            if dates.is_null(i) || proxies.is_null(i) {
                continue;
            }
            let (d, p) = (dates.value(i), proxies.value(i));
            if out
                .last()
                .is_some_and(|(ld, lp)| crate::schema::date32(*ld) == d && lp == p)
            {
                continue;
            }
            let day = dates.value_as_date(i).ok_or_else(|| {
                col_err(path, Column::Date.name(), format!("day {d} out of range"))
            })?;
            out.push((day, p.to_string()));
        }
    }
    out.dedup();
    Ok(out)
}

/// `arrow::compute::cast` that fails instead of turning an unconvertible value
/// into NULL, and verifies that no NULL was introduced.
fn checked_cast(col: &ArrayRef, to: &DataType, path: &Path, name: &str) -> Result<ArrayRef> {
    if col.data_type() == to {
        return Ok(col.clone());
    }
    let opts = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let out = cast_with_options(col, to, &opts).map_err(|e| col_err(path, name, e))?;
    if out.logical_null_count() != col.logical_null_count() {
        let i = (0..col.len())
            .find(|&i| col.is_valid(i) && out.is_null(i))
            .unwrap_or(0);
        let v = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
            .map(|f| f.value(i).to_string())
            .unwrap_or_default();
        return Err(col_err(
            path,
            name,
            format!("value {v:?} ({}) cannot be read as {to}", col.data_type()),
        ));
    }
    Ok(out)
}

fn to_utf8(col: &ArrayRef, path: &Path, name: &str) -> Result<StringArray> {
    let c = checked_cast(col, &DataType::Utf8, path, name)?;
    Ok(c.as_string::<i32>().clone())
}

fn normalise(
    batch: &RecordBatch,
    file: &PartitionFile,
    want: &[Column],
    int_unit: TimeUnit,
) -> Result<ReadBatch> {
    let path = file.path.as_path();
    let n = batch.num_rows();
    let mut out = ReadBatch {
        len: n,
        timestamp_us: None,
        date: None,
        proxy: None,
        metric: None,
        value: None,
        labels: None,
    };
    for &c in want {
        let col = batch.column_by_name(c.name());
        match c {
            Column::Timestamp => {
                let col = col.ok_or_else(|| Error::parquet(path, "no `timestamp` column"))?;
                out.timestamp_us = Some(timestamp_us(col, path, int_unit)?);
            }
            Column::Date => {
                out.date = Some(match col {
                    Some(col) => checked_cast(col, &DataType::Date32, path, "date")?
                        .as_primitive::<arrow::datatypes::Date32Type>()
                        .clone(),
                    None => Date32Array::from(vec![crate::schema::date32(file.day); n]),
                });
            }
            Column::Proxy => {
                out.proxy = Some(match col {
                    Some(col) => to_utf8(col, path, "api_proxy")?,
                    None => {
                        StringArray::from_iter_values(std::iter::repeat_n(file.proxy.as_str(), n))
                    }
                });
            }
            Column::Metric => {
                let col = col.ok_or_else(|| Error::parquet(path, "no `metric_name` column"))?;
                out.metric = Some(to_utf8(col, path, "metric_name")?);
            }
            Column::Value => {
                let col = col.ok_or_else(|| Error::parquet(path, "no `value` column"))?;
                out.value = Some(values(col, path)?);
            }
            Column::Labels => {
                out.labels = Some(match col {
                    Some(col) => label_column(col, path)?,
                    None => LabelColumn {
                        offsets: OffsetBuffer::new_zeroed(n),
                        keys: StringArray::from(Vec::<&str>::new()),
                        values: StringArray::from(Vec::<&str>::new()),
                        nulls: None,
                    },
                });
            }
        }
    }
    Ok(out)
}

/// `value` as DOUBLE. 64-bit integers beyond 2^53 that a DOUBLE cannot hold
/// exactly are an error, not a rounded number.
fn values(col: &ArrayRef, path: &Path) -> Result<Float64Array> {
    let name = Column::Value.name();
    let inexact = match col.data_type() {
        DataType::Int64 => {
            let a = col.as_primitive::<arrow::datatypes::Int64Type>();
            (0..a.len())
                .find(|&i| a.is_valid(i) && (a.value(i) as f64) as i128 != a.value(i) as i128)
                .map(|i| a.value(i).to_string())
        }
        DataType::UInt64 => {
            let a = col.as_primitive::<arrow::datatypes::UInt64Type>();
            (0..a.len())
                .find(|&i| a.is_valid(i) && (a.value(i) as f64) as u128 != a.value(i) as u128)
                .map(|i| a.value(i).to_string())
        }
        _ => None,
    };
    if let Some(v) = inexact {
        return Err(col_err(
            path,
            name,
            format!("value {v} cannot be represented exactly as a DOUBLE"),
        ));
    }
    Ok(checked_cast(col, &DataType::Float64, path, name)?
        .as_primitive::<arrow::datatypes::Float64Type>()
        .clone())
}

/// Epoch microseconds from an integer column (in `int_unit`: epoch milliseconds,
/// the seed's BIGINT, unless the file says otherwise) or a timestamp column. Out
/// of range is an error naming the value; nanoseconds are floored to the
/// microsecond (the output type's precision).
fn timestamp_us(col: &ArrayRef, path: &Path, int_unit: TimeUnit) -> Result<Int64Array> {
    let name = Column::Timestamp.name();
    let (raw, unit) = match col.data_type() {
        DataType::Int64
        | DataType::Int32
        | DataType::Int16
        | DataType::Int8
        | DataType::UInt64
        | DataType::UInt32
        | DataType::UInt16
        | DataType::UInt8 => (checked_cast(col, &DataType::Int64, path, name)?, int_unit),
        DataType::Timestamp(unit, _) => (checked_cast(col, &DataType::Int64, path, name)?, *unit),
        other => return Err(col_err(path, name, format!("unsupported type {other}"))),
    };
    let raw = raw.as_primitive::<arrow::datatypes::Int64Type>();
    let (mul, div, what) = match unit {
        TimeUnit::Second => (1_000_000, 1, "seconds"),
        TimeUnit::Millisecond => (1_000, 1, "milliseconds"),
        TimeUnit::Microsecond => (1, 1, "microseconds"),
        TimeUnit::Nanosecond => (1, 1_000, "nanoseconds"),
    };
    let mut us = Vec::with_capacity(raw.len());
    for i in 0..raw.len() {
        if raw.is_null(i) {
            us.push(0);
            continue;
        }
        let v = raw.value(i);
        match v.checked_mul(mul).map(|x| x.div_euclid(div)) {
            Some(x) if (MIN_TIMESTAMP_US..=MAX_TIMESTAMP_US).contains(&x) => us.push(x),
            _ => {
                return Err(col_err(
                    path,
                    name,
                    format!(
                        "value {v} ({what} since the epoch) is outside the range of a timestamp"
                    ),
                ));
            }
        }
    }
    Ok(Int64Array::new(us.into(), raw.nulls().cloned()))
}

/// A `MAP(VARCHAR, VARCHAR)` or the Go tool's `LIST(STRUCT(key, value))`.
fn label_column(col: &ArrayRef, path: &Path) -> Result<LabelColumn> {
    let bad = |what: &str| Error::parquet(path, format!("column `labels`: {what}"));
    let (offsets, entries, nulls) = match col.data_type() {
        DataType::Map(_, _) => {
            let m = col.as_map();
            (m.offsets().clone(), m.entries().clone(), m.nulls().cloned())
        }
        DataType::List(_) => {
            let l = col.as_list::<i32>();
            let entries = l
                .values()
                .as_struct_opt()
                .ok_or_else(|| bad("expected a list of key/value structs"))?
                .clone();
            (l.offsets().clone(), entries, l.nulls().cloned())
        }
        other => return Err(bad(&format!("unsupported type {other}"))),
    };
    if entries.num_columns() < 2 {
        return Err(bad("entries need a key and a value"));
    }
    let key_col = entries
        .column_by_name("key")
        .or_else(|| entries.column_by_name("keys"))
        .unwrap_or(entries.column(0));
    let val_col = entries
        .column_by_name("value")
        .or_else(|| entries.column_by_name("values"))
        .unwrap_or(entries.column(1));
    let keys = to_utf8(key_col, path, "labels.key")?;
    let values = to_utf8(val_col, path, "labels.value")?;
    if entries.null_count() > 0 || keys.null_count() > 0 {
        // Only the entries that non-NULL rows point at matter.
        let row_valid = |r: usize| nulls.as_ref().is_none_or(|nb| nb.is_valid(r));
        let offs = offsets.as_ref();
        for r in (0..offs.len().saturating_sub(1)).filter(|&r| row_valid(r)) {
            for j in offs[r] as usize..offs[r + 1] as usize {
                if entries.is_null(j) || keys.is_null(j) {
                    return Err(bad(
                        "a label without a key (a NULL entry or key), which a MAP cannot hold",
                    ));
                }
            }
        }
    }
    Ok(LabelColumn {
        offsets,
        keys,
        values,
        nulls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn selects_by_day_and_proxy() {
        let root = std::env::temp_dir().join(format!("promduck-reader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for day in ["2024-03-01", "2024-03-02", "2024-03-03"] {
            for p in ["a", "b", "we%22ird"] {
                touch(&root.join(day).join(format!("{p}.parquet")));
            }
        }
        touch(&root.join("2024-03-02").join(".b.parquet.1-0.promduck-tmp"));
        touch(&root.join("2024-03-02").join("notes.txt"));
        touch(&root.join("year=2024/month=03/day=02/app=c/part-0.parquet"));
        touch(&root.join("year=2024/month=04/day=01/app=c/part-0.parquet"));
        std::fs::create_dir_all(root.join("junk")).unwrap();

        let all = select_files(&root, &Selection::default()).unwrap();
        assert_eq!(all.len(), 11);
        let sel = Selection {
            from: Some(d("2024-03-02")),
            to: Some(d("2024-03-02")),
            proxies: None,
        };
        let got: Vec<_> = select_files(&root, &sel)
            .unwrap()
            .into_iter()
            .map(|f| (f.proxy, f.layout))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), Layout::Daily),
                ("b".into(), Layout::Daily),
                ("c".into(), Layout::Hive),
                ("we\"ird".into(), Layout::Daily)
            ]
        );
        let sel = Selection {
            from: None,
            to: None,
            proxies: Some(vec!["we\"ird".into(), "zzz".into()]),
        };
        assert_eq!(select_files(&root, &sel).unwrap().len(), 3);
        let sel = Selection {
            from: Some(d("2024-03-03")),
            to: Some(d("2024-03-01")),
            proxies: None,
        };
        assert!(select_files(&root, &sel).unwrap().is_empty());
        assert!(select_files(&root.join("missing"), &Selection::default())
            .unwrap_err()
            .to_string()
            .contains("missing"));
        let _ = std::fs::remove_dir_all(&root);
    }

    use arrow::array::StringArray as Utf8;
    use std::sync::Arc;

    /// A fresh folder under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("promduck-reader-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    /// Writes a Parquet file with the given columns; `promduck` stamps it as promduck's writer does.
    fn write(path: &Path, cols: Vec<(&str, ArrayRef)>, promduck: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        let mut props = parquet::file::properties::WriterProperties::builder();
        if promduck {
            props =
                props.set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
                    CREATED_BY_KEY.to_string(),
                    "test".to_string(),
                )]));
        }
        let f = std::fs::File::create(path).unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props.build())).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    /// A minimal partition of `proxy` on `day` (one row, value 1.0).
    fn partition(path: &Path, day: &str, proxy: &str, promduck: bool) {
        write(
            path,
            vec![
                (
                    "timestamp",
                    Arc::new(Int64Array::from(vec![1_000])) as ArrayRef,
                ),
                ("metric_name", Arc::new(Utf8::from(vec!["m"]))),
                ("value", Arc::new(Float64Array::from(vec![1.0]))),
                ("api_proxy", Arc::new(Utf8::from(vec![proxy]))),
                (
                    "date",
                    Arc::new(Date32Array::from(vec![crate::schema::date32(d(day))])),
                ),
            ],
            promduck,
        );
    }

    fn names(root: &Path, sel: &Selection) -> Vec<(String, String)> {
        select_files(root, sel)
            .unwrap()
            .into_iter()
            .map(|f| {
                (
                    f.proxy,
                    f.path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                )
            })
            .collect()
    }

    fn proxies(ps: &[&str]) -> Selection {
        Selection {
            from: None,
            to: None,
            proxies: Some(ps.iter().map(|p| p.to_string()).collect()),
        }
    }

    #[test]
    fn go_archive_file_names_are_raw_proxy_names() {
        let root = scratch("go-names");
        let go = root.join("2024-03-01");
        for (file, proxy) in [
            ("sp ace", "sp ace"),
            ("é", "é"),
            ("x%zz", "x%zz"),
            (".hidden", ".hidden"),
            ("a/b", "a/b"),
            ("a%2Fb", "a%2Fb"),
            ("c/d/e", "c/d/e"),
        ] {
            partition(
                &go.join(format!("{file}.parquet")),
                "2024-03-01",
                proxy,
                false,
            );
        }
        // promduck's files for the same names, a day later.
        let pd = root.join("2024-03-02");
        for proxy in ["sp ace", "a/b", "a%2Fb", ".hidden"] {
            partition(
                &pd.join(format!("{}.parquet", encode_proxy(proxy))),
                "2024-03-02",
                proxy,
                true,
            );
        }
        touch(&pd.join(".x.parquet.abc-1.promduck-tmp"));
        let all = names(&root, &Selection::default());
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            all,
            vec![
                s(".hidden", "2024-03-01/.hidden.parquet"),
                s("a%2Fb", "2024-03-01/a%2Fb.parquet"),
                s("a/b", "2024-03-01/a/b.parquet"),
                s("c/d/e", "2024-03-01/c/d/e.parquet"),
                s("sp ace", "2024-03-01/sp ace.parquet"),
                s("x%zz", "2024-03-01/x%zz.parquet"),
                s("é", "2024-03-01/é.parquet"),
                s(".hidden", "2024-03-02/%2Ehidden.parquet"),
                s("a%2Fb", "2024-03-02/a%252Fb.parquet"),
                s("a/b", "2024-03-02/a%2Fb.parquet"),
                s("sp ace", "2024-03-02/sp%20ace.parquet"),
            ]
        );
        // Looking names up finds exactly the files listing gives them.
        for name in [".hidden", "a%2Fb", "a/b", "c/d/e", "sp ace", "x%zz", "é"] {
            let want: Vec<_> = all.iter().filter(|(p, _)| p == name).cloned().collect();
            assert_eq!(names(&root, &proxies(&[name])), want, "{name}");
        }
        // Names that are no file, or that would leave the day folder.
        for name in [
            "a",
            "c/d",
            "../2024-03-01/sp ace",
            "/etc/passwd",
            "a//b",
            "./a/b",
            "x%ZZ",
        ] {
            assert_eq!(names(&root, &proxies(&[name])), vec![], "{name}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn each_file_is_selected_once() {
        let root = scratch("dedup");
        for day in ["2024-03-01", "2024-03-02"] {
            partition(&root.join(day).join("api.parquet"), day, "api", true);
            partition(&root.join(day).join("a%2Fb.parquet"), day, "a/b", true);
        }
        let sel = proxies(&["api", "api", "a/b", "a/b"]);
        assert_eq!(select_files(&root, &sel).unwrap().len(), 4);
        // Day folders reachable twice: a symlinked day, a symlink to the data dir,
        // a subfolder linking back up, a symlinked file.
        std::os::unix::fs::symlink(root.join("2024-03-01"), root.join("2024-03-05")).unwrap();
        std::os::unix::fs::symlink(root.join("2024-03-01"), root.join("2024-02-28")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("2024-03-09")).unwrap();
        std::os::unix::fs::symlink("..", root.join("2024-03-02").join("up")).unwrap();
        std::os::unix::fs::symlink("api.parquet", root.join("2024-03-02").join("same.parquet"))
            .unwrap();
        let all: Vec<_> = select_files(&root, &Selection::default())
            .unwrap()
            .into_iter()
            .map(|f| (f.day.to_string(), f.proxy))
            .collect();
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            all,
            vec![
                s("2024-03-01", "a/b"),
                s("2024-03-01", "api"),
                s("2024-03-02", "a/b"),
                s("2024-03-02", "api")
            ]
        );
        // Selected alone, a symlinked day is its own selection (its rows are checked when read).
        let sel = Selection {
            from: Some(d("2024-03-05")),
            to: Some(d("2024-03-05")),
            proxies: Some(vec!["api".into(), "api".into()]),
        };
        let got = select_files(&root, &sel).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, root.join("2024-03-05/api.parquet"));
        let e = read_partition(&got[0], &[Column::Value], None, 1024)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2024-03-05/api.parquet")
                && e.contains("`date`")
                && e.contains("2024-03-01")
                && e.contains("says 2024-03-05"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    fn file_with(
        root: &Path,
        day: &str,
        cols: Vec<(&str, ArrayRef)>,
        promduck: bool,
    ) -> PartitionFile {
        let path = root.join(day).join("p.parquet");
        let mut all: Vec<(&str, ArrayRef)> = vec![
            (
                "timestamp",
                Arc::new(Int64Array::from(vec![Some(1_000), None])) as ArrayRef,
            ),
            ("metric_name", Arc::new(Utf8::from(vec!["m", "m"]))),
            ("value", Arc::new(Float64Array::from(vec![1.5, 2.5]))),
        ];
        for (n, c) in cols {
            all.retain(|(m, _)| *m != n);
            all.push((n, c));
        }
        write(&path, all, promduck);
        PartitionFile {
            day: d(day),
            proxy: "p".into(),
            path,
            layout: Layout::Daily,
            filter: None,
            object: None,
        }
    }

    fn read_err(f: &PartitionFile, want: &[Column]) -> String {
        read_partition(f, want, None, 1024).unwrap_err().to_string()
    }

    #[test]
    fn conversions_are_exact_or_errors_naming_file_column_and_value() {
        let root = scratch("convert");
        let all = &Column::ALL;
        // A VARCHAR value that is not a number.
        let f = file_with(
            &root,
            "2024-03-01",
            vec![(
                "value",
                Arc::new(Utf8::from(vec![Some("1.25"), Some("abc")])),
            )],
            false,
        );
        let e = read_err(&f, &[Column::Value]);
        assert!(
            e.starts_with(&f.path.display().to_string())
                && e.contains("`value`")
                && e.contains("'abc'"),
            "{e}"
        );
        // Numbers in strings convert exactly; NULLs stay NULL.
        let f = file_with(
            &root,
            "2024-03-01",
            vec![("value", Arc::new(Utf8::from(vec![Some("1.25"), None])))],
            false,
        );
        let b = &read_partition(&f, &[Column::Value], None, 1024).unwrap()[0];
        assert_eq!(
            b.value.as_ref().unwrap(),
            &Float64Array::from(vec![Some(1.25), None])
        );
        // Integers a DOUBLE cannot hold exactly.
        let f = file_with(
            &root,
            "2024-03-01",
            vec![("value", Arc::new(Int64Array::from(vec![1, (1 << 53) + 1])))],
            false,
        );
        let e = read_err(&f, &[Column::Value]);
        assert!(
            e.contains("`value`") && e.contains("9007199254740993"),
            "{e}"
        );
        let f = file_with(
            &root,
            "2024-03-01",
            vec![("value", Arc::new(Int64Array::from(vec![1, 1 << 53])))],
            false,
        );
        let b = &read_partition(&f, &[Column::Value], None, 1024).unwrap()[0];
        assert_eq!(
            b.value.as_ref().unwrap(),
            &Float64Array::from(vec![1.0, 9007199254740992.0])
        );
        // A `date` that is not a date, in a query that does not even ask for it.
        let f = file_with(
            &root,
            "2024-03-01",
            vec![(
                "date",
                Arc::new(Utf8::from(vec!["2024-03-01", "not-a-date"])),
            )],
            false,
        );
        for want in [&[Column::Value][..], all] {
            let e = read_err(&f, want);
            assert!(
                e.contains("p.parquet") && e.contains("`date`") && e.contains("'not-a-date'"),
                "{e}"
            );
        }
        // A date other than the folder's.
        let f = file_with(
            &root,
            "2024-03-01",
            vec![(
                "date",
                Arc::new(Utf8::from(vec![Some("2024-03-01"), Some("2024-02-29")])),
            )],
            false,
        );
        let e = read_err(&f, &[Column::Value]);
        assert!(
            e.contains("`date`")
                && e.contains("row 1 holds 2024-02-29")
                && e.contains("says 2024-03-01"),
            "{e}"
        );
        // The folder's day (as text, as the Go tool wrote it) and NULL dates read fine.
        let f = file_with(
            &root,
            "2024-03-01",
            vec![("date", Arc::new(Utf8::from(vec![Some("2024-03-01"), None])))],
            false,
        );
        let b = &read_partition(&f, all, None, 1024).unwrap()[0];
        let day = crate::schema::date32(d("2024-03-01"));
        assert_eq!(
            b.date.as_ref().unwrap(),
            &Date32Array::from(vec![Some(day), None])
        );
        assert_eq!(
            b.timestamp_us.as_ref().unwrap(),
            &Int64Array::from(vec![Some(1_000_000), None])
        );
        // promduck's own files: statistics vouch for the day, or the rows are checked.
        let good = file_with(
            &root,
            "2024-03-02",
            vec![("date", Arc::new(Date32Array::from(vec![day + 1, day + 1])))],
            true,
        );
        assert_eq!(
            read_partition(&good, &[Column::Value], None, 1024).unwrap()[0].len,
            2
        );
        let bad = file_with(
            &root,
            "2024-03-03",
            vec![("date", Arc::new(Date32Array::from(vec![day + 2, day])))],
            true,
        );
        let e = read_err(&bad, &[Column::Value]);
        assert!(
            e.contains("row 1 holds 2024-03-01") && e.contains("says 2024-03-03"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn timestamps_never_overflow_silently() {
        let root = scratch("ts");
        let ts = |unit: TimeUnit, v: Vec<i64>| -> ArrayRef {
            use arrow::array::*;
            match unit {
                TimeUnit::Second => Arc::new(TimestampSecondArray::from(v)),
                TimeUnit::Millisecond => Arc::new(TimestampMillisecondArray::from(v)),
                TimeUnit::Microsecond => Arc::new(TimestampMicrosecondArray::from(v)),
                TimeUnit::Nanosecond => Arc::new(TimestampNanosecondArray::from(v)),
            }
        };
        // Exact conversions, sub-millisecond parts kept.
        for (unit, raw, us) in [
            (TimeUnit::Second, 1_709_251_200, 1_709_251_200_000_000),
            (
                TimeUnit::Millisecond,
                1_709_251_200_123,
                1_709_251_200_123_000,
            ),
            (
                TimeUnit::Microsecond,
                1_709_251_200_123_456,
                1_709_251_200_123_456,
            ),
            (TimeUnit::Nanosecond, -1_500, -2),
        ] {
            let f = file_with(
                &root,
                "2024-03-01",
                vec![("timestamp", ts(unit, vec![raw, 0]))],
                false,
            );
            let b = &read_partition(&f, &[Column::Timestamp], None, 1024).unwrap()[0];
            assert_eq!(b.timestamp_us.as_ref().unwrap().value(0), us, "{unit:?}");
        }
        for (col, needle) in [
            (
                Arc::new(Int64Array::from(vec![0, i64::MAX / 999])) as ArrayRef,
                "9232604641496272",
            ),
            (
                Arc::new(Int64Array::from(vec![0, i64::MIN])) as ArrayRef,
                "-9223372036854775808",
            ),
            (
                ts(TimeUnit::Second, vec![0, 9_223_372_036_855]),
                "9223372036855 (seconds",
            ),
            (
                ts(TimeUnit::Microsecond, vec![0, i64::MAX]),
                "9223372036854775807 (microseconds",
            ),
            (
                Arc::new(arrow::array::UInt64Array::from(vec![0, u64::MAX])) as ArrayRef,
                "18446744073709551615",
            ),
        ] {
            let f = file_with(&root, "2024-03-01", vec![("timestamp", col)], false);
            let e = read_err(&f, &[Column::Timestamp]);
            assert!(
                e.contains("p.parquet") && e.contains("`timestamp`") && e.contains(needle),
                "{e}"
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn partitions_are_read_a_batch_at_a_time() {
        let root = scratch("stream");
        let path = root.join("2024-03-01").join("p.parquet");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let n = 5_000usize;
        let day = crate::schema::date32(d("2024-03-01"));
        // A foreign file (dates checked row by row) of 1,000-row row groups; row 4,500 has another day.
        let batch = RecordBatch::try_from_iter(vec![
            (
                "timestamp",
                Arc::new(Int64Array::from_iter_values(
                    (0..n as i64).map(|i| 1_709_251_200_000 + i),
                )) as ArrayRef,
            ),
            (
                "metric_name",
                Arc::new(Utf8::from_iter_values((0..n).map(|i| {
                    if (3_000..3_010).contains(&i) {
                        "z"
                    } else {
                        "m"
                    }
                }))),
            ),
            (
                "value",
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            ),
            (
                "date",
                Arc::new(Date32Array::from_iter_values((0..n).map(|i| {
                    if i == 4_500 {
                        day - 1
                    } else {
                        day
                    }
                }))),
            ),
        ])
        .unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(1_000))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            Some(props),
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let file = PartitionFile {
            day: d("2024-03-01"),
            proxy: "p".into(),
            path,
            layout: Layout::Daily,
            filter: None,
            object: None,
        };

        // Batches come one per call; the bad date is found when its batch is read.
        let spec = Arc::new(ReadSpec {
            want: vec![Column::Value],
            metrics: None,
            batch_rows: 1_024,
        });
        let mut r = PartitionReader::open(&file, &spec).unwrap();
        let mut seen = 0;
        for _ in 0..4 {
            assert!(!r.is_exhausted());
            let b = r.next_batch().unwrap().unwrap();
            assert_eq!(b.value.as_ref().unwrap().value(0), seen as f64);
            seen += b.len;
        }
        assert_eq!(seen, 4_096);
        let e = r.next_batch().unwrap_err().to_string();
        assert!(
            e.contains("p.parquet")
                && e.contains("`date`")
                && e.contains("row 4500 holds 2024-02-29"),
            "{e}"
        );
        assert!(read_partition(&file, &[Column::Value], None, 1_024).is_err());

        // A metric filter skips batches it empties; the reader knows when it is done.
        let spec = Arc::new(ReadSpec {
            want: vec![Column::Value],
            metrics: Some(vec!["z".into()]),
            batch_rows: 4_096,
        });
        let mut r = PartitionReader::open(&file, &spec).unwrap();
        let b = r.next_batch().unwrap().unwrap();
        assert_eq!(
            b.value.as_ref().unwrap(),
            &Float64Array::from_iter_values((3_000..3_010).map(|i| i as f64))
        );
        assert!(!r.is_exhausted());
        assert!(r.next_batch().unwrap_err().to_string().contains("row 4500"));

        // A small file is exhausted right after its only batch, without another read.
        let small = file_with(&root, "2024-03-02", vec![], true);
        let spec = Arc::new(ReadSpec {
            want: Column::ALL.to_vec(),
            metrics: None,
            batch_rows: 2_048,
        });
        let mut r = PartitionReader::open(&small, &spec).unwrap();
        assert!(!r.is_exhausted());
        assert_eq!(r.next_batch().unwrap().unwrap().len, 2);
        assert!(r.is_exhausted());
        assert!(r.next_batch().unwrap().is_none());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn labels_without_keys_are_errors() {
        let root = scratch("labels");
        let t = DataType::Struct(
            vec![
                arrow::datatypes::Field::new("key", DataType::Utf8, true),
                arrow::datatypes::Field::new("value", DataType::Utf8, true),
            ]
            .into(),
        );
        let keys = Arc::new(Utf8::from(vec![Some("env"), None])) as ArrayRef;
        let vals = Arc::new(Utf8::from(vec![Some("prod"), Some("x")])) as ArrayRef;
        let DataType::Struct(fields) = t else {
            unreachable!()
        };
        let entries = arrow::array::StructArray::new(fields.clone(), vec![keys, vals], None);
        let list = arrow::array::ListArray::new(
            Arc::new(arrow::datatypes::Field::new(
                "item",
                DataType::Struct(fields),
                true,
            )),
            OffsetBuffer::new(vec![0, 1, 2].into()),
            Arc::new(entries),
            None,
        );
        let f = file_with(
            &root,
            "2024-03-01",
            vec![("labels", Arc::new(list) as ArrayRef)],
            false,
        );
        let e = read_err(&f, &[Column::Labels]);
        assert!(
            e.contains("p.parquet") && e.contains("`labels`") && e.contains("NULL"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
