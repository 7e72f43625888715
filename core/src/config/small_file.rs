//! Reading the small files a configuration names — the config itself, password and
//! token files, TLS certificates and keys — with a size limit, refusing anything that
//! is not a regular file.
//!
//! Why: these paths come from users (in the DuckDB extension, from any SQL user), and
//! `config := '/dev/zero'` would otherwise be read until the process is killed, a FIFO
//! would block the reader forever, and a huge file would be held in memory whole.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest configuration file read (the largest seen in practice is a few
/// hundred KiB: ten thousand proxies).
pub const CONFIG_LIMIT: u64 = 16 << 20;
/// The largest password or token file read.
pub const SECRET_LIMIT: u64 = 64 << 10;
/// The largest TLS certificate, bundle or key file read.
pub const TLS_LIMIT: u64 = 4 << 20;

/// The bytes of the regular file `path`, at most `limit` of them; `Err` says why not
/// (without the path: callers name the file and the key that named it).
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, SmallFileError> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(SmallFileError::NotRegular(kind(&meta.file_type())));
    }
    if meta.len() > limit {
        return Err(too_large(meta.len(), limit));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    // `take`: a file that grows while it is read still stops at the limit.
    file.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(too_large(out.len() as u64, limit));
    }
    Ok(out)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, SmallFileError> {
    String::from_utf8(read(path, limit)?).map_err(|_| SmallFileError::NotUtf8)
}

fn too_large(len: u64, limit: u64) -> SmallFileError {
    SmallFileError::TooLarge { len, limit }
}

/// Why a small file was not read; no message names the file (callers name it and
/// the key that named it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmallFileError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file (a {0})")]
    NotRegular(&'static str),
    #[error("{len} bytes or more, larger than the limit of {limit} bytes for this file")]
    TooLarge { len: u64, limit: u64 },
    #[error("not UTF-8 text")]
    NotUtf8,
}

fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_and_sizes_limited() {
        let e = read(Path::new("/dev/zero"), 10).unwrap_err().to_string();
        assert_eq!(e, "not a regular file (a character device)");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read(dir.path(), 10).unwrap_err().to_string(),
            "not a regular file (a directory)"
        );
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Returns at once (no writer needed), refused.
        assert_eq!(
            read(&fifo, 10).unwrap_err().to_string(),
            "not a regular file (a FIFO)"
        );
        let f = dir.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read(&f, 10).unwrap(), b"0123456789");
        assert_eq!(
            read(&f, 9).unwrap_err().to_string(),
            "10 bytes or more, larger than the limit of 9 bytes for this file"
        );
        assert!(read(&dir.path().join("missing"), 10)
            .unwrap_err()
            .to_string()
            .contains("No such file"));
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert_eq!(read_text(&f, 10).unwrap_err().to_string(), "not UTF-8 text");
    }
}
