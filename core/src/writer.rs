//! Atomic Parquet writes. A partition is written to a hidden temporary file in its
//! own folder, fsynced, renamed over the old file, and the folder fsynced: a reader
//! sees the old file or the new one, never half of either, and a crash leaves at
//! most a temporary file that readers skip and the next run removes.
//!
//! Temporary names carry a random part and are created exclusively (`O_EXCL`), so
//! two collectors sharing a volume never write the same temporary file, even when
//! their PIDs are equal (containers that are each PID 1). A writer holds an
//! advisory lock on its temporary file until the rename; clean-up removes only
//! temporary files nobody holds, which is exact across PID namespaces, unlike a
//! PID in the name.

use crate::config::{Compression, StorageConfig};
use crate::error::{Error, Result};
use crate::fs::{Fs, TempFile};
use crate::layout::{TMP_MARKER, TMP_RAND_CHARS};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{GzipLevel, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::SchemaDescriptor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

/// The Parquet codec of a configured compression (for writers of other files than
/// partitions, such as month files).
pub fn parquet_codec(c: Compression) -> parquet::basic::Compression {
    parquet_compression(c)
}

/// A locked temporary file for `path` in `dir`, named and swept like a partition's
/// (see [`remove_stale_temp_files`]); persist it over `path` to publish it.
pub fn create_temp_file(fs: &Fs, dir: &Path, path: &Path) -> Result<TempFile> {
    create_temp(fs, dir, path)
}

/// Creates `.<file name>.<random>.promduck-tmp` next to `path`, exclusively, and
/// locks it (see the module docs). Permissions follow the umask like any new file.
fn create_temp(fs: &Fs, dir: &Path, path: &Path) -> Result<TempFile> {
    create_temp_io(fs, dir, path).map_err(|(at, e)| Error::io(at, e))
}

/// [`create_temp`] with the I/O error's kind kept (a missing folder is `NotFound`)
/// and the path it concerns.
fn create_temp_io(
    fs: &Fs,
    dir: &Path,
    path: &Path,
) -> std::result::Result<TempFile, (PathBuf, std::io::Error)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    // Another process's clean-up may take the lock between our create and our lock
    // and unlink the file: after locking, the name must still be our file, else try
    // again with a new name (a write then never fails for someone else's sweep).
    let mut attempts = 0;
    loop {
        let tmp = fs
            .temp_file(dir, &prefix, TMP_MARKER, TMP_RAND_CHARS)
            .map_err(|e| (dir.join(format!(".{name}.*{TMP_MARKER}")), e))?;
        tmp.as_file()
            .lock()
            .map_err(|e| (tmp.path().to_path_buf(), e))?;
        if still_named(fs, &tmp) || attempts >= 5 {
            return Ok(tmp);
        }
        attempts += 1;
    }
}

/// Whether the temporary file's name still refers to the file we hold.
fn still_named(fs: &Fs, tmp: &TempFile) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs.symlink_metadata(tmp.path()), tmp.as_file().metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Writes `batch` to `path` atomically, creating its folder if needed, and makes
/// the rename durable.
pub fn write_partition(
    fs: &Fs,
    path: &Path,
    batch: &RecordBatch,
    storage: &StorageConfig,
) -> Result<()> {
    write_partition_unsynced_rename(fs, path, batch, storage)?;
    match path.parent() {
        Some(dir) if storage.durable => sync_dir(fs, dir),
        _ => Ok(()),
    }
}

/// Like [`write_partition`] but leaves the folder's fsync to the caller, who can
/// then make many renames in one folder durable with one [`sync_dir`]. The file's
/// contents are synced before the rename, so a crash leaves the old file or the
/// complete new one, never a torn one.
pub fn write_partition_unsynced_rename(
    fs: &Fs,
    path: &Path,
    batch: &RecordBatch,
    storage: &StorageConfig,
) -> Result<()> {
    let staged = stage_partition(fs, path, batch, storage)?;
    if storage.durable {
        staged.sync()?;
    }
    staged.publish()
}

/// A partition encoded into its locked temporary file next to its path, not yet
/// visible: [`StagedPartition::sync`] makes its contents durable and
/// [`StagedPartition::publish`] renames it over the partition. Dropped unpublished,
/// the temporary file is removed; left by a crash, the next run sweeps it.
///
/// Staging many partitions before syncing them lets one journal commit of the
/// filesystem cover many files, instead of one commit per file while the others
/// are being created.
#[derive(Debug)]
pub struct StagedPartition {
    tmp: TempFile,
    path: PathBuf,
}

impl StagedPartition {
    /// The partition's path (where [`StagedPartition::publish`] puts it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the temporary file's contents durable (`fdatasync`).
    pub fn sync(&self) -> Result<()> {
        self.tmp
            .as_file()
            .sync_data()
            .map_err(|e| Error::io(self.tmp.path(), e))
    }

    /// Renames the file over the partition's path; the rename is durable once the
    /// folder is synced ([`sync_dir`]). On error the temporary file is removed and
    /// the old partition is untouched.
    pub fn publish(self) -> Result<()> {
        let path = self.path;
        self.tmp.persist(&path).map_err(|e| Error::io(&path, e))
    }
}

/// Encodes `batch` into a new locked temporary file next to `path` (creating the
/// folder if needed), neither synced nor renamed yet: see [`StagedPartition`].
pub fn stage_partition(
    fs: &Fs,
    path: &Path,
    batch: &RecordBatch,
    storage: &StorageConfig,
) -> Result<StagedPartition> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Invalid(format!("{} has no parent folder", path.display())))?;
    // The folder usually exists (a day's partitions share it): create it only when
    // the temporary file cannot be created for want of it (then a folder that
    // cannot be created is the error, as it names the cause).
    let tmp = match create_temp_io(fs, dir, path) {
        Ok(tmp) => tmp,
        Err((at, e)) => {
            if e.kind() != std::io::ErrorKind::NotFound && fs.is_dir(dir) {
                return Err(Error::io(at, e));
            }
            fs.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            create_temp(fs, dir, path)?
        }
    };
    encode_partition(tmp.as_file(), tmp.path(), batch, storage)?;
    Ok(StagedPartition {
        tmp,
        path: path.to_path_buf(),
    })
}

/// fsyncs a folder, making the renames done in it durable.
pub fn sync_dir(fs: &Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// What every partition file of one compression shares, prepared once: the
/// writer's properties with their key-value metadata (promduck's version, then the
/// encoded Arrow schema, as `ArrowWriter` appends it) and the Parquet schema. Each
/// file then starts from clones of them instead of converting and encoding the
/// schema again (the bytes written are the same: checked in the tests).
struct PartitionFormat {
    props: WriterProperties,
    parquet_schema: SchemaDescriptor,
}

/// The properties of a partition file without the Arrow schema's entry.
fn base_properties(compression: Compression) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(parquet_compression(compression))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(
                crate::layout::CREATED_BY_KEY.to_string(),
                crate::VERSION.to_string(),
            ),
            KeyValue::new(crate::layout::WHOLE_KEY.to_string(), "true".to_string()),
        ]))
        .build()
}

impl PartitionFormat {
    fn new(compression: Compression) -> parquet::errors::Result<PartitionFormat> {
        let schema = crate::schema::partition_schema();
        let mut props = base_properties(compression);
        let parquet_schema = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)?;
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        Ok(PartitionFormat {
            props,
            parquet_schema,
        })
    }

    /// The format of partition files (the partition schema) compressed with `c`.
    fn get(c: Compression) -> Option<&'static PartitionFormat> {
        static FORMATS: [OnceLock<Option<PartitionFormat>>; 5] = [const { OnceLock::new() }; 5];
        let i = match c {
            Compression::None => 0,
            Compression::Snappy => 1,
            Compression::Gzip => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        };
        FORMATS[i]
            .get_or_init(|| PartitionFormat::new(c).ok())
            .as_ref()
    }
}

/// Encodes `batch` as a partition's Parquet file into `out` (a file, or a buffer
/// sent to object storage with one PUT) and returns `out`; `at` names it in errors.
pub fn encode_partition<W: std::io::Write + Send>(
    out: W,
    at: &Path,
    batch: &RecordBatch,
    storage: &StorageConfig,
) -> Result<W> {
    let schema = batch.schema();
    let partition = crate::schema::partition_schema();
    let format = if std::sync::Arc::ptr_eq(&schema, &partition) || *schema == *partition {
        PartitionFormat::get(storage.compression)
    } else {
        None
    };
    let mut writer = match format {
        Some(f) => ArrowWriter::try_new_with_options(
            out,
            schema,
            ArrowWriterOptions::new()
                .with_properties(f.props.clone())
                .with_parquet_schema(f.parquet_schema.clone())
                .with_skip_arrow_metadata(true),
        ),
        // Another schema: prepared from scratch.
        None => ArrowWriter::try_new(out, schema, Some(base_properties(storage.compression))),
    }
    .map_err(|e| Error::parquet(at, e))?;
    write_slices(&mut writer, at, batch, storage)?;
    writer.into_inner().map_err(|e| Error::parquet(at, e))
}

/// Writes `batch` in slices, closing a row group whenever it reaches
/// `storage.rowGroupSize` bytes.
fn write_slices<W: std::io::Write + Send>(
    writer: &mut ArrowWriter<W>,
    at: &Path,
    batch: &RecordBatch,
    storage: &StorageConfig,
) -> Result<()> {
    let limit = storage.row_group_size as usize;
    let row_bytes = (batch.get_array_memory_size() / batch.num_rows().max(1)).max(1);
    let slice_rows = (limit / row_bytes / 4).clamp(1, MAX_SLICE_ROWS);
    let mut offset = 0;
    while offset < batch.num_rows() {
        let len = slice_rows.min(batch.num_rows() - offset);
        writer
            .write(&batch.slice(offset, len))
            .map_err(|e| Error::parquet(at, e))?;
        if writer.in_progress_size() >= limit {
            writer.flush().map_err(|e| Error::parquet(at, e))?;
        }
        offset += len;
    }
    Ok(())
}

/// Removes stale temporary files (see [`remove_stale_temp_files`]) in every day
/// folder of `output_dir`; run at start so an interrupted write leaves nothing
/// behind until its day happens to be collected again.
pub fn remove_stale_temp_files_everywhere(fs: &Fs, output_dir: &Path) -> usize {
    let Ok(entries) = fs.read_dir(output_dir) else {
        return 0;
    };
    entries
        .iter()
        .filter(|e| crate::layout::parse_day_dir(&e.file_name().to_string_lossy()).is_some())
        .map(|e| remove_stale_temp_files(fs, &e.path))
        .sum()
}

/// Whether partitions can be written under `output_dir`, checked without leaving
/// anything behind: a temporary file is created (and removed) in `output_dir`, or
/// in its nearest existing ancestor when it does not exist yet.
pub fn check_writable(fs: &Fs, output_dir: &Path) -> Result<()> {
    let mut probe = output_dir.to_path_buf();
    loop {
        match fs.metadata(&probe) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "{}: not a directory, so output directory {} cannot be created",
                    probe.display(),
                    output_dir.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match probe.parent() {
                Some(p) if !p.as_os_str().is_empty() => probe = p.to_path_buf(),
                _ => probe = std::path::PathBuf::from("."),
            },
            Err(e) => return Err(Error::io(&probe, e)),
        }
    }
    fs.temp_file(&probe, ".promduck-check.", TMP_MARKER, 6)
        .map(drop)
        .map_err(|e| Error::Invalid(format!("cannot create files in {}: {e}", probe.display())))
}

/// Removes temporary files left in `dir` by writers that no longer run (a crash, a
/// SIGKILL): those whose advisory lock nobody holds. A file a live writer holds,
/// in this process or any other on this host, is left alone.
pub fn remove_stale_temp_files(fs: &Fs, dir: &Path) -> usize {
    let Ok(entries) = fs.read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !crate::layout::is_temp_file(&name) {
            continue;
        }
        let Ok(f) = fs.open(&entry.path) else {
            continue;
        };
        // Holding the lock while unlinking: no writer can be using it now, and a
        // writer that had only created it (not yet locked) fails its rename
        // cleanly instead of publishing anything.
        if f.try_lock().is_ok() && fs.remove_file(&entry.path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Fs;
    use crate::schema::PartitionBuilder;
    use crate::series::Series;
    use chrono::NaiveDate;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use std::fs::File;
    use std::path::PathBuf;

    fn batch(rows: usize) -> RecordBatch {
        let mut b = PartitionBuilder::new();
        let s = Series {
            labels: [("environment".to_string(), "prod".to_string())]
                .into_iter()
                .collect(),
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
        for (c, name) in [
            (Compression::Zstd, "ZSTD"),
            (Compression::Gzip, "GZIP"),
            (Compression::Snappy, "SNAPPY"),
            (Compression::Lz4, "LZ4_RAW"),
        ] {
            let path = dir.join("2024-03-01").join("p.parquet");
            let storage = StorageConfig {
                output_dir: dir.clone(),
                compression: c,
                row_group_size: 20_000,
                durable: true,
                s3: Default::default(),
            };
            write_partition(&Fs::unconfined(), &path, &batch(10_000), &storage).unwrap();
            let r = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
            let md = r.metadata();
            assert_eq!(md.file_metadata().num_rows(), 10_000);
            assert!(
                md.num_row_groups() > 1,
                "small rowGroupSize must split row groups"
            );
            assert!(format!("{:?}", md.row_group(0).column(0).compression()).starts_with(name));
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("2024-03-01"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    /// The file `ArrowWriter` writes when set up from scratch for every file (as
    /// partitions were written before their format was prepared once).
    fn encode_from_scratch(batch: &RecordBatch, storage: &StorageConfig) -> Vec<u8> {
        let props = base_properties(storage.compression);
        let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).unwrap();
        write_slices(&mut w, Path::new("t"), batch, storage).unwrap();
        w.into_inner().unwrap()
    }

    #[test]
    fn prepared_format_writes_the_same_bytes() {
        for c in [
            Compression::None,
            Compression::Snappy,
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            for (rows, row_group_size) in [(0, 1 << 20), (3, 1 << 20), (10_000, 20_000)] {
                let storage = StorageConfig {
                    output_dir: PathBuf::from("."),
                    compression: c,
                    row_group_size,
                    durable: false,
                    s3: Default::default(),
                };
                let b = batch(rows);
                let got = encode_partition(Vec::new(), Path::new("t"), &b, &storage).unwrap();
                assert_eq!(got, encode_from_scratch(&b, &storage), "{c:?}, {rows} rows");
                // A batch with an equal schema that is another `Arc` (a merged one).
                let copy = RecordBatch::try_new(
                    std::sync::Arc::new((*b.schema()).clone()),
                    b.columns().to_vec(),
                )
                .unwrap();
                let got = encode_partition(Vec::new(), Path::new("t"), &copy, &storage).unwrap();
                assert_eq!(got, encode_from_scratch(&b, &storage), "{c:?}, {rows} rows");
            }
        }
        // Another schema is written from scratch, with its own Arrow schema.
        let other = RecordBatch::try_from_iter([(
            "x",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2]))
                as arrow::array::ArrayRef,
        )])
        .unwrap();
        let storage = StorageConfig {
            output_dir: PathBuf::from("."),
            compression: Compression::Zstd,
            row_group_size: 1 << 20,
            durable: false,
            s3: Default::default(),
        };
        let got = encode_partition(Vec::new(), Path::new("t"), &other, &storage).unwrap();
        assert_eq!(got, encode_from_scratch(&other, &storage));
    }

    #[test]
    fn staged_partitions_appear_only_when_published() {
        let dir = tmpdir("staged");
        let storage = StorageConfig {
            output_dir: dir.clone(),
            compression: Compression::Zstd,
            row_group_size: 1 << 20,
            durable: true,
            s3: Default::default(),
        };
        // The day's folder does not exist yet: staging creates it.
        let path = dir.join("2024-03-01").join("p.parquet");
        let staged = stage_partition(&Fs::unconfined(), &path, &batch(5), &storage).unwrap();
        assert_eq!(staged.path(), path);
        assert!(!path.exists());
        staged.sync().unwrap();
        staged.publish().unwrap();
        let r = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(r.metadata().file_metadata().num_rows(), 5);
        // Dropped unpublished: nothing is left, the old file is untouched.
        let staged = stage_partition(&Fs::unconfined(), &path, &batch(7), &storage).unwrap();
        drop(staged);
        let names: Vec<_> = std::fs::read_dir(dir.join("2024-03-01"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("p.parquet")]);
        let r = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(r.metadata().file_metadata().num_rows(), 5);
        // A folder that cannot be created is an error naming it.
        let blocker = dir.join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let e = stage_partition(
            &Fs::unconfined(),
            &blocker.join("d").join("p.parquet"),
            &batch(1),
            &storage,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with(&*blocker.join("d").to_string_lossy()), "{e}");
    }

    #[test]
    fn stale_temp_files_are_removed_held_ones_kept() {
        let dir = tmpdir("stale");
        std::fs::create_dir_all(&dir).unwrap();
        let dead = dir.join(format!(".p.parquet.abcdefghijkl{TMP_MARKER}"));
        std::fs::write(&dead, b"x").unwrap();
        let held = create_temp(&Fs::unconfined(), &dir, &dir.join("q.parquet")).unwrap();
        assert_eq!(remove_stale_temp_files(&Fs::unconfined(), &dir), 1);
        assert!(!dead.exists());
        assert!(
            held.path().exists(),
            "a temporary file a writer holds must stay"
        );
        drop(held);
    }

    #[test]
    fn temp_names_are_unique_and_sized_as_layout_says() {
        let dir = tmpdir("names");
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("p.parquet");
        let a = create_temp(&Fs::unconfined(), &dir, &target).unwrap();
        let b = create_temp(&Fs::unconfined(), &dir, &target).unwrap();
        assert_ne!(a.path(), b.path());
        for t in [&a, &b] {
            let name = t.path().file_name().unwrap().to_str().unwrap().to_string();
            assert!(crate::layout::is_temp_file(&name), "{name}");
            assert_eq!(
                name.len(),
                "p.parquet".len() + crate::layout::TMP_NAME_OVERHEAD,
                "{name}"
            );
        }
    }

    #[test]
    fn longest_storable_proxy_name_can_be_written() {
        use crate::layout::{
            check_proxy_name, partition_path, MAX_FILE_NAME, PARQUET_EXT, TMP_NAME_OVERHEAD,
        };
        let dir = tmpdir("long");
        let name = "p".repeat(MAX_FILE_NAME - TMP_NAME_OVERHEAD - PARQUET_EXT.len() - 1);
        check_proxy_name(&name).unwrap();
        let day = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let path = partition_path(&dir, day, &name);
        let storage = StorageConfig {
            output_dir: dir.clone(),
            compression: Compression::Zstd,
            row_group_size: 1 << 20,
            durable: false,
            s3: Default::default(),
        };
        write_partition(&Fs::unconfined(), &path, &batch(3), &storage).unwrap();
        assert!(path.is_file());
    }
}
