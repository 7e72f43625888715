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
