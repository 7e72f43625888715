//! Atomic Parquet writes. A partition is written to a hidden temporary file in its
//! own folder, fsynced, renamed over the old file, and the folder fsynced: a reader
//! sees the old file or the new one, never half of either, and a crash leaves at
//! most a temporary file that readers skip and the next run removes.

use crate::config::{Compression, StorageConfig};
use crate::error::{Error, Result};
use crate::layout::TMP_MARKER;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{GzipLevel, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// At most this many rows go to the Parquet writer at a time; between slices the
/// row group's size is checked against `storage.rowGroupSize` (bytes, as the
/// original tool's setting), so slices are also kept well below that size.
const MAX_SLICE_ROWS: usize = 4096;

fn parquet_compression(c: Compression) -> parquet::basic::Compression {
    use parquet::basic::Compression as P;
    match c {
        Compression::None => P::UNCOMPRESSED,
        Compression::Snappy => P::SNAPPY,
        Compression::Gzip => P::GZIP(GzipLevel::default()),
        Compression::Lz4 => P::LZ4_RAW,
        Compression::Zstd => P::ZSTD(ZstdLevel::default()),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}-{n}{TMP_MARKER}", std::process::id()))
}

/// Writes `batch` to `path` atomically, creating its folder if needed, and makes
/// the rename durable.
pub fn write_partition(path: &Path, batch: &RecordBatch, storage: &StorageConfig) -> Result<()> {
    write_partition_unsynced_rename(path, batch, storage)?;
    match path.parent() {
        Some(dir) if storage.durable => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Like [`write_partition`] but leaves the folder's fsync to the caller, who can
/// then make many renames in one folder durable with one [`sync_dir`]. The file's
/// contents are synced before the rename, so a crash leaves the old file or the
/// complete new one, never a torn one.
pub fn write_partition_unsynced_rename(path: &Path, batch: &RecordBatch, storage: &StorageConfig) -> Result<()> {
    let dir = path.parent().ok_or_else(|| Error::Invalid(format!("{} has no parent folder", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = temp_path(path);
    let result = write_file(&tmp, batch, storage).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a folder, making the renames done in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

fn write_file(tmp: &Path, batch: &RecordBatch, storage: &StorageConfig) -> Result<()> {
    let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let props = WriterProperties::builder()
        .set_compression(parquet_compression(storage.compression))
        .set_key_value_metadata(Some(vec![KeyValue::new("created_by_promduck".to_string(), crate::VERSION.to_string())]))
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| Error::parquet(tmp, e))?;
    let limit = storage.row_group_size as usize;
    let row_bytes = (batch.get_array_memory_size() / batch.num_rows().max(1)).max(1);
    let slice_rows = (limit / row_bytes / 4).clamp(1, MAX_SLICE_ROWS);
    let mut offset = 0;
    while offset < batch.num_rows() {
        let len = slice_rows.min(batch.num_rows() - offset);
        writer.write(&batch.slice(offset, len)).map_err(|e| Error::parquet(tmp, e))?;
        if writer.in_progress_size() >= limit {
            writer.flush().map_err(|e| Error::parquet(tmp, e))?;
        }
        offset += len;
    }
    let file = writer.into_inner().map_err(|e| Error::parquet(tmp, e))?;
    if storage.durable {
        file.sync_data().map_err(|e| Error::io(tmp, e))?;
    }
    Ok(())
}

/// Removes temporary files left in `dir` by processes that no longer run (a crash,
/// a SIGKILL). Files of a live process are left alone.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !crate::layout::is_temp_file(&name) {
            continue;
        }
        let Some(stem) = name.strip_suffix(TMP_MARKER) else { continue };
        let pid = stem.rsplit('.').next().and_then(|s| s.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists());
        if !alive && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::Series;
    use crate::schema::PartitionBuilder;
    use chrono::NaiveDate;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn batch(rows: usize) -> RecordBatch {
        let mut b = PartitionBuilder::new();
        let s = Series {
            labels: [("environment".to_string(), "prod".to_string())].into_iter().collect(),
            points: (0..rows as i64).map(|i| (i * 60_000, i as f64)).collect(),
        };
        b.push_series("m", &s, &[]);
        b.finish("p", NaiveDate::from_ymd_opt(2024, 3, 1).unwrap())
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("promduck-writer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn writes_with_codec_and_row_groups() {
        let dir = tmpdir("codec");
        for (c, name) in [(Compression::Zstd, "ZSTD"), (Compression::Gzip, "GZIP"), (Compression::Snappy, "SNAPPY"), (Compression::Lz4, "LZ4_RAW")] {
            let path = dir.join("2024-03-01").join("p.parquet");
            let storage = StorageConfig { output_dir: dir.clone(), compression: c, row_group_size: 20_000, durable: true };
            write_partition(&path, &batch(10_000), &storage).unwrap();
            let r = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
            let md = r.metadata();
            assert_eq!(md.file_metadata().num_rows(), 10_000);
            assert!(md.num_row_groups() > 1, "small rowGroupSize must split row groups");
            assert!(format!("{:?}", md.row_group(0).column(0).compression()).starts_with(name));
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("2024-03-01")).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let dir = tmpdir("stale");
        std::fs::create_dir_all(&dir).unwrap();
        let dead = dir.join(format!(".p.parquet.999999999-0{TMP_MARKER}"));
        let live = dir.join(format!(".p.parquet.{}-7{TMP_MARKER}", std::process::id()));
        std::fs::write(&dead, b"x").unwrap();
        std::fs::write(&live, b"x").unwrap();
        assert_eq!(remove_stale_temp_files(&dir), 1);
        assert!(!dead.exists());
        assert!(live.exists());
    }
}
