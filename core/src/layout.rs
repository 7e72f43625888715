//! Where partitions live: `<outputDir>/<YYYY-MM-DD>/<proxy>.parquet`, the original
//! tool's layout, so its SQL globs (`data/*/*.parquet`) keep working.
//!
//! A compacted month (see `compact.rs`) is one file, `<outputDir>/<YYYY-MM>/<YYYY-MM>.parquet`,
//! holding every proxy and day of that month: one folder level deep like the daily
//! files, so `data/*/*.parquet` reaches it too, and no `key=value` folder whose key
//! could collide with an in-file column (`date`). Where a month file exists it is
//! the month: readers ignore that month's daily files (left only while compaction
//! runs, or written since, until the next compaction takes them in).
//!
//! A proxy name becomes a file name through a reversible codec: bytes outside
//! `[A-Za-z0-9._-]` (and a leading `.`) are written as `%XX`. Ordinary names stay
//! readable and unchanged; `/`, `..` or a leading dot can never escape `outputDir`
//! or hide a file. The `api_proxy` column always holds the real name.

use chrono::{Datelike, NaiveDate};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::path::{Path, PathBuf};

/// The file extension of partitions.
pub const PARQUET_EXT: &str = "parquet";
/// Marker in temporary file names; readers skip such files.
pub const TMP_MARKER: &str = ".promduck-tmp";
/// Random characters in a temporary file's name (unique across hosts and PID
/// namespaces sharing a volume).
pub const TMP_RAND_CHARS: usize = 12;
/// A temporary file is named `.<file name>.<random><TMP_MARKER>`: this many bytes
/// longer than the partition's file name.
pub const TMP_NAME_OVERHEAD: usize = 1 + 1 + TMP_RAND_CHARS + TMP_MARKER.len();
/// The longest file name the filesystems we target accept (ext4, xfs, btrfs, S3 keys
/// are longer but the local layout is the limit).
pub const MAX_FILE_NAME: usize = 255;

/// The longest proxy name that can be stored when every byte is kept as it is
/// (`[A-Za-z0-9._-]`, no leading `.`).
pub const MAX_PLAIN_PROXY_NAME: usize = MAX_FILE_NAME - TMP_NAME_OVERHEAD - PARQUET_EXT.len() - 1;

/// Why a proxy name cannot be stored (every other name is encoded, see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyNameError {
    #[error("proxy name is empty")]
    Empty,
    #[error("proxy name contains a NUL byte")]
    Nul,
    /// `file_name`: the partition's file name length once encoded, in bytes.
    #[error(
        "proxy name is too long to be stored: its file name would be {file_name} bytes once encoded, \
         and with the temporary name used while writing it, {} bytes; the limit is {MAX_FILE_NAME} \
         (at most {MAX_PLAIN_PROXY_NAME} bytes of plain [A-Za-z0-9._-] characters)",
        .file_name + TMP_NAME_OVERHEAD
    )]
    TooLong { file_name: usize },
}

/// Rejects proxy names that cannot be stored at all (the rest are encoded).
pub fn check_proxy_name(name: &str) -> Result<(), ProxyNameError> {
    if name.is_empty() {
        return Err(ProxyNameError::Empty);
    }
    if name.contains('\0') {
        return Err(ProxyNameError::Nul);
    }
    let file_name = encode_proxy(name).len() + PARQUET_EXT.len() + 1;
    if file_name + TMP_NAME_OVERHEAD > MAX_FILE_NAME {
        return Err(ProxyNameError::TooLong { file_name });
    }
    Ok(())
}

/// The bytes a file stem keeps as they are: `[A-Za-z0-9._-]` (a leading `.` aside).
const STEM_KEEPS: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-');

/// Encodes a proxy name as a file stem: bytes outside `[A-Za-z0-9._-]`, and a
/// leading `.`, as `%XX` (upper-case hex).
pub fn encode_proxy(name: &str) -> String {
    match name.strip_prefix('.') {
        Some(rest) => format!("%2E{}", utf8_percent_encode(rest, STEM_KEEPS)),
        None => utf8_percent_encode(name, STEM_KEEPS).to_string(),
    }
}

/// Decodes a file stem back into the proxy name. `None` if the stem is not
/// well-formed percent-encoding of UTF-8 (a `%` not followed by two hex digits,
/// or bytes that are not UTF-8 once decoded).
pub fn decode_proxy(stem: &str) -> Option<String> {
    let b = stem.as_bytes();
    let well_formed = b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_decode_str(stem)
        .decode_utf8()
        .ok()
        .map(|name| name.into_owned())
}

/// The Parquet key-value metadata key promduck's writer stamps on every file it
/// writes. The original Go tool's files do not have it.
pub const CREATED_BY_KEY: &str = "created_by_promduck";

/// The key-value metadata key of every daily partition promduck writes: the file is
/// the partition's whole state. A collection writes either the archived partition
/// merged with the new answer (the re-collection rule, applied to the newest state:
/// a daily file written since the month's compaction, else the month file's rows) or,
/// with `--replace`/`replace := true`, exactly the new answer. So compaction takes
/// such a file in whole; a daily file without the key (the Go tool's, an older
/// promduck's) is merged with the month file's rows by the re-collection rule. The
/// file says what it is, whichever shell wrote it.
pub const WHOLE_KEY: &str = "promduck_whole_partition";

/// If `stem` is exactly what [`encode_proxy`] makes of some name *and* differs from
/// that name (it holds `%XX`), that name. Such a stem is ambiguous: the original Go
/// tool named files after the raw proxy name, so in its archives `a%2Fb.parquet`
/// is the proxy literally named `a%2Fb`; only the file itself (its
/// [`CREATED_BY_KEY`] stamp) can tell. Every other stem is its own proxy name in
/// both tools' archives (`api-1`, `sp ace`, `x%zz`, `.hidden`, `a%2fb`).
pub fn ambiguous_stem(stem: &str) -> Option<String> {
    if !stem.contains('%') {
        return None;
    }
    let name = decode_proxy(stem)?;
    (encode_proxy(&name) == stem).then_some(name)
}

/// `YYYY-MM-DD`.
pub fn day_dir_name(day: NaiveDate) -> String {
    // Plain integer formatting: chrono's `format` interprets its pattern on every call,
    // and every query formats and parses the archive's day folders.
    if (0..=9999).contains(&day.year()) {
        format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day())
    } else {
        day.format("%Y-%m-%d").to_string()
    }
}

/// Parses a day folder name; anything else under the data dir is ignored.
///
/// Only the canonical spelling, four, two and two digits (`02024-3-01` would also be
/// 2024-03-01 to chrono's parser, and two folders must never claim the same day).
pub fn parse_day_dir(name: &str) -> Option<NaiveDate> {
    let b = name.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)
}

/// The first day of `day`'s month.
pub fn month_of(day: NaiveDate) -> NaiveDate {
    day.with_day(1).expect("every month has a first day")
}

/// The last day of the month that starts on `first`.
pub fn month_end(first: NaiveDate) -> NaiveDate {
    first
        .checked_add_months(chrono::Months::new(1))
        .and_then(|d| d.pred_opt())
        .unwrap_or(NaiveDate::MAX)
}

/// `YYYY-MM` of the month holding `day`.
pub fn month_dir_name(day: NaiveDate) -> String {
    day.format("%Y-%m").to_string()
}

/// Parses a month folder name (`YYYY-MM`, canonical spelling only) into the
/// month's first day.
pub fn parse_month_dir(name: &str) -> Option<NaiveDate> {
    if name.len() != 7 {
        return None;
    }
    NaiveDate::parse_from_str(&format!("{name}-01"), "%Y-%m-%d")
        .ok()
        .filter(|d| month_dir_name(*d) == name)
}

/// The month file's name in its folder: `<YYYY-MM>.parquet` for the month holding `day`.
pub fn month_file_name(day: NaiveDate) -> String {
    format!("{}.{PARQUET_EXT}", month_dir_name(day))
}

/// The month file of the month holding `day`: `<outputDir>/<YYYY-MM>/<YYYY-MM>.parquet`.
pub fn month_path(output_dir: &Path, day: NaiveDate) -> PathBuf {
    output_dir
        .join(month_dir_name(day))
        .join(month_file_name(day))
}

/// The same as a relative key (`/`-separated, for object storage).
pub fn month_key(day: NaiveDate) -> String {
    format!("{}/{}", month_dir_name(day), month_file_name(day))
}

/// A partition's name in its day folder: `<encoded proxy>.parquet`.
pub fn partition_file_name(proxy: &str) -> String {
    format!("{}.{PARQUET_EXT}", encode_proxy(proxy))
}

/// The partition file of one (day, proxy).
pub fn partition_path(output_dir: &Path, day: NaiveDate, proxy: &str) -> PathBuf {
    output_dir
        .join(day_dir_name(day))
        .join(partition_file_name(proxy))
}

/// The same as a relative key (`/`-separated, for object storage).
pub fn partition_key(day: NaiveDate, proxy: &str) -> String {
    format!("{}/{}", day_dir_name(day), partition_file_name(proxy))
}

/// The stem of a Parquet file's name (`<stem>.parquet`); `None` for other files.
/// In a day folder the stem names the proxy (see [`ambiguous_stem`]).
pub fn parquet_stem(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(PARQUET_EXT)?.strip_suffix('.')
}

/// The file the original Go tool wrote for a proxy under a day folder: the raw
/// name (`a/b` is `a/b.parquet`, a file in a subfolder), if the name is a relative
/// path that stays inside the folder (its folders are neither empty, `.` nor `..`).
pub fn raw_relative_file(name: &str) -> Option<String> {
    if name.is_empty() || name.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let last = parts.pop()?;
    if last.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    Some(format!("{name}.{PARQUET_EXT}"))
}

/// The Go tool's Hive-style layout, `year=YYYY/month=MM/day=DD/app=<proxy>/*.parquet`:
/// the value of a `key=value` folder name.
fn hive_value<'a>(name: &'a str, key: &str) -> Option<&'a str> {
    name.strip_prefix(key)?.strip_prefix('=')
}

/// `year=YYYY` (any integer the folder holds).
pub fn parse_hive_year(name: &str) -> Option<i32> {
    hive_value(name, "year")?.parse().ok()
}

/// `month=MM`.
pub fn parse_hive_month(name: &str) -> Option<u32> {
    hive_value(name, "month")?.parse().ok()
}

/// `day=DD`.
pub fn parse_hive_day(name: &str) -> Option<u32> {
    hive_value(name, "day")?.parse().ok()
}

/// `app=<proxy>`: Hive partition values are percent-encoded by convention; a value
/// that is not valid percent-encoding is taken as it is.
pub fn parse_hive_app(name: &str) -> Option<String> {
    let raw = hive_value(name, "app")?;
    Some(decode_proxy(raw).unwrap_or_else(|| raw.to_string()))
}

/// A data file under an `app=` folder: any visible `*.parquet` (file names there are
/// not proxy names; hidden ones are skipped, as Hive-style readers do).
pub fn is_hive_data_file(name: &str) -> bool {
    !name.starts_with('.') && parquet_stem(name).is_some()
}

/// Whether a file name is one of our in-progress temporary files (hidden, ending
/// in the marker; a proxy named `x.promduck-tmp` is an ordinary partition).
pub fn is_temp_file(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TMP_MARKER)
}

/// Where an archive is, as `storage.outputDir` or `data_dir` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder: a plain path or a `file://` URL.
    Local(PathBuf),
    /// `s3://bucket/prefix` (the prefix may be empty).
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// Parses a plain path, `file:///abs/path` or `s3://bucket[/prefix]`; another
    /// scheme is an error naming it.
    pub fn parse(text: &str) -> Result<Location, LocationError> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let rest = rest.trim_end_matches('/');
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LocationError::NoBucket(text.to_string()));
            }
            let prefix = prefix.trim_matches('/');
            if prefix
                .split('/')
                .any(|p| p == "." || p == ".." || (p.is_empty() && !prefix.is_empty()))
            {
                return Err(LocationError::BadPrefix(text.to_string()));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if let Some(rest) = text.strip_prefix("file://") {
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(LocationError::RelativeFileUrl(text.to_string()));
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                return Err(LocationError::UnsupportedScheme {
                    text: text.to_string(),
                    scheme: scheme.to_string(),
                });
            }
        }
        Ok(Location::Local(PathBuf::from(text)))
    }
}

/// Why a text names no archive (each message quotes the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    #[error("{0:?} names no bucket (s3://bucket/prefix)")]
    NoBucket(String),
    #[error("{0:?}: the prefix must not contain empty, `.` or `..` parts")]
    BadPrefix(String),
    #[error("{0:?}: a file:// URL names an absolute path (file:///data/metrics)")]
    RelativeFileUrl(String),
    #[error("{text:?}: unsupported scheme {scheme}:// (use a path, file:// or s3://)")]
    UnsupportedScheme { text: String, scheme: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_unchanged() {
        for n in ["api-proxy-1", "orders_v2", "a.b.c", "X9"] {
            assert_eq!(encode_proxy(n), n);
        }
    }

    #[test]
    fn hostile_names_are_encoded_and_round_trip() {
        let cases = [
            ("..", "%2E."),
            (".hidden", "%2Ehidden"),
            ("a/b", "a%2Fb"),
            ("../../etc/passwd", "%2E.%2F..%2Fetc%2Fpasswd"),
            ("we\"ird", "we%22ird"),
            ("50%", "50%25"),
            ("sp ace", "sp%20ace"),
            ("ü", "%C3%BC"),
        ];
        for (name, enc) in cases {
            assert_eq!(encode_proxy(name), enc, "{name}");
            assert_eq!(decode_proxy(enc).as_deref(), Some(name));
        }
    }

    #[test]
    fn paths_stay_inside_output_dir() {
        let out = Path::new("/data");
        let day = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        for name in ["..", "../x", "/abs", "a/../../b", ".", "\\..\\"] {
            let p = partition_path(out, day, name);
            assert_eq!(p.parent().unwrap(), Path::new("/data/2024-03-01"), "{name}");
            assert!(p
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir)));
            let stem = p.file_stem().unwrap().to_str().unwrap();
            assert_eq!(decode_proxy(stem).as_deref(), Some(name));
            assert!(!stem.starts_with('.'));
        }
    }

    #[test]
    fn day_dirs() {
        let d = NaiveDate::from_ymd_opt(2023, 4, 1).unwrap();
        assert_eq!(day_dir_name(d), "2023-04-01");
        assert_eq!(parse_day_dir("2023-04-01"), Some(d));
        assert_eq!(parse_day_dir("2023-4-1"), None);
        assert_eq!(parse_day_dir("year=2023"), None);
        assert_eq!(parse_day_dir("02023-4-01"), None);
        assert_eq!(parse_day_dir("2023-04-1 "), None);
        assert_eq!(parse_day_dir("2024-02-30"), None);
        assert_eq!(parse_day_dir("+202-01-01"), None);
        assert_eq!(parse_day_dir("-001-01-01"), None);
        assert_eq!(parse_day_dir("2024-٠١-01"), None);
    }

    /// The folder names chrono's pattern wrote and read (and only its canonical spellings)
    /// are the ones formatted and parsed now, for every year of four digits and for
    /// strings close to a date.
    #[test]
    fn day_dirs_match_chrono() {
        let chrono_parse = |name: &str| {
            NaiveDate::parse_from_str(name, "%Y-%m-%d")
                .ok()
                .filter(|d| d.format("%Y-%m-%d").to_string() == name)
        };
        let mut d = NaiveDate::from_ymd_opt(0, 1, 1).unwrap();
        let last = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();
        while d <= last {
            let name = d.format("%Y-%m-%d").to_string();
            assert_eq!(day_dir_name(d), name);
            assert_eq!(parse_day_dir(&name), Some(d), "{name}");
            d = d + chrono::Days::new(1 + u64::from(d.ordinal() % 13));
        }
        for y in [-1, 10_000, 262_000] {
            let d = NaiveDate::from_ymd_opt(y, 6, 1).unwrap();
            assert_eq!(day_dir_name(d), d.format("%Y-%m-%d").to_string());
        }
        let alphabet = b"0123456789-+ ";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            let mut name = *b"2024-03-15";
            for _ in 0..(seed % 3) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                name[(seed % 10) as usize] =
                    alphabet[((seed >> 8) % alphabet.len() as u64) as usize];
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let name = std::str::from_utf8(&name).unwrap();
            assert_eq!(parse_day_dir(name), chrono_parse(name), "{name}");
        }
    }

    #[test]
    fn month_names() {
        let d = NaiveDate::from_ymd_opt(2024, 2, 17).unwrap();
        assert_eq!(month_of(d), NaiveDate::from_ymd_opt(2024, 2, 1).unwrap());
        assert_eq!(
            month_end(month_of(d)),
            NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
        );
        assert_eq!(
            month_end(NaiveDate::from_ymd_opt(2023, 12, 1).unwrap()),
            NaiveDate::from_ymd_opt(2023, 12, 31).unwrap()
        );
        assert_eq!(month_dir_name(d), "2024-02");
        assert_eq!(parse_month_dir("2024-02"), Some(month_of(d)));
        for bad in [
            "2024-2",
            "2024-13",
            "2024-02-01",
            "02024-2",
            "year=2024",
            "2024-00",
        ] {
            assert_eq!(parse_month_dir(bad), None, "{bad}");
        }
        assert_eq!(
            month_path(Path::new("/data"), d),
            Path::new("/data/2024-02/2024-02.parquet")
        );
        // A month folder is never a day folder, and the other way round.
        assert_eq!(parse_day_dir("2024-02"), None);
        assert_eq!(parse_month_dir("2024-02-01"), None);
    }

    #[test]
    fn file_names_and_keys() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        assert_eq!(partition_file_name("a/b"), "a%2Fb.parquet");
        assert_eq!(partition_key(d, ".x"), "2024-03-01/%2Ex.parquet");
        assert_eq!(month_file_name(d), "2024-03.parquet");
        assert_eq!(month_key(d), "2024-03/2024-03.parquet");
        assert_eq!(parquet_stem("a%2Fb.parquet"), Some("a%2Fb"));
        assert_eq!(parquet_stem(".parquet"), Some(""));
        for other in ["parquet", "a.parquet.tmp", "aparquet", "a.Parquet"] {
            assert_eq!(parquet_stem(other), None, "{other}");
        }
    }

    #[test]
    fn go_tool_raw_files() {
        assert_eq!(raw_relative_file("a/b").as_deref(), Some("a/b.parquet"));
        assert_eq!(
            raw_relative_file("sp ace").as_deref(),
            Some("sp ace.parquet")
        );
        for bad in ["", "a/", "/a", "../a", "a/./b", "a//b", "a\0b"] {
            assert_eq!(raw_relative_file(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hive_folders() {
        assert_eq!(parse_hive_year("year=2024"), Some(2024));
        assert_eq!(parse_hive_month("month=03"), Some(3));
        assert_eq!(parse_hive_day("day=1"), Some(1));
        assert_eq!(parse_hive_day("month=1"), None);
        assert_eq!(parse_hive_year("year2024"), None);
        assert_eq!(parse_hive_year("year=x"), None);
        assert_eq!(parse_hive_app("app=a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(parse_hive_app("app=50%").as_deref(), Some("50%"));
        assert_eq!(parse_hive_app("apps=x"), None);
        assert!(is_hive_data_file("part-0.parquet"));
        assert!(!is_hive_data_file(".part-0.parquet"));
        assert!(!is_hive_data_file("part-0.csv"));
    }

    #[test]
    fn ambiguous_stems_are_exactly_the_encoded_ones() {
        // Encodings that differ from the name: only the file can tell which tool wrote it.
        for (stem, name) in [
            ("a%2Fb", "a/b"),
            ("sp%20ace", "sp ace"),
            ("%2Ehidden", ".hidden"),
            ("50%25", "50%"),
            ("%C3%A9", "é"),
        ] {
            assert_eq!(ambiguous_stem(stem).as_deref(), Some(name), "{stem}");
            assert_eq!(encode_proxy(name), stem);
        }
        // Never produced by encode_proxy: the raw name in both tools' archives.
        for stem in [
            "api-proxy-1",
            "sp ace",
            "é",
            "x%zz",
            "a%2fb",
            "%41",
            ".hidden",
            "50%",
            "a%",
            "%2E%2E",
            "%FF",
        ] {
            assert_eq!(ambiguous_stem(stem), None, "{stem}");
        }
    }

    #[test]
    fn rejects_unstorable() {
        assert!(check_proxy_name("").is_err());
        assert!(check_proxy_name("a\0b").is_err());
        assert!(check_proxy_name(&"/".repeat(100)).is_err());
        assert!(check_proxy_name("ok").is_ok());
        // The longest storable plain name, and one byte more: the temporary name
        // written next to the partition must fit in a file name too.
        let max = MAX_PLAIN_PROXY_NAME;
        assert_eq!(
            max,
            MAX_FILE_NAME - TMP_NAME_OVERHEAD - PARQUET_EXT.len() - 1
        );
        assert!(check_proxy_name(&"a".repeat(max)).is_ok());
        let e = check_proxy_name(&"a".repeat(max + 1)).unwrap_err();
        assert_eq!(e, ProxyNameError::TooLong { file_name: 229 });
        // The message as it was when this was a string.
        assert_eq!(
            e.to_string(),
            "proxy name is too long to be stored: its file name would be 229 bytes once encoded, \
             and with the temporary name used while writing it, 256 bytes; the limit is 255 \
             (at most 220 bytes of plain [A-Za-z0-9._-] characters)"
        );
        assert_eq!(
            check_proxy_name("").unwrap_err().to_string(),
            "proxy name is empty"
        );
        assert_eq!(
            check_proxy_name("a\0b").unwrap_err().to_string(),
            "proxy name contains a NUL byte"
        );
    }

    /// The hand-written codec this module used before the `percent-encoding` crate:
    /// the reference the crate-based one must match byte for byte.
    mod reference {
        pub fn encode(name: &str) -> String {
            let mut out = String::with_capacity(name.len());
            for (i, b) in name.bytes().enumerate() {
                let safe =
                    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
                if safe {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }

        pub fn decode(stem: &str) -> Option<String> {
            let bytes = stem.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let hex = stem.get(i + 1..i + 3)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).ok()
        }
    }

    #[test]
    fn decoding_refuses_what_is_not_percent_encoding() {
        for stem in [
            "%", "a%", "a%2", "%zz", "%2G", "%+F", "%-1", "%\u{e9}1", "%FF", "%C3",
        ] {
            assert_eq!(decode_proxy(stem), None, "{stem:?}");
        }
        // `%+F`: the old decoder took `+F` for 15 (`from_str_radix` accepts a sign);
        // no encoder ever wrote it, and the crate's decoder does not read it.
        assert_eq!(reference::decode("%+F").as_deref(), Some("\u{f}"));
        assert_eq!(decode_proxy("%41%2e%2E"), Some("A..".to_string()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Any name (any Unicode, with `.`, `/`, `%` and controls made likely):
        /// the same stem as the hand-written encoder, and back.
        #[test]
        fn encoding_matches_the_reference(name in "([./%A-Za-z0-9_ -]|\\PC|\\p{Cc}){0,40}") {
            let stem = encode_proxy(&name);
            proptest::prop_assert_eq!(&stem, &reference::encode(&name));
            proptest::prop_assert!(stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b)));
            proptest::prop_assert!(!stem.starts_with('.'));
            proptest::prop_assert_eq!(decode_proxy(&stem), Some(name.clone()));
            proptest::prop_assert_eq!(reference::decode(&stem), Some(name));
        }

        /// Any stem, well-formed or not: the same name as the hand-written decoder,
        /// except for a `%` followed by a sign, which only the old one read.
        #[test]
        fn decoding_matches_the_reference(stem in "([%.A-Za-z0-9+-]|%[0-9A-Fa-f]{2}|%[C-Fc-f][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|\\PC){0,24}") {
            let signed = stem.contains("%+");
            if !signed {
                proptest::prop_assert_eq!(decode_proxy(&stem), reference::decode(&stem));
            } else {
                proptest::prop_assert!(decode_proxy(&stem).is_none());
            }
        }
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("./data").unwrap(),
            Location::Local("./data".into())
        );
        assert_eq!(
            Location::parse("file:///srv/m").unwrap(),
            Location::Local("/srv/m".into())
        );
        assert_eq!(
            Location::parse("file://localhost/srv/m").unwrap(),
            Location::Local("/srv/m".into())
        );
        assert_eq!(
            Location::parse("s3://b").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            Location::parse("s3://b/metrics/prod/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "metrics/prod".into()
            }
        );
        for bad in [
            "s3://",
            "s3:///x",
            "s3://b/a//c",
            "s3://b/../c",
            "file://rel",
            "gs://b/x",
        ] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        // A colon in a folder name is still a folder.
        assert_eq!(
            Location::parse("data:2024").unwrap(),
            Location::Local("data:2024".into())
        );
    }
}
