//! What an archive holds, from the shell (`promduck-collector --inventory`): its days,
//! proxies, metrics, rows and bytes, its compacted months and its holes — the
//! question a new user asks first, answered without writing SQL.
//!
//! The partitions are resolved exactly as every reader resolves them (one source per
//! (day, proxy), see [`crate::reader::select`]), so the counts are what `prom_metrics`
//! returns for the same range. Rows are counted from the files' `date`, `api_proxy`
//! and `metric_name` columns (dictionary-encoded, so cheap to decode); no other column
//! is read.

use crate::error::Result;
use crate::reader::{Column, Layout, PartitionFile, ReadSpec, Selection};
use crate::storage::Storage;
use chrono::NaiveDate;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One (day, proxy) partition: the rows of each metric, and where they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub date: NaiveDate,
    pub api_proxy: String,
    /// Rows per metric name (empty for a partition written empty: Prometheus had no data).
    pub metrics: BTreeMap<String, u64>,
    pub rows: u64,
    /// The bytes of its daily or Hive files; `None` for a day of a compacted month
    /// (its rows share the month's file).
    pub bytes: Option<u64>,
    /// `daily`, `hive` (the Go tool's layout) or `month` (a compacted month's file).
    pub source: &'static str,
}

/// A compacted month: its file and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Month {
    /// The month's first day.
    pub month: NaiveDate,
    pub path: String,
    pub bytes: Option<u64>,
}

/// The archive's contents over the range asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub location: String,
    pub partitions: Vec<Partition>,
    pub compacted_months: Vec<Month>,
    /// Files read (daily, Hive and month files) and their bytes (as listed; a file
    /// whose size the listing did not give is not counted in `bytes`).
    pub files: u64,
    pub bytes: u64,
    /// For each day from the first to the last day asked (or held), the proxies the
    /// archive holds no partition of; only when the proxies are known (the config's).
    pub holes: Vec<(NaiveDate, Vec<String>)>,
}

impl Inventory {
    /// Rows per metric over every partition.
    pub fn metrics(&self) -> BTreeMap<&str, u64> {
        let mut out = BTreeMap::new();
        for p in &self.partitions {
            for (m, n) in &p.metrics {
                *out.entry(m.as_str()).or_insert(0) += n;
            }
        }
        out
    }

    /// The proxies with at least one partition, sorted.
    pub fn proxies(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .partitions
            .iter()
            .map(|p| p.api_proxy.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The days with at least one partition, sorted.
    pub fn days(&self) -> Vec<NaiveDate> {
        let mut v: Vec<NaiveDate> = self.partitions.iter().map(|p| p.date).collect();
        v.dedup();
        v
    }

    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.rows).sum()
    }
}

/// Which partitions should exist, for the holes: the config's proxies, every day from
/// the first asked (else the first held) to the last asked, else `until` (the last
/// complete day: an archive that stopped growing shows the days it missed since).
pub struct Expected<'a> {
    pub proxies: &'a [String],
    pub until: NaiveDate,
}

/// Takes the inventory of `sel` (days and proxies as `prom_metrics` selects them), with
/// the holes against `expected` when given. Files are read on `threads` threads.
pub fn take(
    storage: &dyn Storage,
    sel: &Selection,
    expected: Option<Expected<'_>>,
    threads: usize,
) -> Result<Inventory> {
    let files = if storage.exists()? {
        storage.select(sel)?
    } else {
        vec![]
    };
    let spec = Arc::new(ReadSpec {
        want: vec![Column::Date, Column::Proxy, Column::Metric],
        metrics: None,
        batch_rows: 8192,
    });
    // (day, proxy) → (metric → rows, source)
    type Counts = BTreeMap<(NaiveDate, String), Slot>;
    let counts: Mutex<Counts> = Mutex::new(BTreeMap::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let first_error: Mutex<Option<crate::error::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, 16).min(files.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(f) = files.get(i) else { break };
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    break;
                }
                match count_file(storage, f, &spec) {
                    Ok(found) => {
                        if let Ok(mut c) = counts.lock() {
                            merge(&mut c, f, found);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let counts = counts.into_inner().unwrap_or_default();
    let partitions: Vec<Partition> = counts
        .into_iter()
        .map(|((date, api_proxy), slot)| Partition {
            date,
            api_proxy,
            rows: slot.metrics.values().sum(),
            metrics: slot.metrics,
            bytes: slot.bytes,
            source: slot.source,
        })
        .collect();
    let compacted_months: Vec<Month> = files
        .iter()
        .filter(|f| f.layout == Layout::Month)
        .map(|f| Month {
            month: f.day,
            path: f.path.display().to_string(),
            bytes: file_bytes(f),
        })
        .collect();
    let holes = match expected {
        None => vec![],
        Some(e) => {
            let first = sel.from.or_else(|| partitions.first().map(|p| p.date));
            let last = sel.to.unwrap_or(e.until);
            match first {
                Some(a) if a <= last => storage.holes(e.proxies, a, last)?,
                _ => vec![],
            }
        }
    };
    Ok(Inventory {
        location: storage.url(),
        files: files.len() as u64,
        bytes: files.iter().filter_map(file_bytes).sum(),
        partitions,
        compacted_months,
        holes,
    })
}

/// Rows per (day, proxy, metric) of one file. A partition written empty has no rows
/// but is a partition: it is returned with no metric.
fn count_file(
    storage: &dyn Storage,
    f: &PartitionFile,
    spec: &Arc<ReadSpec>,
) -> Result<BTreeMap<(NaiveDate, String), BTreeMap<String, u64>>> {
    let mut out: BTreeMap<(NaiveDate, String), BTreeMap<String, u64>> = BTreeMap::new();
    if f.layout != Layout::Month {
        out.entry((f.day, f.proxy.clone())).or_default();
    }
    let Some(mut reader) = open(storage, f, spec)? else {
        return Ok(out); // removed since the listing (a compaction): nothing to count
    };
    while let Some(b) = reader.next_batch()? {
        let (Some(date), Some(proxy), Some(metric)) = (&b.date, &b.proxy, &b.metric) else {
            continue;
        };
        for i in 0..b.len {
            let day = date.value_as_date(i).unwrap_or(f.day);
            *out.entry((day, proxy.value(i).to_string()))
                .or_default()
                .entry(metric.value(i).to_string())
                .or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// Opens a listed file; `None` if it vanished since the listing (see
/// [`Storage::open_listed`]).
fn open(
    storage: &dyn Storage,
    f: &PartitionFile,
    spec: &Arc<ReadSpec>,
) -> Result<Option<crate::reader::PartitionReader>> {
    match storage.open_listed(f, spec) {
        Ok(r) => Ok(Some(r)),
        Err(crate::error::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What is known of one (day, proxy) while its files are counted.
struct Slot {
    metrics: BTreeMap<String, u64>,
    bytes: Option<u64>,
    source: &'static str,
}

fn merge(
    counts: &mut BTreeMap<(NaiveDate, String), Slot>,
    f: &PartitionFile,
    found: BTreeMap<(NaiveDate, String), BTreeMap<String, u64>>,
) {
    let source = match f.layout {
        Layout::Daily => "daily",
        Layout::Hive => "hive",
        Layout::Month => "month",
    };
    for (key, metrics) in found {
        let own_file = f.layout != Layout::Month && key == (f.day, f.proxy.clone());
        let slot = counts.entry(key).or_insert_with(|| Slot {
            metrics: BTreeMap::new(),
            bytes: None,
            source,
        });
        if own_file {
            if let Some(b) = file_bytes(f) {
                slot.bytes = Some(slot.bytes.unwrap_or(0) + b);
            }
        }
        for (m, n) in metrics {
            *slot.metrics.entry(m).or_insert(0) += n;
        }
    }
}

fn file_bytes(f: &PartitionFile) -> Option<u64> {
    match &f.object {
        Some(o) => o.size,
        None => std::fs::metadata(&f.path).ok().map(|m| m.len()),
    }
}
