//! Finding partitions for a query: which files hold the selected days and proxies.
//!
//! Pruning works on paths alone, so a file outside the selection is never opened
//! (DuckDB's own glob cannot skip files by a folder name that is not Hive-style;
//! on a year of partitions this is three orders of magnitude). Two layouts are
//! understood: promduck's (and the original Go tool's) `YYYY-MM-DD/<proxy>.parquet`,
//! and the Go tool's Hive-style `year=YYYY/month=MM/day=DD/app=<proxy>/*.parquet`.

use crate::error::{Error, Result};
use crate::layout::{decode_proxy, encode_proxy, is_temp_file, parse_day_dir, PARQUET_EXT};
use chrono::NaiveDate;
use std::path::{Path, PathBuf};

/// Which layout a file was found in (it decides how its columns are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `YYYY-MM-DD/<proxy>.parquet`.
    Daily,
    /// `year=/month=/day=/app=/<file>.parquet`.
    Hive,
}

/// One selected file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFile {
    pub day: NaiveDate,
    pub proxy: String,
    pub path: PathBuf,
    pub layout: Layout,
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Inclusive bounds; `None` is open.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// `None`: all proxies.
    pub proxies: Option<Vec<String>>,
}

impl Selection {
    fn day_ok(&self, d: NaiveDate) -> bool {
        self.from.map_or(true, |f| d >= f) && self.to.map_or(true, |t| d <= t)
    }
    fn proxy_ok(&self, p: &str) -> bool {
        self.proxies.as_ref().map_or(true, |ps| ps.iter().any(|x| x == p))
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|err| Error::io(dir, err))?;
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false)
            || (e.file_type().map(|t| t.is_symlink()).unwrap_or(false) && e.path().is_dir());
        out.push((e.file_name().to_string_lossy().into_owned(), e.path(), is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Lists the files of `data_dir` inside the selection, sorted by day then proxy.
/// A missing `data_dir` is an error naming it; an empty selection is no files.
pub fn select_files(data_dir: &Path, sel: &Selection) -> Result<Vec<PartitionFile>> {
    let meta = std::fs::metadata(data_dir).map_err(|e| Error::io(data_dir, e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!("{}: not a directory", data_dir.display())));
    }
    if let (Some(f), Some(t)) = (sel.from, sel.to) {
        if f > t {
            return Ok(vec![]);
        }
    }
    let mut out = Vec::new();
    for (name, path, is_dir) in read_dir_names(data_dir)? {
        if !is_dir {
            continue;
        }
        if let Some(day) = parse_day_dir(&name) {
            if sel.day_ok(day) {
                daily_files(day, &path, sel, &mut out)?;
            }
        } else if let Some(year) = name.strip_prefix("year=").and_then(|y| y.parse::<i32>().ok()) {
            hive_files(year, &path, sel, &mut out)?;
        }
    }
    out.sort_by(|a, b| (a.day, &a.proxy).cmp(&(b.day, &b.proxy)));
    Ok(out)
}

fn daily_files(day: NaiveDate, dir: &Path, sel: &Selection, out: &mut Vec<PartitionFile>) -> Result<()> {
    if let Some(proxies) = &sel.proxies {
        // Known names: look the files up directly instead of listing the folder.
        for p in proxies {
            let path = dir.join(format!("{}.{PARQUET_EXT}", encode_proxy(p)));
            if path.is_file() {
                out.push(PartitionFile { day, proxy: p.clone(), path, layout: Layout::Daily });
            }
        }
        return Ok(());
    }
    for (name, path, is_dir) in read_dir_names(dir)? {
        if is_dir || name.starts_with('.') || is_temp_file(&name) {
            continue;
        }
        let Some(stem) = name.strip_suffix(&format!(".{PARQUET_EXT}")) else { continue };
        let Some(proxy) = decode_proxy(stem) else { continue };
        out.push(PartitionFile { day, proxy, path, layout: Layout::Daily });
    }
    Ok(())
}

fn hive_value<'a>(name: &'a str, key: &str) -> Option<&'a str> {
    name.strip_prefix(key)?.strip_prefix('=')
}

fn hive_files(year: i32, ydir: &Path, sel: &Selection, out: &mut Vec<PartitionFile>) -> Result<()> {
    // Prune whole years and months before listing below them.
    let year_ok = |y: i32| sel.from.map_or(true, |f| y >= chrono::Datelike::year(&f)) && sel.to.map_or(true, |t| y <= chrono::Datelike::year(&t));
    if !year_ok(year) {
        return Ok(());
    }
    for (mname, mpath, mdir) in read_dir_names(ydir)? {
        let Some(month) = hive_value(&mname, "month").and_then(|m| m.parse::<u32>().ok()) else { continue };
        if !mdir {
            continue;
        }
        for (dname, dpath, ddir) in read_dir_names(&mpath)? {
            let Some(dd) = hive_value(&dname, "day").and_then(|d| d.parse::<u32>().ok()) else { continue };
            let Some(day) = NaiveDate::from_ymd_opt(year, month, dd) else { continue };
            if !ddir || !sel.day_ok(day) {
                continue;
            }
            for (aname, apath, adir) in read_dir_names(&dpath)? {
                let Some(app) = hive_value(&aname, "app").and_then(decode_proxy) else { continue };
                if !adir || !sel.proxy_ok(&app) {
                    continue;
                }
                for (fname, fpath, fdir) in read_dir_names(&apath)? {
                    if fdir || fname.starts_with('.') || is_temp_file(&fname) || !fname.ends_with(&format!(".{PARQUET_EXT}")) {
                        continue;
                    }
                    out.push(PartitionFile { day, proxy: app.clone(), path: fpath, layout: Layout::Hive });
                }
            }
        }
    }
    Ok(())
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
        let sel = Selection { from: Some(d("2024-03-02")), to: Some(d("2024-03-02")), proxies: None };
        let got: Vec<_> = select_files(&root, &sel).unwrap().into_iter().map(|f| (f.proxy, f.layout)).collect();
        assert_eq!(
            got,
            vec![("a".into(), Layout::Daily), ("b".into(), Layout::Daily), ("c".into(), Layout::Hive), ("we\"ird".into(), Layout::Daily)]
        );
        let sel = Selection { from: None, to: None, proxies: Some(vec!["we\"ird".into(), "zzz".into()]) };
        assert_eq!(select_files(&root, &sel).unwrap().len(), 3);
        let sel = Selection { from: Some(d("2024-03-03")), to: Some(d("2024-03-01")), proxies: None };
        assert!(select_files(&root, &sel).unwrap().is_empty());
        assert!(select_files(&root.join("missing"), &Selection::default()).unwrap_err().to_string().contains("missing"));
    }
}

// ---------------------------------------------------------------------------
// Reading a selected file into normalised Arrow columns.
// ---------------------------------------------------------------------------

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

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
    pub const ALL: [Column; 6] = [Column::Timestamp, Column::Date, Column::Proxy, Column::Metric, Column::Value, Column::Labels];

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
    pub timestamp_ms: Option<Int64Array>,
    pub date: Option<Date32Array>,
    pub proxy: Option<StringArray>,
    pub metric: Option<StringArray>,
    pub value: Option<Float64Array>,
    pub labels: Option<LabelColumn>,
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::parquet(path, format!("cannot read Parquet file: {e}"))
}

/// Reads one partition file: only the columns in `want` (plus `metric_name` when
/// filtering by `metrics`), in batches of at most `batch_rows` rows.
pub fn read_partition(file: &PartitionFile, want: &[Column], metrics: Option<&[String]>, batch_rows: usize) -> Result<Vec<ReadBatch>> {
    let path = file.path.as_path();
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // The embedded Arrow schema is not needed (columns are normalised below) and
    // decoding it is a measurable part of the per-file cost on small partitions.
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(f, options).map_err(|e| parquet_err(path, e))?;
    let schema = builder.schema().clone();
    let top_level: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut needed: Vec<&str> = want.iter().map(|c| c.name()).collect();
    if metrics.is_some() {
        needed.push(Column::Metric.name());
    }
    if !top_level.contains(&Column::Timestamp.name()) || !top_level.contains(&Column::Value.name()) {
        return Err(Error::parquet(path, "not a metrics partition: it has no `timestamp` and `value` columns"));
    }
    let roots: Vec<usize> = top_level.iter().enumerate().filter(|(_, n)| needed.contains(n)).map(|(i, _)| i).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder.with_projection(mask).with_batch_size(batch_rows.max(1)).build().map_err(|e| parquet_err(path, e))?;
    let mut out = Vec::new();
    for batch in reader {
        let mut batch = batch.map_err(|e| parquet_err(path, e))?;
        if let Some(ms) = metrics {
            let col = batch
                .column_by_name(Column::Metric.name())
                .ok_or_else(|| Error::parquet(path, "no `metric_name` column to filter on"))?;
            let names = to_utf8(col, path, "metric_name")?;
            let mask: BooleanArray = names.iter().map(|n| Some(n.is_some_and(|n| ms.iter().any(|m| m == n)))).collect();
            batch = filter_record_batch(&batch, &mask).map_err(|e| parquet_err(path, e))?;
            if batch.num_rows() == 0 {
                continue;
            }
        }
        out.push(normalise(&batch, file, want)?);
    }
    Ok(out)
}

fn to_utf8(col: &ArrayRef, path: &Path, name: &str) -> Result<StringArray> {
    let c = cast(col, &DataType::Utf8).map_err(|e| Error::parquet(path, format!("column `{name}`: {e}")))?;
    Ok(c.as_string::<i32>().clone())
}

fn normalise(batch: &RecordBatch, file: &PartitionFile, want: &[Column]) -> Result<ReadBatch> {
    let path = file.path.as_path();
    let n = batch.num_rows();
    let mut out = ReadBatch { len: n, timestamp_ms: None, date: None, proxy: None, metric: None, value: None, labels: None };
    for &c in want {
        let col = batch.column_by_name(c.name());
        match c {
            Column::Timestamp => {
                let col = col.ok_or_else(|| Error::parquet(path, "no `timestamp` column"))?;
                out.timestamp_ms = Some(timestamp_ms(col, path)?);
            }
            Column::Date => {
                out.date = Some(match col {
                    Some(col) => {
                        let c = cast(col, &DataType::Date32).map_err(|e| Error::parquet(path, format!("column `date`: {e}")))?;
                        c.as_primitive::<arrow::datatypes::Date32Type>().clone()
                    }
                    None => Date32Array::from(vec![crate::schema::date32(file.day); n]),
                });
            }
            Column::Proxy => {
                out.proxy = Some(match col {
                    Some(col) => to_utf8(col, path, "api_proxy")?,
                    None => StringArray::from_iter_values(std::iter::repeat(file.proxy.as_str()).take(n)),
                });
            }
            Column::Metric => {
                let col = col.ok_or_else(|| Error::parquet(path, "no `metric_name` column"))?;
                out.metric = Some(to_utf8(col, path, "metric_name")?);
            }
            Column::Value => {
                let col = col.ok_or_else(|| Error::parquet(path, "no `value` column"))?;
                let c = cast(col, &DataType::Float64).map_err(|e| Error::parquet(path, format!("column `value`: {e}")))?;
                out.value = Some(c.as_primitive::<arrow::datatypes::Float64Type>().clone());
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

/// Epoch milliseconds from an integer (the seed's BIGINT ms) or a timestamp column.
fn timestamp_ms(col: &ArrayRef, path: &Path) -> Result<Int64Array> {
    let scale = |a: &Int64Array, f: fn(i64) -> i64| -> Int64Array { a.unary(f) };
    Ok(match col.data_type() {
        DataType::Int64 => col.as_primitive::<arrow::datatypes::Int64Type>().clone(),
        DataType::Int32 | DataType::UInt32 | DataType::UInt64 | DataType::Int16 => {
            cast(col, &DataType::Int64).map_err(|e| Error::parquet(path, e))?.as_primitive::<arrow::datatypes::Int64Type>().clone()
        }
        DataType::Timestamp(unit, _) => {
            let raw = cast(col, &DataType::Int64).map_err(|e| Error::parquet(path, e))?;
            let raw = raw.as_primitive::<arrow::datatypes::Int64Type>();
            match unit {
                TimeUnit::Second => scale(raw, |v| v * 1000),
                TimeUnit::Millisecond => raw.clone(),
                TimeUnit::Microsecond => scale(raw, |v| v.div_euclid(1000)),
                TimeUnit::Nanosecond => scale(raw, |v| v.div_euclid(1_000_000)),
            }
        }
        other => return Err(Error::parquet(path, format!("column `timestamp` has unsupported type {other}"))),
    })
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
            let entries = l.values().as_struct_opt().ok_or_else(|| bad("expected a list of key/value structs"))?.clone();
            (l.offsets().clone(), entries, l.nulls().cloned())
        }
        other => return Err(bad(&format!("unsupported type {other}"))),
    };
    if entries.num_columns() < 2 {
        return Err(bad("entries need a key and a value"));
    }
    let key_col = entries.column_by_name("key").or_else(|| entries.column_by_name("keys")).unwrap_or(entries.column(0));
    let val_col = entries.column_by_name("value").or_else(|| entries.column_by_name("values")).unwrap_or(entries.column(1));
    Ok(LabelColumn { offsets, keys: to_utf8(key_col, path, "labels.key")?, values: to_utf8(val_col, path, "labels.value")?, nulls })
}
