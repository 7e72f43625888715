//! The file-system handle every local-archive operation goes through: [`Fs`].
//!
//! Unconfined (the collector binary; the extension when DuckDB's external access
//! is on), it is plain `std::fs`: symlinks are followed wherever they lead, as the
//! Go tool's symlinked layouts need.
//!
//! Confined (the extension under `enable_external_access = false`), it holds the
//! allowed roots — folders (`allowed_directories`) and single files
//! (`allowed_paths`) — and every operation resolves its path *where it is used*,
//! beneath one root: the root folder is opened, and the rest of the path is
//! resolved from that descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`, so a symlink or `..` at any depth that leads out of the
//! root fails in the kernel (`EXDEV`) instead of being followed, and a symlink that
//! stays inside is followed (as DuckDB's own readers do). Where `openat2` does not
//! exist (`ENOSYS`, Linux < 5.6), the path is walked component by component with
//! `O_NOFOLLOW` and no symlink is followed at all. Renames, deletes and links open
//! the parent folder beneath the root and act on the final name (`renameat`,
//! `unlinkat`, `linkat`: the final name is never followed). A path that is not
//! lexically below a root is refused before anything is opened: nothing outside
//! the roots is ever opened, listed, stat'ed, created or deleted.
//!
//! Refusals are `std::io::Error`s of kind `PermissionDenied` carrying a
//! [`Refused`] payload, so that callers can tell them from other I/O errors
//! ([`is_refusal`]).

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// A file-system handle: unconfined (plain `std::fs`) or confined to roots.
#[derive(Debug, Clone, Default)]
pub struct Fs {
    confined: Option<Arc<Confinement>>,
}

#[derive(Debug)]
struct Confinement {
    /// Folders whose contents are allowed, longest path first.
    dirs: Vec<PathBuf>,
    /// Single files that are allowed (read and stat only).
    files: Vec<PathBuf>,
    /// Tests: walk with `O_NOFOLLOW` instead of `openat2`.
    force_walk: bool,
}

/// Why a confined [`Fs`] refused a path (the payload of its `PermissionDenied` errors).
#[derive(Debug)]
pub struct Refused {
    pub reason: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for Refused {}

const OUTSIDE: &str =
    "file system operations are disabled by configuration (enable_external_access = false) \
     and the path is not inside allowed_directories or in allowed_paths";
const LEADS_OUT: &str =
    "file system operations are disabled by configuration (enable_external_access = false) \
     and a symlink or `..` on the path leads outside allowed_directories";

fn refused(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, Refused { reason })
}

/// Whether `e` is a confined [`Fs`]'s refusal.
pub fn is_refusal(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Refused>())
}

/// Whether a library error is a confined [`Fs`]'s refusal (then its path is the one refused).
pub fn is_refusal_error(e: &crate::Error) -> bool {
    matches!(e, crate::Error::Io { source, .. } if is_refusal(source))
}

/// What a folder entry is (not following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of [`Fs::read_dir`].
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    /// The folder's path joined with `name`.
    pub path: PathBuf,
    pub kind: Kind,
}

impl DirEntry {
    pub fn file_name(&self) -> &std::ffi::OsStr {
        &self.name
    }
    pub fn is_symlink(&self) -> bool {
        self.kind == Kind::Symlink
    }
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

/// `path` made absolute (against the working directory) with `.` parts dropped;
/// `..` parts are kept (they are resolved by the kernel, beneath the root).
fn absolute(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    abs.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// A root as DuckDB compares it: absolute, `.` and `..` resolved lexically.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in absolute(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Where a path lies: beneath a root folder (`rel` may be empty: the root
/// itself), or exactly an allowed file.
enum Place<'a> {
    Beneath { root: &'a Path, rel: PathBuf },
    File(PathBuf),
}

impl Fs {
    /// Plain `std::fs`: today's behaviour.
    pub fn unconfined() -> Fs {
        Fs { confined: None }
    }

    /// Confined to the folders `dirs` (everything beneath them) and the single
    /// files `files`. No root at all refuses every path.
    pub fn confined(
        dirs: impl IntoIterator<Item = PathBuf>,
        files: impl IntoIterator<Item = PathBuf>,
    ) -> Fs {
        let mut dirs: Vec<PathBuf> = dirs.into_iter().map(|d| lexical(&d)).collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs.dedup();
        Fs {
            confined: Some(Arc::new(Confinement {
                dirs,
                files: files.into_iter().map(|f| lexical(&f)).collect(),
                force_walk: false,
            })),
        }
    }

    /// Tests: the `O_NOFOLLOW` walk instead of `openat2`.
    #[doc(hidden)]
    pub fn confined_walking(dirs: Vec<PathBuf>) -> Fs {
        let mut fs = Fs::confined(dirs, vec![]);
        if let Some(c) = fs.confined.as_mut().and_then(Arc::get_mut) {
            c.force_walk = true;
        }
        fs
    }

    pub fn is_confined(&self) -> bool {
        self.confined.is_some()
    }

    fn place<'a>(c: &'a Confinement, path: &Path) -> io::Result<Place<'a>> {
        let abs = absolute(path);
        for root in &c.dirs {
            if let Ok(rel) = abs.strip_prefix(root) {
                return Ok(Place::Beneath {
                    root,
                    rel: rel.to_path_buf(),
                });
            }
        }
        let lex = lexical(path);
        if c.files.contains(&lex) && !abs.components().any(|x| x == Component::ParentDir) {
            return Ok(Place::File(abs));
        }
        Err(refused(OUTSIDE))
    }

    /// Opens `path` (confined: beneath its root) with `flags` (`O_CLOEXEC` added).
    fn open_fd(
        &self,
        c: &Confinement,
        path: &Path,
        flags: rustix::fs::OFlags,
        mode: rustix::fs::Mode,
    ) -> io::Result<OwnedFd> {
        use rustix::fs::OFlags;
        let flags = flags | OFlags::CLOEXEC;
        match Self::place(c, path)? {
            Place::File(p) => {
                // An allowed file: read or stat only, as DuckDB opens it.
                if flags.intersects(OFlags::CREATE | OFlags::WRONLY | OFlags::RDWR) {
                    return Err(refused(OUTSIDE));
                }
                Ok(rustix::fs::open(&p, flags, mode)?)
            }
            Place::Beneath { root, rel } => beneath(root, &rel, flags, mode, c.force_walk),
        }
    }

    /// Opens the parent folder of `path` beneath its root (as an `O_PATH`
    /// descriptor) and returns it with the final name, which must be a plain name.
    fn parent_fd(&self, c: &Confinement, path: &Path) -> io::Result<(OwnedFd, OsString)> {
        use rustix::fs::{Mode, OFlags};
        let abs = absolute(path);
        let (Some(parent), Some(Component::Normal(name))) =
            (abs.parent(), abs.components().next_back())
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name (ends in `..` or is a root)",
            ));
        };
        let fd = self.open_fd(c, parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok((fd, name.to_os_string()))
    }

    /// Opens a file for reading.
    pub fn open(&self, path: &Path) -> io::Result<File> {
        match &self.confined {
            None => File::open(path),
            Some(c) => {
                use rustix::fs::{Mode, OFlags};
                let fd = self.open_fd(c, path, OFlags::RDONLY, Mode::empty())?;
                Ok(File::from(fd))
            }
        }
    }

    /// Opens a folder (for `fsync` or an advisory lock).
    pub fn open_dir(&self, path: &Path) -> io::Result<File> {
        match &self.confined {
            None => File::open(path),
            Some(c) => {
                use rustix::fs::{Mode, OFlags};
                let fd =
                    self.open_fd(c, path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
                Ok(File::from(fd))
            }
        }
    }

    /// fsyncs a folder, making the renames done in it durable.
    pub fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.open_dir(path).and_then(|d| d.sync_all())
    }

    /// `stat` (following symlinks; confined: only those that stay beneath the root).
    pub fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        match &self.confined {
            None => std::fs::metadata(path),
            Some(c) => {
                use rustix::fs::{Mode, OFlags};
                let fd = self.open_fd(c, path, OFlags::PATH, Mode::empty())?;
                File::from(fd).metadata()
            }
        }
    }

    /// `lstat`: the final name itself, not what a symlink there leads to.
    pub fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        match &self.confined {
            None => std::fs::symlink_metadata(path),
            Some(c) => {
                use rustix::fs::{Mode, OFlags};
                let fd = self.open_fd(c, path, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
                File::from(fd).metadata()
            }
        }
    }

    pub fn is_dir(&self, path: &Path) -> bool {
        self.metadata(path).is_ok_and(|m| m.is_dir())
    }

    pub fn is_file(&self, path: &Path) -> bool {
        self.metadata(path).is_ok_and(|m| m.is_file())
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.metadata(path).is_ok()
    }

    /// The entries of a folder (without `.` and `..`), in the order the file
    /// system gives them. An entry whose kind cannot be read is left out.
    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let Some(c) = &self.confined else {
            let mut out = Vec::new();
            for e in std::fs::read_dir(path)? {
                let e = e?;
                let Ok(ft) = e.file_type() else { continue };
                let kind = if ft.is_symlink() {
                    Kind::Symlink
                } else if ft.is_dir() {
                    Kind::Dir
                } else if ft.is_file() {
                    Kind::File
                } else {
                    Kind::Other
                };
                out.push(DirEntry {
                    name: e.file_name(),
                    path: e.path(),
                    kind,
                });
            }
            return Ok(out);
        };
        use rustix::fs::{AtFlags, FileType, Mode, OFlags};
        use std::os::unix::ffi::OsStrExt;
        let fd = self.open_fd(c, path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        let mut out = Vec::new();
        while let Some(e) = dir.read() {
            let e = e?;
            let bytes = e.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let name = std::ffi::OsStr::from_bytes(bytes).to_os_string();
            let ft = match e.file_type() {
                FileType::Unknown => {
                    match rustix::fs::statat(&fd, e.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => FileType::from_raw_mode(st.st_mode),
                        Err(_) => continue,
                    }
                }
                t => t,
            };
            let kind = match ft {
                FileType::Symlink => Kind::Symlink,
                FileType::Directory => Kind::Dir,
                FileType::RegularFile => Kind::File,
                _ => Kind::Other,
            };
            out.push(DirEntry {
                path: path.join(&name),
                name,
                kind,
            });
        }
        Ok(out)
    }

    /// Where `path` really is, symlinks resolved (confined: beneath its root).
    pub fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        match &self.confined {
            None => std::fs::canonicalize(path),
            Some(c) => {
                use rustix::fs::{Mode, OFlags};
                use std::os::fd::AsRawFd;
                let fd = self.open_fd(c, path, OFlags::PATH, Mode::empty())?;
                // The kernel's name of the descriptor; without /proc, the path as
                // given (made absolute): it was resolved beneath the root all the same.
                Ok(
                    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
                        .unwrap_or_else(|_| absolute(path)),
                )
            }
        }
    }

    /// Creates a folder and its missing parents (confined: each beneath the root;
    /// the root itself must exist).
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let Some(c) = &self.confined else {
            return std::fs::create_dir_all(path);
        };
        use rustix::fs::{Mode, OFlags};
        let Place::Beneath { root, rel } = Self::place(c, path)? else {
            return Err(refused(OUTSIDE));
        };
        let mut sofar = root.to_path_buf();
        for part in rel.components() {
            let parent = sofar.clone();
            sofar.push(part.as_os_str());
            let dir = OFlags::PATH | OFlags::DIRECTORY;
            match self.open_fd(c, &sofar, dir, Mode::empty()) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let Component::Normal(name) = part else {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            };
            let pfd = self.open_fd(c, &parent, dir, Mode::empty())?;
            match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o777)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => {
                    // Something is there now: it must be a folder beneath the root.
                    self.open_fd(c, &sofar, dir, Mode::empty())?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Removes a file (confined: `unlinkat` on its parent beneath the root; a
    /// symlink there is removed itself, never followed).
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        match &self.confined {
            None => std::fs::remove_file(path),
            Some(c) => {
                let (pfd, name) = self.parent_fd(c, path)?;
                Ok(rustix::fs::unlinkat(
                    &pfd,
                    &name,
                    rustix::fs::AtFlags::empty(),
                )?)
            }
        }
    }

    /// Removes an empty folder.
    pub fn remove_dir(&self, path: &Path) -> io::Result<()> {
        match &self.confined {
            None => std::fs::remove_dir(path),
            Some(c) => {
                let (pfd, name) = self.parent_fd(c, path)?;
                Ok(rustix::fs::unlinkat(
                    &pfd,
                    &name,
                    rustix::fs::AtFlags::REMOVEDIR,
                )?)
            }
        }
    }

    /// Renames `from` to `to` (confined: `renameat` on both parents beneath their roots).
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match &self.confined {
            None => std::fs::rename(from, to),
            Some(c) => {
                let (fa, na) = self.parent_fd(c, from)?;
                let (fb, nb) = self.parent_fd(c, to)?;
                Ok(rustix::fs::renameat(&fa, &na, &fb, &nb)?)
            }
        }
    }

    /// A new name `link` for the file `original` (never following a symlink at `original`).
    pub fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        match &self.confined {
            None => std::fs::hard_link(original, link),
            Some(c) => {
                let (fa, na) = self.parent_fd(c, original)?;
                let (fb, nb) = self.parent_fd(c, link)?;
                Ok(rustix::fs::linkat(
                    &fa,
                    &na,
                    &fb,
                    &nb,
                    rustix::fs::AtFlags::empty(),
                )?)
            }
        }
    }

    /// Creates `<prefix><random><suffix>` in `dir` exclusively, readable and
    /// writable (mode 0666 less the umask); removed when dropped unless persisted.
    pub fn temp_file(
        &self,
        dir: &Path,
        prefix: &str,
        suffix: &str,
        rand_chars: usize,
    ) -> io::Result<TempFile> {
        let Some(c) = &self.confined else {
            let mut b = tempfile::Builder::new();
            b.prefix(prefix).suffix(suffix).rand_bytes(rand_chars);
            {
                use std::os::unix::fs::PermissionsExt;
                b.permissions(std::fs::Permissions::from_mode(0o666));
            }
            return b.tempfile_in(dir).map(|t| TempFile {
                inner: Temp::Std(t),
            });
        };
        use rustix::fs::{Mode, OFlags};
        let dfd = self.open_fd(c, dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        let mut last = None;
        for _ in 0..64 {
            let name = format!("{prefix}{}{suffix}", random_chars(rand_chars));
            match rustix::fs::openat(
                &dfd,
                name.as_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            ) {
                Ok(fd) => {
                    return Ok(TempFile {
                        inner: Temp::Confined(ConfinedTemp {
                            file: File::from(fd),
                            path: dir.join(&name),
                            fs: self.clone(),
                            live: true,
                        }),
                    })
                }
                Err(rustix::io::Errno::EXIST) => last = Some(io::ErrorKind::AlreadyExists),
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::from(
            last.unwrap_or(io::ErrorKind::AlreadyExists),
        ))
    }
}

/// Opens `rel` beneath the folder `root` (see the module docs).
fn beneath(
    root: &Path,
    rel: &Path,
    flags: rustix::fs::OFlags,
    mode: rustix::fs::Mode,
    force_walk: bool,
) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let rootfd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    if !force_walk {
        for _ in 0..8 {
            match rustix::fs::openat2(
                &rootfd,
                rel,
                flags,
                mode,
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => return Ok(fd),
                // A rename elsewhere raced the resolution: try again.
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(rustix::io::Errno::XDEV) => return Err(refused(LEADS_OUT)),
                Err(rustix::io::Errno::NOSYS) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    walk(rootfd, rel, flags, mode)
}

/// The fallback: component by component with `O_NOFOLLOW`; a symlink anywhere is
/// refused, `..` may not climb above the root.
fn walk(
    rootfd: OwnedFd,
    rel: &Path,
    flags: rustix::fs::OFlags,
    mode: rustix::fs::Mode,
) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let parts: Vec<Component> = rel
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let mut stack: Vec<OwnedFd> = vec![rootfd];
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Some((last, middle)) = parts.split_last() else {
        let cur = stack.pop().ok_or_else(|| refused(LEADS_OUT))?;
        return Ok(rustix::fs::openat(&cur, ".", flags, mode)?);
    };
    for part in middle {
        match part {
            Component::ParentDir => {
                stack.pop();
                if stack.is_empty() {
                    return Err(refused(LEADS_OUT));
                }
            }
            Component::Normal(name) => {
                let cur = stack.last().ok_or_else(|| refused(LEADS_OUT))?;
                let fd = match rustix::fs::openat(cur, *name, dir_flags, Mode::empty()) {
                    Ok(fd) => fd,
                    // A symlink (to anything) or a file.
                    Err(rustix::io::Errno::NOTDIR) => return Err(not_a_folder(cur, name)),
                    Err(e) => return Err(e.into()),
                };
                stack.push(fd);
            }
            _ => return Err(refused(LEADS_OUT)),
        }
    }
    match last {
        Component::ParentDir => {
            stack.pop();
            let cur = stack.last().ok_or_else(|| refused(LEADS_OUT))?;
            Ok(rustix::fs::openat(cur, ".", flags, mode)?)
        }
        Component::Normal(name) => {
            let cur = stack.last().ok_or_else(|| refused(LEADS_OUT))?;
            let fd = match rustix::fs::openat(cur, *name, flags | OFlags::NOFOLLOW, mode) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::LOOP) => return Err(refused(LEADS_OUT)),
                // `O_DIRECTORY` on a symlink: refused if it is one.
                Err(rustix::io::Errno::NOTDIR) => return Err(not_a_folder(cur, name)),
                Err(e) => return Err(e.into()),
            };
            if flags.contains(OFlags::PATH) && !flags.contains(OFlags::NOFOLLOW) && is_link(&fd)? {
                return Err(refused(LEADS_OUT));
            }
            Ok(fd)
        }
        _ => Err(refused(LEADS_OUT)),
    }
}

fn is_link(fd: &OwnedFd) -> io::Result<bool> {
    use rustix::fs::FileType;
    Ok(FileType::from_raw_mode(rustix::fs::fstat(fd)?.st_mode) == FileType::Symlink)
}

/// Why `name` in the folder `dir` could not be opened as a folder: it is a symlink
/// (refused: the walk follows none) or not a folder (ENOTDIR).
fn not_a_folder(dir: &OwnedFd, name: &std::ffi::OsStr) -> io::Error {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(io::Error::from) {
        Ok(l) => match is_link(&l) {
            Ok(true) => refused(LEADS_OUT),
            Ok(false) => io::Error::from(rustix::io::Errno::NOTDIR),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// `n` random alphanumeric characters (temporary names).
fn random_chars(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = String::with_capacity(n);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    let mut x = h.finish();
    for i in 0..n {
        if i % 10 == 0 {
            h.write_u64(x ^ i as u64);
            x = h.finish();
        }
        out.push(CHARS[(x % CHARS.len() as u64) as usize] as char);
        x /= CHARS.len() as u64;
    }
    out
}

/// A temporary file made by [`Fs::temp_file`].
#[derive(Debug)]
pub struct TempFile {
    inner: Temp,
}

#[derive(Debug)]
enum Temp {
    Std(tempfile::NamedTempFile),
    Confined(ConfinedTemp),
}

/// A confined temporary file: removed (beneath its root) when dropped unless persisted.
#[derive(Debug)]
struct ConfinedTemp {
    file: File,
    path: PathBuf,
    fs: Fs,
    live: bool,
}

impl Drop for ConfinedTemp {
    fn drop(&mut self) {
        if self.live {
            let _ = self.fs.remove_file(&self.path);
        }
    }
}

impl TempFile {
    pub fn as_file(&self) -> &File {
        match &self.inner {
            Temp::Std(t) => t.as_file(),
            Temp::Confined(t) => &t.file,
        }
    }

    pub fn path(&self) -> &Path {
        match &self.inner {
            Temp::Std(t) => t.path(),
            Temp::Confined(t) => &t.path,
        }
    }

    /// Renames the file to `to` (replacing what is there); on error the temporary
    /// file is removed.
    pub fn persist(self, to: &Path) -> io::Result<()> {
        match self.inner {
            Temp::Std(t) => t.persist(to).map(drop).map_err(|e| e.error),
            Temp::Confined(mut t) => {
                t.fs.rename(&t.path, to)?;
                t.live = false;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
