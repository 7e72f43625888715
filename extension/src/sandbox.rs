//! DuckDB's sandbox, applied to promduck's own file and network access.
//!
//! Services that let people run SQL lock DuckDB down with `SET enable_external_access
//! = false` (with `allowed_directories` / `allowed_paths` as exceptions) and
//! `disabled_filesystems`; DuckDB's own readers obey. promduck reads and writes files
//! and opens connections itself, so it asks the same settings before any I/O and
//! refuses what DuckDB would refuse.
//!
//! Mechanism: the C API of the oldest host the extension supports (v1.2.0) gives a
//! table function no access to its client context or settings, so at `LOAD` the
//! extension opens one connection of its own to the same database and reads the
//! settings through SQL (`current_setting`) at every bind. These settings are
//! global (a session cannot `SET` them differently, so a user cannot spoof them for
//! promduck), `enable_external_access` can only be turned off while the database
//! runs, and reading them takes no lock the user's query holds (it runs on another
//! connection, serialised by a mutex). If the settings cannot be read, access is
//! refused (fail closed). The connection lives as long as the process: DuckDB's C
//! API has no hook for a database closing, so the database instance promduck was
//! loaded into is kept open until the process exits (its WAL is replayed at the
//! next open, as after any unclean exit).

use duckdb::Connection;
use promduck_core::fs::Fs;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The extension's own connection to the database it was loaded into. DuckDB calls
/// table functions on several threads: the mutex makes them use it one at a time
/// (duckdb-rs's `Connection` is `Send`, not `Sync`).
#[derive(Clone)]
pub struct Sandbox(Arc<Mutex<Shared>>);

/// The connection, and the final policy once external access is off.
struct Shared {
    con: Connection,
    final_policy: Option<Policy>,
    /// Every file system seen disabled so far: DuckDB never enables one again.
    seen_disabled: Names,
}

impl Sandbox {
    pub fn new(con: Connection) -> Sandbox {
        Sandbox(Arc::new(Mutex::new(Shared {
            con,
            final_policy: None,
            seen_disabled: Names::new(),
        })))
    }

    /// The host's settings now. One query per call: `enable_external_access` and
    /// `disabled_filesystems`; the exceptions (`allowed_directories`,
    /// `allowed_paths`) are read once external access is off, and kept, because DuckDB
    /// refuses to change them from then on (and then the whole policy is final).
    pub fn policy(&self) -> Result<Policy, String> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| "promduck: internal lock poisoned".to_string())?;
        let shared = &mut *guard;
        // `disabled_filesystems` may still grow after external access is off (until
        // `lock_configuration`): read at every bind.
        let disabled = read_disabled(&shared.con, &mut shared.seen_disabled);
        if let Some(p) = &shared.final_policy {
            return Ok(p.clone().with_disabled(disabled));
        }
        let con = &shared.con;
        let external = setting(con, "current_setting('enable_external_access')::VARCHAR")
            .map_err(|e| format!("Permission Error: cannot read DuckDB's enable_external_access setting ({e}); access refused"))?;
        let external_access = external.trim().eq_ignore_ascii_case("true");
        let probe = Some(self.clone());
        if external_access {
            return Ok(Policy {
                external_access,
                allowed_directories: vec![],
                allowed_paths: vec![],
                local_fs_disabled: false,
                disabled_filesystems: Names::new(),
                disabled_unreadable: None,
                probe,
            }
            .with_disabled(disabled));
        }
        // Absent before DuckDB 1.3: then there are no exceptions.
        let list = |name: &str| -> Vec<String> {
            setting(
                con,
                &format!("array_to_string(current_setting('{name}'), chr(31))"),
            )
            .map(|v| {
                v.split('\u{1f}')
                    .map(str::to_string)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
        };
        let policy = Policy {
            external_access,
            allowed_directories: list("allowed_directories"),
            allowed_paths: list("allowed_paths"),
            local_fs_disabled: false,
            disabled_filesystems: Names::new(),
            disabled_unreadable: None,
            probe,
        };
        shared.final_policy = Some(policy.clone());
        Ok(policy.with_disabled(disabled))
    }
}

/// Names of DuckDB file systems.
pub type Names = std::collections::BTreeSet<String>;

/// The file systems DuckDB has disabled (`disabled_filesystems`), read back
/// through DuckDB's own rule that a disabled file system can never be enabled
/// again: `current_setting('disabled_filesystems')` reads back empty in every host
/// (1.2.2 to 2.0.1), but `SET disabled_filesystems = '<a list>'` fails, naming one
/// disabled file system missing from the list, until the list holds them all;
/// then it succeeds and changes nothing (it sets exactly what was set). It can
/// never enable anything (DuckDB refuses) and works whether or not the file system
/// is registered (httpfs need not be loaded). `seen` (what earlier reads found)
/// starts the list, so one statement usually suffices. `Err` when DuckDB refuses
/// the statement for another reason (`lock_configuration = true`).
fn read_disabled(con: &Connection, seen: &mut Names) -> Result<Names, (Names, String)> {
    let mut names = seen.clone();
    // Every round learns one more name; DuckDB has a handful of file systems.
    for _ in 0..64 {
        let list = names.iter().cloned().collect::<Vec<_>>().join(",");
        let sql = format!("SET disabled_filesystems = '{}'", list.replace('\'', "''"));
        match con.execute_batch(&sql) {
            Ok(()) => {
                seen.clone_from(&names);
                return Ok(names);
            }
            Err(e) => {
                let msg = e.to_string();
                match previously_disabled(&msg) {
                    Some(name) if !names.contains(&name) => {
                        names.insert(name);
                    }
                    _ => {
                        seen.extend(names);
                        let why = msg.lines().next().unwrap_or_default().to_string();
                        return Err((seen.clone(), why));
                    }
                }
            }
        }
    }
    seen.extend(names);
    Err((seen.clone(), "too many disabled file systems".into()))
}

/// The name in DuckDB's `File system "X" has been disabled previously, it cannot
/// be re-enabled`.
fn previously_disabled(msg: &str) -> Option<String> {
    let (_, rest) = msg.split_once("File system \"")?;
    let (name, tail) = rest.split_once('"')?;
    (tail
        .trim_start()
        .starts_with("has been disabled previously")
        && !name.is_empty()
        && !name.contains(','))
    .then(|| name.to_string())
}

/// Evaluates a VARCHAR expression on the extension's connection. The value comes back
/// as the text of an `error()`: the only query path that needs nothing of the C API
/// beyond what DuckDB 1.2 offers (`duckdb_query` and its error message); duckdb-rs's
/// statement API calls newer functions that crash older hosts.
fn setting(con: &Connection, expr: &str) -> Result<String, String> {
    // The value is framed by control characters the SQL text only names (`chr(1)`):
    // DuckDB echoes a failing statement's text in its error, and that echo must never
    // be mistaken for a value (an error of the probe would read as "allowed").
    let sql =
        format!("SELECT error(chr(1) || 'promduck' || chr(2) || coalesce(({expr}), '') || chr(3))");
    match con.execute_batch(&sql) {
        Ok(()) => Err("no value".into()),
        Err(e) => {
            let msg = e.to_string();
            let value = msg
                .split_once("\u{1}promduck\u{2}")
                .and_then(|(_, rest)| rest.split_once('\u{3}'))
                .map(|(v, _)| v.to_string());
            value.ok_or(msg)
        }
    }
}

/// The host's settings for the database a table function was registered in (its
/// extra info), read now.
pub fn policy(bind: &duckdb::vtab::BindInfo) -> Result<Policy, crate::params::BoxError> {
    let ptr = bind.get_extra_info::<Sandbox>();
    if ptr.is_null() {
        return Err(crate::params::err(
            "Permission Error: promduck has no access to DuckDB's settings; access refused",
        ));
    }
    // SAFETY: every table function is registered with a `Sandbox` as its extra info
    // (see `register` in lib.rs); DuckDB owns that copy for the function's lifetime,
    // which outlasts any bind of it.
    let sandbox = unsafe { &*ptr };
    sandbox.policy().map_err(crate::params::err)
}

/// What the host allows (a snapshot of its settings).
#[derive(Clone)]
pub struct Policy {
    pub external_access: bool,
    pub allowed_directories: Vec<String>,
    pub allowed_paths: Vec<String>,
    pub local_fs_disabled: bool,
    /// `disabled_filesystems` as read (see [`read_disabled`]).
    pub disabled_filesystems: Names,
    /// Why `disabled_filesystems` could not be read, when it could not (then
    /// `disabled_filesystems` holds what earlier reads found).
    pub disabled_unreadable: Option<String>,
    /// Where to ask DuckDB itself whether a local path may be accessed.
    probe: Option<Sandbox>,
}

impl Policy {
    /// This policy with `disabled_filesystems` as just read.
    fn with_disabled(mut self, read: Result<Names, (Names, String)>) -> Policy {
        let (set, why) = match read {
            Ok(set) => (set, None),
            Err((seen, why)) => (seen, Some(why)),
        };
        self.local_fs_disabled = set.contains("LocalFileSystem");
        self.disabled_filesystems = set;
        self.disabled_unreadable = why;
        self
    }

    /// The redirect hop guard of `who`'s HTTP client: every hop passes
    /// [`Policy::check_url`] as the first URL did (credentials in the target are
    /// not shown, nor compared).
    pub fn hop_guard(&self, who: &str) -> promduck_core::prometheus::HopGuard {
        let policy = self.clone();
        let who = who.to_string();
        Arc::new(move |url: &promduck_core::prometheus::Url| {
            let mut url = url.clone();
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_fragment(None);
            policy
                .check_url(&who, url.as_str())
                .map(drop)
                .map_err(|e| e.trim_start_matches("Permission Error: ").to_string())
        })
    }
}

/// The DuckDB file system that serves a URL's scheme (as httpfs names them).
fn file_system_of(url: &str) -> Option<&'static str> {
    let (scheme, _) = url.split_once(':')?;
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => Some("HTTPFileSystem"),
        "s3" | "s3a" | "s3n" => Some("S3FileSystem"),
        _ => None,
    }
}

impl Sandbox {
    /// DuckDB's own verdict on accessing a local path (its `glob` applies
    /// `enable_external_access`, `allowed_directories`/`allowed_paths` and
    /// `disabled_filesystems` exactly as its readers do); `Err` with its message.
    fn duckdb_allows(&self, path: &Path, dir: bool) -> Result<(), String> {
        let guard = self
            .0
            .lock()
            .map_err(|_| "promduck: internal lock poisoned".to_string())?;
        let folder = path.display().to_string();
        let mut literal = folder.replace('\'', "''");
        // A folder is asked about through a name inside it, the way DuckDB sees the
        // files it reads there (recent DuckDB refuses the folder's own path even when
        // it is an allowed directory). The name is not expected to exist: at most a
        // stat, never a listing.
        if dir {
            if !literal.ends_with('/') {
                literal.push('/');
            }
            literal.push_str(PROBE);
        }
        match setting(
            &guard.con,
            &format!("(SELECT count(*) FROM glob('{literal}'))::VARCHAR"),
        ) {
            Ok(_) => Ok(()),
            // DuckDB's own sentence, without the echo of promduck's probe query.
            // The probe's name is promduck's, not the user's: the folder is named instead.
            Err(e) => Err(e
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("Permission Error: ")
                .replace(
                    &format!("file \"{}/{PROBE}\"", folder.trim_end_matches('/')),
                    &format!("directory \"{}\"", folder.trim_end_matches('/')),
                )
                .replace(&format!("/{PROBE}"), "")),
        }
    }
}

/// The name inside a folder through which DuckDB is asked about the folder.
const PROBE: &str = ".promduck-sandbox-probe";

/// `path` made absolute and with `.`/`..` resolved lexically (no file is touched).
fn lexical(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The lexical form with the longest existing prefix's symlinks resolved: where the
/// path really leads (a symlink inside an allowed directory must not lead out).
fn resolved(path: &Path) -> PathBuf {
    let lex = lexical(path);
    let mut existing = lex.clone();
    let mut rest = Vec::new();
    while !existing.as_os_str().is_empty() {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    lex
}

impl Policy {
    fn path_allowed(&self, path: &Path) -> bool {
        let forms = [lexical(path), resolved(path)];
        let inside = |p: &Path| {
            self.allowed_paths
                .iter()
                .any(|a| !is_url(a) && (lexical(Path::new(a)) == p || resolved(Path::new(a)) == p))
                || self
                    .allowed_directories
                    .iter()
                    .filter(|d| !is_url(d))
                    .any(|d| {
                        let d = Path::new(d);
                        p.starts_with(lexical(d)) || p.starts_with(resolved(d))
                    })
        };
        forms.iter().all(|p| inside(p))
    }

    /// The file-system handle promduck's file operations go through (see
    /// `promduck_core::fs`): plain `std::fs` with external access on; else confined,
    /// at every depth and at the moment of each operation, to the local entries of
    /// `allowed_directories` (folders) and `allowed_paths` (single files).
    pub fn fs(&self) -> Fs {
        if self.external_access {
            return Fs::unconfined();
        }
        Fs::confined(
            self.allowed_directories
                .iter()
                .filter(|d| !is_url(d))
                .map(PathBuf::from),
            self.allowed_paths
                .iter()
                .filter(|p| !is_url(p))
                .map(PathBuf::from),
        )
    }

    /// May `who` (a function name) read or write the file `path` (`what` says which)?
    pub fn check_path(&self, who: &str, what: &str, path: &Path) -> Result<(), String> {
        self.check(who, what, path, false)
    }

    /// May `who` read or write in the folder `path`?
    pub fn check_dir(&self, who: &str, what: &str, path: &Path) -> Result<(), String> {
        self.check(who, what, path, true)
    }

    fn check(&self, who: &str, what: &str, path: &Path, dir: bool) -> Result<(), String> {
        if self.local_fs_disabled {
            return Err(format!(
                "Permission Error: {who} cannot {what} {:?}: file system LocalFileSystem has been disabled by configuration (disabled_filesystems)",
                path.display().to_string()
            ));
        }
        // DuckDB's own check first (it knows every setting of its version), then,
        // with external access off, promduck's stricter one: the path must stay inside
        // an allowed directory once symlinks are resolved.
        if let Some(sb) = &self.probe {
            sb.duckdb_allows(path, dir).map_err(|reason| {
                format!(
                    "Permission Error: {who} cannot {what} {:?}: {reason}",
                    path.display().to_string()
                )
            })?;
        }
        if self.external_access || self.path_allowed(path) {
            return Ok(());
        }
        Err(format!(
            "Permission Error: {who} cannot {what} {:?}: file system operations are disabled by configuration \
             (enable_external_access = false) and the path is not inside allowed_directories or in allowed_paths",
            path.display().to_string()
        ))
    }

    /// May `who` open connections to `url`? `disabled_filesystems` first (the file
    /// system DuckDB would use for the URL: `HTTPFileSystem` for http(s)://,
    /// `S3FileSystem` for s3://), whatever `enable_external_access` says; then, with
    /// external access off, the URL must be inside an allowed entry, and
    /// `disabled_filesystems` must have been readable (fail closed).
    pub fn check_url(&self, who: &str, url: &str) -> Result<(), String> {
        let fs = file_system_of(url);
        if let Some(fs) = fs.filter(|fs| self.disabled_filesystems.contains(*fs)) {
            return Err(format!(
                "Permission Error: {who} cannot connect to {url}: file system {fs} has been disabled by configuration (disabled_filesystems)"
            ));
        }
        if self.external_access {
            return Ok(());
        }
        let allowed = self
            .allowed_directories
            .iter()
            .chain(&self.allowed_paths)
            .any(|a| is_url(a) && url_within(url, a));
        if allowed {
            return match (&self.disabled_unreadable, fs) {
                (Some(why), Some(_)) => Err(format!(
                    "Permission Error: {who} cannot connect to {url}: DuckDB's disabled_filesystems setting cannot be read ({why}), \
                     and with enable_external_access = false promduck refuses network access it cannot check"
                )),
                _ => Ok(()),
            };
        }
        Err(format!(
            "Permission Error: {who} cannot connect to {url}: network access is disabled by configuration \
             (enable_external_access = false) and the URL is not inside allowed_directories or in allowed_paths"
        ))
    }
}

/// A URL entry: `scheme:/…` — DuckDB stores `http://h/` in `allowed_directories` with
/// its slashes collapsed (`http:/h/`), as it sanitises every entry like a path.
fn is_url(s: &str) -> bool {
    s.split_once(":/").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
    })
}

/// Collapses repeated slashes, as DuckDB does to the entries it stores.
fn collapse_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// `url` is `allowed` or below it (`allowed` as a prefix ending at a path boundary),
/// both compared with collapsed slashes.
fn url_within(url: &str, allowed: &str) -> bool {
    let url = collapse_slashes(url);
    let allowed = collapse_slashes(allowed);
    let a = allowed.trim_end_matches('/');
    url == a
        || url
            .strip_prefix(a)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

/// A library error as `who` reports it: a confined file system's refusal as DuckDB
/// words its own (`Permission Error: prom_metrics cannot read "…": …`), anything
/// else prefixed with the function's name.
pub fn core_error(who: &str, what: &str, e: &promduck_core::Error) -> String {
    match e {
        promduck_core::Error::Io { path, source } if promduck_core::fs::is_refusal(source) => {
            format!(
                "Permission Error: {who} cannot {what} {:?}: {source}",
                path.display().to_string()
            )
        }
        _ => format!("{who}: {e}"),
    }
}

/// Config errors shown to a SQL user name the file, the line and column and the
/// keys, never the file's values: quoted text and any backticked word that is not a
/// key the error itself lists as expected are replaced by `…`. (A SQL user must not
/// read a secret file by pointing `config :=` at it.)
pub fn redact_config_error(e: &promduck_core::config::ConfigError) -> String {
    let msg = &e.message;
    // Keys serde lists as expected are promduck's own names, safe to show.
    let expected: Vec<&str> = msg
        .split_once("expected")
        .map(|(_, tail)| tail.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let mut out = String::with_capacity(msg.len());
    let mut chars = msg.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            // Find the closing quote of the same kind.
            let end = msg[i + 1..].find(c).map(|e| i + 1 + e);
            if let Some(end) = end {
                let inner = &msg[i + 1..end];
                let keep = c == '`' && expected.contains(&inner) && msg[..i].contains("expected");
                out.push(c);
                out.push_str(if keep { inner } else { "…" });
                out.push(c);
                while chars.peek().is_some_and(|(j, _)| *j <= end) {
                    chars.next();
                }
                continue;
            }
            out.push(c);
            out.push('…');
            break;
        }
        out.push(c);
    }
    let mut place = e.file.display().to_string();
    if let Some(line) = e.line {
        place.push_str(&format!(":{line}"));
        if let Some(col) = e.column {
            place.push_str(&format!(":{col}"));
        }
    }
    // Known key names before the first ':' stay (e.g. `prometheus.url: ...`).
    format!("{place}: {out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(external: bool, dirs: &[&str], paths: &[&str]) -> Policy {
        Policy {
            external_access: external,
            allowed_directories: dirs.iter().map(|s| s.to_string()).collect(),
            allowed_paths: paths.iter().map(|s| s.to_string()).collect(),
            local_fs_disabled: false,
            disabled_filesystems: Names::new(),
            disabled_unreadable: None,
            probe: None,
        }
    }

    #[test]
    fn paths_inside_allowed_directories_only() {
        let p = policy(false, &["/srv/metrics/"], &["/etc/promduck/config.yaml"]);
        assert!(p
            .check_path("f", "read", Path::new("/srv/metrics/data"))
            .is_ok());
        assert!(p
            .check_path("f", "read", Path::new("/etc/promduck/config.yaml"))
            .is_ok());
        for bad in [
            "/srv/metricsX",
            "/srv/metrics/../secret",
            "/etc/promduck/other.yaml",
            "/",
        ] {
            let e = p.check_path("f", "read", Path::new(bad)).unwrap_err();
            assert!(
                e.starts_with("Permission Error: f cannot read"),
                "{bad}: {e}"
            );
        }
        assert!(policy(true, &[], &[])
            .check_path("f", "read", Path::new("/anything"))
            .is_ok());
        let mut off = policy(true, &[], &[]);
        off.local_fs_disabled = true;
        assert!(off
            .check_path("f", "read", Path::new("/x"))
            .unwrap_err()
            .contains("LocalFileSystem"));
    }

    #[test]
    fn symlinks_out_of_an_allowed_directory_are_refused() {
        let root = std::env::temp_dir().join(format!("promduck-sandbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("allowed")).unwrap();
        std::fs::create_dir_all(root.join("secret")).unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("allowed/link")).unwrap();
        let p = policy(false, &[root.join("allowed").to_str().unwrap()], &[]);
        assert!(p
            .check_path("f", "read", &root.join("allowed/data"))
            .is_ok());
        assert!(p
            .check_path("f", "read", &root.join("allowed/link/x"))
            .is_err());
    }

    #[test]
    fn urls_need_an_allowed_prefix() {
        // As DuckDB stores it: `http://…` with its slashes collapsed.
        let p = policy(false, &["http:/127.0.0.1:9090/"], &[]);
        assert!(p.check_url("f", "http://127.0.0.1:9090/").is_ok());
        assert!(p
            .check_url("f", "http://127.0.0.1:9090/api/v1/query")
            .is_ok());
        assert!(p.check_url("f", "http://127.0.0.1:90901/").is_err());
        assert!(p.check_url("f", "http://127.0.0.1:9091/").is_err());
        assert!(policy(true, &[], &[]).check_url("f", "http://x/").is_ok());
    }

    #[test]
    fn disabled_filesystems_refuse_their_urls() {
        let mut p = policy(true, &[], &[]);
        p.disabled_filesystems = ["HTTPFileSystem".to_string()].into();
        let e = p
            .check_url("prom_query", "http://127.0.0.1:9/")
            .unwrap_err();
        assert_eq!(
            e,
            "Permission Error: prom_query cannot connect to http://127.0.0.1:9/: file system HTTPFileSystem \
             has been disabled by configuration (disabled_filesystems)"
        );
        assert!(p.check_url("f", "HTTPS://x/").is_err());
        assert!(p.check_url("f", "s3://bucket/x").is_ok());
        p.disabled_filesystems = ["S3FileSystem".to_string()].into();
        assert!(p
            .check_url("f", "s3://bucket/x")
            .unwrap_err()
            .contains("S3FileSystem"));
        assert!(p.check_url("f", "http://x/").is_ok());
        // Unreadable: external access on keeps going; off refuses what it allows.
        p.disabled_filesystems.clear();
        p.disabled_unreadable = Some("locked".into());
        assert!(p.check_url("f", "http://x/").is_ok());
        let mut off = policy(false, &["http:/127.0.0.1:9/"], &[]);
        off.disabled_unreadable = Some("the configuration has been locked".into());
        let e = off.check_url("f", "http://127.0.0.1:9/a").unwrap_err();
        assert!(
            e.contains("cannot be read (the configuration has been locked)"),
            "{e}"
        );
        assert!(off
            .check_url("f", "http://127.0.0.1:8/a")
            .unwrap_err()
            .contains("not inside"));
    }

    #[test]
    fn disabled_names_from_duckdb_errors() {
        assert_eq!(
            previously_disabled(
                "Invalid Input Error: File system \"S3FileSystem\" has been disabled previously, it cannot be re-enabled"
            )
            .as_deref(),
            Some("S3FileSystem")
        );
        for other in [
            "Invalid Input Error: Cannot change configuration option \"disabled_filesystems\" - the configuration has been locked",
            "File system \"\" has been disabled previously",
            "File system \"A,B\" has been disabled previously",
        ] {
            assert_eq!(previously_disabled(other), None, "{other}");
        }
    }

    #[test]
    fn hop_guards_check_each_hop_like_the_first_url() {
        let p = policy(false, &["http:/127.0.0.1:9/"], &[]);
        let g = p.hop_guard("prom_labels");
        let u = |s: &str| promduck_core::prometheus::Url::parse(s).unwrap();
        assert!(g(&u("http://127.0.0.1:9/api/v1/labels")).is_ok());
        assert!(g(&u("http://user:pw@127.0.0.1:9/api/v1/labels")).is_ok());
        let e = g(&u("http://user:pw@127.0.0.1:10/x")).unwrap_err();
        assert!(
            e.starts_with("prom_labels cannot connect to http://127.0.0.1:10/x"),
            "{e}"
        );
        assert!(!e.contains("pw"), "{e}");
        assert!(policy(true, &[], &[]).hop_guard("f")(&u("http://h/")).is_ok());
    }

    #[test]
    fn config_errors_show_keys_never_values() {
        let e = promduck_core::config::ConfigError {
            file: PathBuf::from("/etc/secret.yaml"),
            line: Some(1),
            column: Some(1),
            message: r#"invalid type: string "AKIA-s3cr3t", expected struct RawConfig"#.into(),
        };
        let shown = redact_config_error(&e);
        assert_eq!(
            shown,
            r#"/etc/secret.yaml:1:1: invalid type: string "…", expected struct RawConfig"#
        );
        let e = promduck_core::config::ConfigError {
            file: PathBuf::from("c.yaml"),
            line: Some(3),
            column: Some(3),
            message: "prometheus: unknown field `tok3n-s3cr3t`, expected one of `url`, `timeout`"
                .into(),
        };
        assert_eq!(
            redact_config_error(&e),
            "c.yaml:3:3: prometheus: unknown field `…`, expected one of `url`, `timeout`"
        );
    }
}
