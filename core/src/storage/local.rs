//! The archive in a folder on the local disk (the original tool's layout).
//!
//! The guarantees live in `writer.rs` (hidden, locked temporary file; fdatasync;
//! rename; folder fsync; sweep of temporary files nobody holds) and `reader.rs`
//! (listing with the Go tool's layouts, symlinks resolved, each file once); this
//! module is the [`Storage`] face of them.

use super::Storage;
use crate::config::StorageConfig;
use crate::error::Result;
use crate::fs::Fs;
use crate::layout::{day_dir_name, partition_path};
use crate::reader::{PartitionFile, PartitionReader, ReadSpec, Selection};
use crate::writer;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    /// Every file and folder operation goes through it (see `fs.rs`).
    fs: Fs,
}

impl LocalStorage {
    /// An archive read and written with plain `std::fs` (symlinks followed anywhere).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage::with_fs(root, Fs::unconfined())
    }

    /// An archive whose every file operation goes through `fs` (confined or not).
    pub fn with_fs(root: impl Into<PathBuf>, fs: Fs) -> Self {
        LocalStorage {
            root: root.into(),
            fs,
        }
    }

    /// The file-system handle its operations go through.
    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    /// The archive's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Storage for LocalStorage {
    fn url(&self) -> String {
        self.root.display().to_string()
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn local_fs(&self) -> Option<&Fs> {
        Some(&self.fs)
    }

    fn exists(&self) -> Result<bool> {
        match self.fs.metadata(&self.root) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(crate::Error::io(&self.root, e)),
        }
    }

    fn select(&self, sel: &Selection) -> Result<Vec<PartitionFile>> {
        crate::reader::select_files(&self.fs, &self.root, sel)
    }

    fn select_pending(&self, sel: &Selection) -> Result<Vec<PartitionFile>> {
        crate::reader::select_daily_files(&self.fs, &self.root, sel)
    }

    fn open(&self, file: &PartitionFile, spec: &Arc<ReadSpec>) -> Result<PartitionReader> {
        PartitionReader::open(&self.fs, file, spec)
    }

    fn month_fallback(&self, file: &PartitionFile) -> Option<PartitionFile> {
        crate::reader::month_fallback(&self.fs, file)
    }

    fn partition_location(&self, day: NaiveDate, proxy: &str) -> PathBuf {
        partition_path(&self.root, day, proxy)
    }

    fn write_partition(
        &self,
        day: NaiveDate,
        proxy: &str,
        batch: &RecordBatch,
        cfg: &StorageConfig,
    ) -> Result<()> {
        writer::write_partition_unsynced_rename(
            &self.fs,
            &partition_path(&self.root, day, proxy),
            batch,
            cfg,
        )
    }

    fn sync_day(&self, day: NaiveDate) -> Result<()> {
        writer::sync_dir(&self.fs, &self.root.join(day_dir_name(day)))
    }

    fn delete_partition(&self, day: NaiveDate, proxy: &str) -> Result<()> {
        let path = partition_path(&self.root, day, proxy);
        match self.fs.remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::Error::io(path, e)),
        }
    }

    fn remove_stale(&self, day: NaiveDate) -> usize {
        writer::remove_stale_temp_files(&self.fs, &self.root.join(day_dir_name(day)))
    }

    fn check_writable(&self) -> Result<()> {
        writer::check_writable(&self.fs, &self.root)
    }

    fn backend(&self) -> super::Backend<'_> {
        super::Backend::Local(self)
    }
}
