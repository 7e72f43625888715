//! Finding partitions for a query: which files hold the selected days and proxies.
//!
//! Pruning works on paths alone, so a file outside the selection is never opened
//! (DuckDB's own glob cannot skip files by a folder name that is not Hive-style;
//! on a year of partitions this is three orders of magnitude). Two layouts are
//! understood: promduck's (and the original Go tool's) `YYYY-MM-DD/<proxy>.parquet`,
//! and the Go tool's Hive-style `year=YYYY/month=MM/day=DD/app=<proxy>/*.parquet`.
//!
//! Proxy names from file names (every name is parsed by `crate::layout`). promduck
//! encodes names ([`crate::layout::encode_proxy`]); the Go tool used the raw name,
//! so `sp ace.parquet`, `é.parquet`, `.hidden.parquet` are its proxies and a proxy
//! `a/b` is the file `a/b.parquet` in a subfolder. A file
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

use super::{Layout, PartitionFile, Selection};
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::layout::{
    ambiguous_stem, is_hive_data_file, is_temp_file, month_end, month_file_name, month_of,
    month_path, parquet_stem, parse_day_dir, parse_hive_app, parse_hive_day, parse_hive_month,
    parse_hive_year, parse_month_dir, partition_file_name, raw_relative_file, CREATED_BY_KEY,
};
use chrono::NaiveDate;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A folder entry. `symlink`: the entry itself is a symbolic link (its kind is its
/// target's; a dangling link counts as a file, so reading it fails naming it).
struct Entry {
    name: String,
    path: PathBuf,
    is_dir: bool,
    symlink: bool,
    /// A symlink the file-system handle refuses to follow (it leads outside the
    /// allowed folders): an error naming it as soon as the entry is used, never
    /// skipped silently (DuckDB's own glob refuses it too).
    blocked: bool,
}

impl Entry {
    /// Errs, naming the entry, if it is [`Entry::blocked`].
    fn usable(&self, fs: &Fs) -> Result<()> {
        if self.blocked {
            if let Err(e) = fs.metadata(&self.path) {
                return Err(Error::io(&self.path, e));
            }
        }
        Ok(())
    }
}

fn list_dir(fs: &Fs, dir: &Path) -> Result<Vec<Entry>> {
    let entries = fs.read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in entries {
        // An entry gone since the listing (a temporary file renamed meanwhile) was skipped.
        let symlink = e.is_symlink();
        let path = e.path;
        let mut blocked = false;
        let is_dir = if symlink {
            match fs.metadata(&path) {
                Ok(m) => m.is_dir(),
                Err(err) => {
                    blocked = crate::fs::is_refusal(&err);
                    false
                }
            }
        } else {
            e.kind == crate::fs::Kind::Dir
        };
        out.push(Entry {
            name: e.name.to_string_lossy().into_owned(),
            path,
            is_dir,
            symlink,
            blocked,
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
    fn child(&self, fs: &Fs, e: &Entry) -> Real {
        if e.symlink {
            Real {
                path: fs.canonicalize(&e.path).unwrap_or_else(|_| e.path.clone()),
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
pub fn written_by_promduck(fs: &Fs, path: &Path) -> Option<bool> {
    let f = fs.open(path).ok()?;
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
fn top_level_proxy(fs: &Fs, stem: &str, path: &Path) -> String {
    match ambiguous_stem(stem) {
        Some(decoded) if written_by_promduck(fs, path) != Some(false) => decoded,
        _ => stem.to_string(),
    }
}

/// Lists the files of `data_dir` inside the selection, sorted by day then proxy.
/// A missing `data_dir` is an error naming it; an empty selection is no files.
/// A compacted month is its month file (carrying the selection); its day folders
/// are then not listed (see the module docs).
pub fn select_files(fs: &Fs, data_dir: &Path, sel: &Selection) -> Result<Vec<PartitionFile>> {
    select(fs, data_dir, sel, true)
}

/// The daily partitions inside `sel` (daily files, else the Go tool's Hive files),
/// whether or not their month is compacted: in a compacted month, the daily files a
/// collection wrote since (see `Storage::select_pending`); Hive files there are
/// shadowed by the month file (its first compaction took them in).
pub fn select_daily_files(fs: &Fs, data_dir: &Path, sel: &Selection) -> Result<Vec<PartitionFile>> {
    Ok(select(fs, data_dir, sel, false)?
        .into_iter()
        .filter(|f| f.layout != Layout::Month)
        .collect())
}

/// The daily partitions of the month starting on `first`, whether or not the month
/// has a month file: what compaction takes in. Each (day, proxy) resolved as a
/// reader resolves it: its daily file (`YYYY-MM-DD/<proxy>.parquet`), else the Go
/// tool's Hive files (`year=/month=/day=/app=<proxy>/*.parquet`).
pub fn daily_files_of_month(
    fs: &Fs,
    data_dir: &Path,
    first: NaiveDate,
) -> Result<Vec<PartitionFile>> {
    let sel = Selection {
        from: Some(first),
        to: Some(month_end(first)),
        proxies: None,
    };
    select_daily_files(fs, data_dir, &sel)
}

/// The month file of `day`'s month, if there is one: what a reader uses instead of a
/// daily file that vanished after it was listed (compaction removed it once the
/// month file had taken in its rows), restricted to that file's day and proxy.
pub fn month_fallback(fs: &Fs, file: &PartitionFile) -> Option<PartitionFile> {
    if file.layout != Layout::Daily {
        return None;
    }
    // <data_dir>/<YYYY-MM-DD>/<name>.parquet, `name` possibly in subfolders (raw Go-tool names).
    let day_dir = file.path.ancestors().find(|a| {
        a.file_name()
            .is_some_and(|n| parse_day_dir(&n.to_string_lossy()) == Some(file.day))
    })?;
    let path = month_path(day_dir.parent()?, file.day);
    fs.is_file(&path).then(|| PartitionFile {
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

fn select(
    fs: &Fs,
    data_dir: &Path,
    sel: &Selection,
    month_files: bool,
) -> Result<Vec<PartitionFile>> {
    let meta = fs.metadata(data_dir).map_err(|e| Error::io(data_dir, e))?;
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
        path: fs
            .canonicalize(data_dir)
            .map_err(|e| Error::io(data_dir, e))?,
        direct: true,
    };
    let mut found = Found {
        files: Vec::new(),
        via_symlink: false,
    };
    let entries = list_dir(fs, data_dir)?;
    // Month files first, before any day folder is listed: a month whose file is
    // seen is read from it alone; one whose file is not (yet) seen is read from
    // daily files, which compaction removes only after its month file is visible.
    let mut compacted: HashSet<NaiveDate> = HashSet::new();
    for e in entries.iter().filter(|e| e.blocked) {
        // A link out where the selection would look: an error naming it.
        let used = parse_month_dir(&e.name)
            .is_some_and(|first| month_files && sel.day_ok_any(first, month_end(first)))
            || parse_day_dir(&e.name).is_some_and(|day| sel.day_ok(day))
            || parse_hive_year(&e.name).is_some();
        if used {
            e.usable(fs)?;
        }
    }
    // (Without `month_files`, compacted months are still found: the Go tool's Hive
    // files in them are shadowed, as for every reader, while daily files are listed.)
    for e in entries.iter().filter(|e| e.is_dir) {
        let Some(first) = parse_month_dir(&e.name) else {
            continue;
        };
        if !sel.day_ok_any(first, month_end(first)) {
            continue;
        }
        let file_name = month_file_name(first);
        let path = e.path.join(&file_name);
        if !fs.is_file(&path) {
            continue;
        }
        compacted.insert(first);
        if !month_files {
            continue;
        }
        let from = sel.from.filter(|f| *f > first);
        let to = sel.to.filter(|t| *t < month_end(first));
        let filter = (from.is_some() || to.is_some() || sel.proxies.is_some()).then(|| {
            Arc::new(Selection {
                from,
                to,
                proxies: sel.proxies.clone(),
            })
        });
        let real = root.child(fs, e);
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
    for e in entries {
        if !e.is_dir {
            continue;
        }
        if let Some(day) = parse_day_dir(&e.name) {
            if sel.day_ok(day) && !(month_files && compacted.contains(&month_of(day))) {
                let real = root.child(fs, &e);
                if root.path.starts_with(&real.path) {
                    continue; // a day folder linked to the data dir or above it
                }
                match &sel.proxies {
                    Some(proxies) => daily_lookup(fs, day, &e.path, &real, proxies, &mut found)?,
                    None => {
                        daily_list(fs, day, &e.path, &real, "", &mut HashSet::new(), &mut found)?
                    }
                }
            }
        } else if let Some(year) = parse_hive_year(&e.name) {
            let hive_sel = HiveSelection {
                sel: &sel,
                compacted: &compacted,
            };
            hive_files(
                fs,
                year,
                &e.path,
                &root.child(fs, &e),
                &hive_sel,
                &mut found,
            )?;
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
    // One source per (day, proxy): a daily file shadows the Go tool's Hive files of
    // the same partition (a collector pointed at the Go tool's folder writes the
    // daily file after taking in the Hive rows), as a month file shadows both.
    let daily: HashSet<(NaiveDate, String)> = out
        .iter()
        .filter(|f| f.layout == Layout::Daily)
        .map(|f| (f.day, f.proxy.clone()))
        .collect();
    if !daily.is_empty() {
        out.retain(|f| f.layout != Layout::Hive || !daily.contains(&(f.day, f.proxy.clone())));
    }
    out.sort_by(|a, b| (a.day, &a.proxy, &a.path).cmp(&(b.day, &b.proxy, &b.path)));
    Ok(out)
}

/// Known names: look their files up directly instead of listing the folder. Each
/// name has up to two candidates, promduck's encoded file name and the Go tool's
/// raw one; a candidate is kept only if its proxy (as listing resolves it) is the
/// requested name.
fn daily_lookup(
    fs: &Fs,
    day: NaiveDate,
    dir: &Path,
    real: &Real,
    proxies: &[String],
    found: &mut Found,
) -> Result<()> {
    for p in proxies {
        let encoded = partition_file_name(p);
        let mut candidates = vec![encoded.clone()];
        if let Some(raw) = raw_relative_file(p) {
            if raw != encoded {
                candidates.push(raw);
            }
        }
        for name in candidates {
            let path = dir.join(&name);
            let lmeta = match fs.symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if crate::fs::is_refusal(&e) => return Err(Error::io(&path, e)),
                Err(_) => continue,
            };
            let symlink = lmeta.file_type().is_symlink();
            if symlink || name.contains('/') {
                match fs.metadata(&path) {
                    Ok(m) if m.is_file() => {}
                    Err(e) if crate::fs::is_refusal(&e) => return Err(Error::io(&path, e)),
                    _ => continue,
                }
            } else if !lmeta.is_file() {
                continue;
            }
            let proxy = match parquet_stem(&name) {
                Some(stem) if !stem.contains('/') => top_level_proxy(fs, stem, &path),
                Some(stem) => stem.to_string(),
                None => continue,
            };
            if &proxy != p {
                continue;
            }
            let file_real = if symlink || name.contains('/') {
                let canon = fs.canonicalize(&path).unwrap_or_else(|_| path.clone());
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
    fs: &Fs,
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
    for e in list_dir(fs, dir)? {
        e.usable(fs)?;
        if e.is_dir {
            let sub = real.child(fs, &e);
            if real.path.starts_with(&sub.path) {
                continue; // a link to an enclosing folder (`..`, the data dir): never followed
            }
            daily_list(
                fs,
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
        let Some(stem) = parquet_stem(&e.name) else {
            continue;
        };
        if stem.is_empty() {
            continue;
        }
        let proxy = if prefix.is_empty() {
            top_level_proxy(fs, stem, &e.path)
        } else {
            format!("{prefix}{stem}")
        };
        let file_real = real.child(fs, &e);
        found.push(
            PartitionFile::daily(day, proxy, e.path, Layout::Daily),
            file_real,
        );
    }
    Ok(())
}

/// What [`hive_files`] lists: the selection's days outside compacted months.
struct HiveSelection<'a> {
    sel: &'a Selection,
    compacted: &'a HashSet<NaiveDate>,
}

fn hive_files(
    fs: &Fs,
    year: i32,
    ydir: &Path,
    yreal: &Real,
    hive: &HiveSelection<'_>,
    found: &mut Found,
) -> Result<()> {
    let sel = hive.sel;
    // Prune whole years and months before listing below them.
    let year_ok = |y: i32| {
        sel.from.is_none_or(|f| y >= chrono::Datelike::year(&f))
            && sel.to.is_none_or(|t| y <= chrono::Datelike::year(&t))
    };
    if !year_ok(year) {
        return Ok(());
    }
    for m in list_dir(fs, ydir)? {
        m.usable(fs)?;
        let Some(month) = parse_hive_month(&m.name) else {
            continue;
        };
        if !m.is_dir {
            continue;
        }
        let mreal = yreal.child(fs, &m);
        for d in list_dir(fs, &m.path)? {
            d.usable(fs)?;
            let Some(dd) = parse_hive_day(&d.name) else {
                continue;
            };
            let Some(day) = NaiveDate::from_ymd_opt(year, month, dd) else {
                continue;
            };
            if !d.is_dir || !sel.day_ok(day) || hive.compacted.contains(&month_of(day)) {
                continue;
            }
            let dreal = mreal.child(fs, &d);
            for a in list_dir(fs, &d.path)? {
                a.usable(fs)?;
                let Some(app) = parse_hive_app(&a.name) else {
                    continue;
                };
                if !a.is_dir || !sel.proxy_ok(&app) {
                    continue;
                }
                let areal = dreal.child(fs, &a);
                for f in list_dir(fs, &a.path)? {
                    f.usable(fs)?;
                    if f.is_dir || !is_hive_data_file(&f.name) {
                        continue;
                    }
                    let freal = areal.child(fs, &f);
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
