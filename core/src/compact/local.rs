//! A folder's side of compaction: the month file written to a locked temporary
//! file and renamed, daily files removed only if still the ones read (renamed to a
//! hidden name first), crashed removals recovered, the Go tool's Hive months.

use super::*;

/// The months before `before` (a month's first day) that have daily files (or a
/// daily file being removed, or, once compacted, day folders left to remove), oldest
/// first: what `--compact` compacts.
pub fn months_with_daily_files(
    fs: &Fs,
    output_dir: &Path,
    before: NaiveDate,
) -> Result<Vec<NaiveDate>> {
    let entries = match fs.read_dir(output_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(output_dir, e)),
    };
    let mut months = std::collections::BTreeSet::new();
    for e in entries {
        let Some(day) = parse_day_dir(&e.file_name().to_string_lossy()) else {
            continue;
        };
        if day >= before || months.contains(&month_of(day)) || !fs.is_dir(&e.path) {
            continue;
        }
        let Ok(files) = fs.read_dir(&e.path) else {
            continue;
        };
        let has_data = files.iter().any(|f| {
            let n = f.file_name().to_string_lossy().into_owned();
            (n.ends_with(&format!(".{PARQUET_EXT}")) && !crate::layout::is_temp_file(&n))
                || n.ends_with(DEL_MARKER)
                || fs.is_dir(&f.path)
        });
        if has_data || is_compacted(fs, output_dir, day) {
            months.insert(month_of(day));
        }
    }
    months.extend(
        hive_months(fs, output_dir)
            .into_iter()
            .filter(|m| *m < before),
    );
    Ok(months.into_iter().collect())
}

/// The Go tool's Hive month folders (`year=YYYY/month=MM`) of `output_dir`, each with
/// its month: those holding a data file are months compaction takes in.
pub(super) fn hive_month_dirs(fs: &Fs, output_dir: &Path) -> Vec<(NaiveDate, PathBuf)> {
    let mut out = Vec::new();
    for y in fs.read_dir(output_dir).unwrap_or_default() {
        let Some(year) = parse_hive_year(&y.file_name().to_string_lossy()) else {
            continue;
        };
        for m in fs.read_dir(&y.path).unwrap_or_default() {
            let first = parse_hive_month(&m.file_name().to_string_lossy())
                .and_then(|mm| NaiveDate::from_ymd_opt(year, mm, 1));
            if let Some(first) = first {
                out.push((first, m.path.clone()));
            }
        }
    }
    out
}

/// The months with a file in the Go tool's Hive layout.
pub(super) fn hive_months(fs: &Fs, output_dir: &Path) -> Vec<NaiveDate> {
    let has_file = |dir: &Path| {
        fs.read_dir(dir).unwrap_or_default().iter().any(|d| {
            fs.read_dir(&d.path).unwrap_or_default().iter().any(|a| {
                fs.read_dir(&a.path)
                    .unwrap_or_default()
                    .iter()
                    .any(|f| crate::layout::is_hive_data_file(&f.file_name().to_string_lossy()))
            })
        })
    };
    // A compacted month's Hive files are shadowed by its month file (its first
    // compaction took them in): nothing to compact there.
    hive_month_dirs(fs, output_dir)
        .into_iter()
        .filter(|(first, dir)| !is_compacted(fs, output_dir, *first) && has_file(dir))
        .map(|(first, _)| first)
        .collect()
}

/// Removes the empty folders (`day=`, `app=`, the month's own) the Hive files a
/// month file took in leave behind; anything else in them stays.
pub(super) fn remove_empty_hive_dirs(fs: &Fs, output_dir: &Path, first: NaiveDate) {
    for (m, dir) in hive_month_dirs(fs, output_dir) {
        if m != first {
            continue;
        }
        for d in fs.read_dir(&dir).unwrap_or_default() {
            for a in fs.read_dir(&d.path).unwrap_or_default() {
                let _ = fs.remove_dir(&a.path);
            }
            let _ = fs.remove_dir(&d.path);
        }
        let _ = fs.remove_dir(&dir);
    }
}

/// A folder's side of compaction: a lock per month folder (taken by `write_month`).
pub(super) struct LocalMonths<'a> {
    pub(super) fs: &'a Fs,
    pub(super) output_dir: &'a Path,
}

impl MonthCompactor for LocalMonths<'_> {
    type Taken = Absorbed;

    fn write_month(
        &self,
        first: NaiveDate,
        storage: &StorageConfig,
        opts: &CompactOptions,
        out: &mut MonthOutcome,
    ) -> Result<Vec<Absorbed>> {
        write_month(self.fs, self.output_dir, first, storage, opts, out)
    }

    fn remove(&self, first: NaiveDate, taken: &[Absorbed]) -> Result<usize> {
        remove_absorbed(self.fs, self.output_dir, first, taken)
    }
}

/// Compacts the given months (each must have closed: see [`check_closed`]): every
/// month file is written first, then, after one wait of `remove_daily_after`, the
/// daily files are removed. `cancel` is asked between months and while waiting;
/// a month already written stays written (its daily files go at the next run).
pub fn compact_months(
    fs: &Fs,
    output_dir: &Path,
    months: &[NaiveDate],
    storage: &StorageConfig,
    opts: &CompactOptions,
    cancel: &Cancel,
) -> Vec<MonthOutcome> {
    let outcomes = months
        .iter()
        .map(|m| {
            let first = month_of(*m);
            MonthOutcome::new(first, month_path(output_dir, first))
        })
        .collect();
    drive(
        &LocalMonths { fs, output_dir },
        outcomes,
        storage,
        opts,
        cancel,
    )
}

/// A daily file taken into a month file, as it was when read.
#[derive(Debug, Clone)]
pub(super) struct Absorbed {
    pub(super) path: PathBuf,
    pub(super) id: Identity,
}

/// What tells one file from another at the same path: a collector replaces a file
/// by renaming a new one over it (a new inode, a new modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) len: u64,
    pub(super) mtime_ns: i128,
}

impl Identity {
    pub(super) fn of(m: &std::fs::Metadata) -> Identity {
        use std::os::unix::fs::MetadataExt;
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        }
    }
}

/// Writes the month file (steps 1 of the module docs) and returns the daily files
/// it took in.
pub(super) fn write_month(
    fs: &Fs,
    output_dir: &Path,
    first: NaiveDate,
    storage: &StorageConfig,
    opts: &CompactOptions,
    out: &mut MonthOutcome,
) -> Result<Vec<Absorbed>> {
    let month_dir = output_dir.join(month_dir_name(first));
    match fs.metadata(output_dir) {
        Ok(m) if m.is_dir() => {}
        Err(e) if crate::fs::is_refusal(&e) => return Err(Error::io(output_dir, e)),
        _ => {
            return Err(Error::Invalid(format!(
                "{}: no such directory",
                output_dir.display()
            )))
        }
    }
    let created = match fs.metadata(&month_dir) {
        Ok(_) => false,
        Err(e) if crate::fs::is_refusal(&e) => return Err(Error::io(&month_dir, e)),
        Err(_) => true,
    };
    fs.create_dir_all(&month_dir)
        .map_err(|e| Error::io(&month_dir, e))?;
    let written = write_month_in(fs, output_dir, first, storage, opts, out, created);
    if written.is_err() && created {
        // A failed first compaction leaves no empty month folder behind (removing
        // it succeeds only if nothing is in it).
        let _ = fs.remove_dir(&month_dir);
    }
    written
}

/// [`write_month`] once the month folder exists (`created`: by this call).
pub(super) fn write_month_in(
    fs: &Fs,
    output_dir: &Path,
    first: NaiveDate,
    storage: &StorageConfig,
    opts: &CompactOptions,
    out: &mut MonthOutcome,
    created: bool,
) -> Result<Vec<Absorbed>> {
    let name = month_dir_name(first);
    let month_dir = output_dir.join(&name);
    let target = month_path(output_dir, first);
    // One compaction of a month at a time (a lock on the month folder itself, so
    // nothing is left behind): another one (a second collector, a sharded daemon,
    // prom_compact) is waited for, then what it left is taken in. Where the
    // filesystem has no such locks, compaction goes on without.
    let lock = fs
        .open_dir(&month_dir)
        .map_err(|e| Error::io(&month_dir, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::info!(month = %name, "another compaction of this month is running: waiting for it");
            lock.lock().map_err(|e| Error::io(&month_dir, e))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::debug!(month = %name, error = %e, "cannot lock the month folder")
        }
    }
    crate::writer::remove_stale_temp_files(fs, &month_dir);
    recover_removals(fs, output_dir, first)?;
    let started = Instant::now();
    let dailies = daily_files_of_month(fs, output_dir, first)?;
    if dailies.is_empty() {
        remove_empty_day_dirs(fs, output_dir, first);
        if created {
            let _ = fs.remove_dir(&month_dir);
        }
        if fs.is_file(&target) {
            describe(fs, &target, out);
        } else {
            out.status = MonthStatus::Empty;
        }
        return Ok(vec![]);
    }

    // Every (proxy, day) of the month, from the daily files' footers and the previous
    // month file's `api_proxy`/`date` columns.
    let mut rows = Vec::with_capacity(dailies.len());
    for f in &dailies {
        rows.push(footer_rows(fs, &f.path)?);
    }
    let previous = fs.is_file(&target).then(|| target.clone());
    let previous_keys = previous
        .as_deref()
        .map(|p| month_keys(fs, p, first))
        .transpose()?;
    let mut keys = plan_keys(&dailies, previous_keys)?;
    for days in keys.values_mut() {
        for k in days.values_mut() {
            k.daily_rows = k.daily.iter().map(|&i| rows[i]).sum();
        }
    }

    tracing::debug!(month = %name, daily_files = dailies.len(), seconds = started.elapsed().as_secs_f64(), "listed and counted");
    let tmp = crate::writer::create_temp_file(fs, &month_dir, &target)?;
    let mut writer = Batched::new(tmp.as_file(), storage, opts, &name, tmp.path())?;
    let mut cursor = previous
        .as_deref()
        .map(|p| MonthCursor::open(fs, p))
        .transpose()?;
    let order: Vec<(usize, usize)> = keys
        .values()
        .flat_map(|days| {
            days.values()
                .flat_map(|k| k.daily.iter().map(|&i| (i, rows[i])))
        })
        .collect();
    let mut source = LocalDailies {
        rows,
        prefetch: Prefetch::new(fs, &dailies, order),
    };
    let taken = write_partitions(
        &mut keys,
        &mut source,
        cursor.as_mut(),
        &mut writer,
        opts,
        out,
        tmp.path(),
    )?;
    let meta = writer.close(tmp.path())?;
    out.row_groups = meta.num_row_groups();
    if storage.durable {
        tmp.as_file()
            .sync_data()
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    tmp.persist(&target).map_err(|e| Error::io(&target, e))?;
    if storage.durable {
        crate::writer::sync_dir(fs, &month_dir)?;
        if created {
            crate::writer::sync_dir(fs, output_dir)?;
        }
    }
    out.bytes = fs.metadata(&target).map(|m| m.len()).unwrap_or(0);
    tracing::debug!(month = %name, seconds = started.elapsed().as_secs_f64(), "month file visible");
    drop(lock);
    Ok(taken
        .into_iter()
        .map(|(i, id)| Absorbed {
            path: dailies[i].path.clone(),
            id,
        })
        .collect())
}

/// Daily files: row counts from their footers (read up front), rows read ahead in
/// parallel windows.
pub(super) struct LocalDailies<'a> {
    pub(super) rows: Vec<usize>,
    pub(super) prefetch: Prefetch<'a>,
}

impl DailySource for LocalDailies<'_> {
    type Id = Identity;

    fn rows(&mut self, i: usize) -> Result<usize> {
        Ok(self.rows[i])
    }

    fn take(&mut self, i: usize) -> Result<(RecordBatch, Identity)> {
        self.prefetch.next(i)
    }
}

/// Row count, size and row groups of an existing month file, for an outcome.
pub(super) fn describe(fs: &Fs, path: &Path, out: &mut MonthOutcome) {
    if let Ok(f) = fs.open(path) {
        out.bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        if let Ok(meta) = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&f)
        {
            out.rows = meta.file_metadata().num_rows().max(0) as u64;
            out.row_groups = meta.num_row_groups();
        }
    }
}

pub(super) fn footer_rows(fs: &Fs, path: &Path) -> Result<usize> {
    let f = fs.open(path).map_err(|e| Error::io(path, e))?;
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&f)
        .map_err(|e| Error::parquet(path, format!("cannot read Parquet footer: {e}")))?;
    Ok(meta.file_metadata().num_rows().max(0) as usize)
}

/// A daily file's rows, checked to be its (day, proxy), and its identity as read.
pub(super) fn read_daily(fs: &Fs, f: &PartitionFile) -> Result<(RecordBatch, Identity)> {
    let path = f.path.as_path();
    let file = fs.open(path).map_err(|e| Error::io(path, e))?;
    let id = Identity::of(&file.metadata().map_err(|e| Error::io(path, e))?);
    let reader = PartitionReader::open_file(f, &partition_spec(None), file)?;
    Ok((partition_rows(reader)?, id))
}

/// The (proxy, day, rows) runs of a month file, in file order.
pub(super) fn month_keys(
    fs: &Fs,
    path: &Path,
    first: NaiveDate,
) -> Result<Vec<(String, i32, usize)>> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::parquet(path, format!("cannot read the month file: {e}"))
    };
    let file = fs.open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?;
    let mask = key_columns(builder.parquet_schema(), builder.schema()).map_err(|e| bad(&e))?;
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(|e| bad(&e))?;
    month_keys_from(
        Box::new(reader.map(|b| b.map_err(|e| e.to_string()))),
        first,
        path,
    )
}

/// Random characters for a removal's hidden name.
pub(super) fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Removes the daily files a month file took in (step 2 of the module docs), each
/// only if it is still the file that was read; then the month's empty day folders.
pub(super) fn remove_absorbed(
    fs: &Fs,
    output_dir: &Path,
    first: NaiveDate,
    absorbed: &[Absorbed],
) -> Result<usize> {
    let started = Instant::now();
    let mut removed = 0;
    for a in absorbed {
        if remove_if_same(fs, &a.path, a.id)? {
            removed += 1;
        }
    }
    remove_empty_day_dirs(fs, output_dir, first);
    remove_empty_hive_dirs(fs, output_dir, first);
    tracing::debug!(month = %month_dir_name(first), removed, seconds = started.elapsed().as_secs_f64(), "daily files removed");
    Ok(removed)
}

/// Renames `path` to a hidden name, then unlinks it if it is the file `id` describes,
/// else puts it back (unless a newer file took its name meanwhile). A file replaced
/// by a collector after compaction read it is never removed.
pub(super) fn remove_if_same(fs: &Fs, path: &Path, id: Identity) -> Result<bool> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(false);
    };
    let hidden = dir.join(format!(
        ".{}.{}{DEL_MARKER}",
        name.to_string_lossy(),
        random_suffix()
    ));
    match fs.rename(path, &hidden) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    }
    let same = fs
        .symlink_metadata(&hidden)
        .map(|m| Identity::of(&m) == id)
        .unwrap_or(false);
    if same {
        fs.remove_file(&hidden).map_err(|e| Error::io(&hidden, e))?;
        return Ok(true);
    }
    put_back(fs, &hidden, path)?;
    Ok(false)
}

/// Puts a hidden file back at `path`, unless a file is there now (which is newer:
/// it was renamed there after this one was taken away), then removes the hidden name.
pub(super) fn put_back(fs: &Fs, hidden: &Path, path: &Path) -> Result<()> {
    match fs.hard_link(hidden, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    fs.remove_file(hidden).map_err(|e| Error::io(hidden, e))
}

/// The day folders of a month.
pub(super) fn day_dirs(fs: &Fs, output_dir: &Path, first: NaiveDate) -> Vec<PathBuf> {
    let Ok(entries) = fs.read_dir(output_dir) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = entries
        .into_iter()
        .filter(|e| {
            parse_day_dir(&e.file_name().to_string_lossy()).is_some_and(|d| month_of(d) == first)
        })
        .map(|e| e.path)
        .collect();
    out.sort();
    out
}

/// Puts back (or removes) daily files a crash left under a removal's hidden name.
pub(super) fn recover_removals(fs: &Fs, output_dir: &Path, first: NaiveDate) -> Result<()> {
    for dir in day_dirs(fs, output_dir, first) {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let n = e.file_name().to_string_lossy().into_owned();
            let Some(inner) = n.strip_prefix('.').and_then(|x| x.strip_suffix(DEL_MARKER)) else {
                continue;
            };
            let Some((orig, _)) = inner.rsplit_once('.') else {
                continue;
            };
            if orig.is_empty() {
                continue;
            }
            put_back(fs, &e.path, &dir.join(orig))?;
        }
    }
    Ok(())
}

/// Removes the month's day folders that hold nothing but stale temporary files.
pub(super) fn remove_empty_day_dirs(fs: &Fs, output_dir: &Path, first: NaiveDate) {
    for dir in day_dirs(fs, output_dir, first) {
        crate::writer::remove_stale_temp_files(fs, &dir);
        let _ = fs.remove_dir(&dir);
    }
}

/// Removes temporary files left by an interrupted compaction in every month folder.
pub fn remove_stale_temp_files_in_month_dirs(fs: &Fs, output_dir: &Path) -> usize {
    let Ok(entries) = fs.read_dir(output_dir) else {
        return 0;
    };
    entries
        .iter()
        .filter(|e| crate::layout::parse_month_dir(&e.file_name().to_string_lossy()).is_some())
        .map(|e| crate::writer::remove_stale_temp_files(fs, &e.path))
        .sum()
}

/// Whether `day`'s month has a month file: its (day, proxy) partitions count as
/// present (the collector's catch-up must not collect them again).
pub fn is_compacted(fs: &Fs, output_dir: &Path, day: NaiveDate) -> bool {
    fs.is_file(&month_path(output_dir, day))
}
