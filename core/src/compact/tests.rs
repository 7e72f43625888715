use super::*;
use crate::config::Compression;
use crate::fs::Fs;
use crate::reader::{read_partition, select_files, Column, Layout, Selection};
use crate::schema::PartitionBuilder;
use crate::series::Series;
use std::fs::File;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("promduck-compact-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn storage(dir: &Path) -> StorageConfig {
    StorageConfig {
        output_dir: dir.to_path_buf(),
        compression: Compression::Zstd,
        row_group_size: 1 << 20,
        durable: false,
        s3: Default::default(),
    }
}

fn opts() -> CompactOptions {
    CompactOptions {
        remove_daily_after: Duration::ZERO,
        bloom_filter: false,
        row_group_rows: ROW_GROUP_ROWS,
        replace_partitions: false,
    }
}

/// A daily partition: metrics `m` (2 points, value = base + i) and `n` (1 point).
fn daily(dir: &Path, day: &str, proxy: &str, base: f64, metrics: &[&str]) {
    let mut b = PartitionBuilder::new();
    let end = d(day)
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
        + 86_400_000;
    // Written out of order on purpose: the month file sorts them.
    for m in metrics.iter().rev() {
        let s = Series {
            labels: [("env".to_string(), "prod".to_string())]
                .into_iter()
                .collect(),
            points: vec![(end, base + 1.0), (end - 60_000, base)],
        };
        b.push_series(m, &s, &[]);
    }
    let path = crate::layout::partition_path(dir, d(day), proxy);
    crate::writer::write_partition(
        &Fs::unconfined(),
        &path,
        &b.finish(proxy, d(day)),
        &storage(dir),
    )
    .unwrap();
}

/// [`daily`] as another writer (the Go tool, an older promduck) writes it: no
/// [`crate::layout::WHOLE_KEY`] in its footer.
fn foreign_daily(dir: &Path, day: &str, proxy: &str, base: f64, metrics: &[&str]) {
    daily(dir, day, proxy, base, metrics);
    let path = crate::layout::partition_path(dir, d(day), proxy);
    let rows = crate::reader::partition_rows(
        crate::reader::PartitionReader::open(
            &Fs::unconfined(),
            &PartitionFile {
                day: d(day),
                proxy: proxy.to_string(),
                path: path.clone(),
                layout: Layout::Daily,
                filter: None,
                object: None,
            },
            &partition_spec(None),
        )
        .unwrap(),
    )
    .unwrap();
    let plain = RecordBatch::try_new(partition_schema(), rows.columns().to_vec()).unwrap();
    let mut w =
        ArrowWriter::try_new(File::create(&path).unwrap(), partition_schema(), None).unwrap();
    w.write(&plain).unwrap();
    w.close().unwrap();
}

fn total(dir: &Path, sel: &Selection) -> (usize, f64) {
    let mut rows = 0;
    let mut sum = 0.0;
    for f in select_files(&Fs::unconfined(), dir, sel).unwrap() {
        for b in read_partition(&Fs::unconfined(), &f, &[Column::Value], None, 1024).unwrap() {
            rows += b.len;
            sum += b.value.unwrap().values().iter().sum::<f64>();
        }
    }
    (rows, sum)
}

#[test]
fn a_month_becomes_one_sorted_file_and_reads_the_same() {
    let dir = scratch("month");
    for (i, p) in ["b", "a/x", "c"].iter().enumerate() {
        for day in ["2024-02-01", "2024-02-15", "2024-02-29", "2024-03-01"] {
            daily(&dir, day, p, i as f64 * 10.0, &["m", "n"]);
        }
    }
    let all = Selection::default();
    let before = total(&dir, &all);
    assert_eq!(
        months_with_daily_files(&Fs::unconfined(), &dir, d("2024-03-01")).unwrap(),
        vec![d("2024-02-01")]
    );
    let out = compact_months(
        &Fs::unconfined(),
        &dir,
        &[d("2024-02-01")],
        &storage(&dir),
        &opts(),
        &Cancel::new(),
    );
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!(
        (
            o.status,
            o.daily_files,
            o.removed,
            o.partitions,
            o.rows,
            o.row_groups
        ),
        (MonthStatus::Compacted, 9, 9, 9, 36, 1),
        "{o:?}"
    );
    assert_eq!(total(&dir, &all), before);
    // Only the month file and March's day folder remain.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["2024-02", "2024-03-01"]);
    assert_eq!(std::fs::read_dir(dir.join("2024-02")).unwrap().count(), 1);
    // Sorted by api_proxy, date, metric_name, timestamp.
    let f = select_files(
        &Fs::unconfined(),
        &dir,
        &Selection {
            from: Some(d("2024-02-01")),
            to: Some(d("2024-02-29")),
            proxies: None,
        },
    )
    .unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].layout, Layout::Month);
    let rows = read_partition(
        &Fs::unconfined(),
        &f[0],
        &[
            Column::Proxy,
            Column::Date,
            Column::Metric,
            Column::Timestamp,
        ],
        None,
        1024,
    )
    .unwrap();
    let mut keys = Vec::new();
    for b in &rows {
        for i in 0..b.len {
            keys.push((
                b.proxy.as_ref().unwrap().value(i).to_string(),
                b.date.as_ref().unwrap().value(i),
                b.metric.as_ref().unwrap().value(i).to_string(),
                b.timestamp_us.as_ref().unwrap().value(i),
            ));
        }
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.first().unwrap().0, "a/x");
    // Pruned reads: one day, one proxy, a day range.
    for (sel, rows) in [
        (
            Selection {
                from: Some(d("2024-02-15")),
                to: Some(d("2024-02-15")),
                proxies: Some(vec!["b".into()]),
            },
            4,
        ),
        (
            Selection {
                from: Some(d("2024-02-15")),
                to: Some(d("2024-03-01")),
                proxies: Some(vec!["a/x".into(), "c".into()]),
            },
            24,
        ),
        (
            Selection {
                from: None,
                to: None,
                proxies: Some(vec!["zz".into()]),
            },
            0,
        ),
    ] {
        assert_eq!(total(&dir, &sel).0, rows, "{sel:?}");
    }
    // Nothing left to do: unchanged.
    let again = compact_months(
        &Fs::unconfined(),
        &dir,
        &[d("2024-02-01")],
        &storage(&dir),
        &opts(),
        &Cancel::new(),
    );
    assert_eq!(again[0].status, MonthStatus::Unchanged);
    assert_eq!(again[0].rows, 36);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn daily_files_of_a_compacted_month_are_taken_whole_or_by_the_rule() {
    let dir = scratch("recollect");
    for p in ["a", "b"] {
        daily(&dir, "2024-02-10", p, 0.0, &["m", "n"]);
    }
    compact_months(
        &Fs::unconfined(),
        &dir,
        &[d("2024-02-01")],
        &storage(&dir),
        &opts(),
        &Cancel::new(),
    );
    let all = Selection::default();
    assert_eq!(total(&dir, &all), (8, 4.0));
    // Re-collected by another writer: `m` only, new values. Until compacted again,
    // the month file wins.
    foreign_daily(&dir, "2024-02-10", "a", 100.0, &["m"]);
    assert_eq!(total(&dir, &all), (8, 4.0));
    assert_eq!(
        months_with_daily_files(&Fs::unconfined(), &dir, d("2024-03-01")).unwrap(),
        vec![d("2024-02-01")]
    );
    let o = compact_months(
        &Fs::unconfined(),
        &dir,
        &[d("2024-02-01")],
        &storage(&dir),
        &opts(),
        &Cancel::new(),
    );
    assert_eq!(
        (o[0].status, o[0].daily_files, o[0].removed),
        (MonthStatus::Compacted, 1, 1)
    );
    // A foreign file is merged by the re-collection rule: a: m = 100 + 101 (new),
    // n = 0 + 1 (kept); b unchanged.
    assert_eq!(total(&dir, &all), (8, 201.0 + 1.0 + 2.0));
    // A foreign file with `replace`: taken whole, b: only n = 50 + 51.
    let mut o2 = opts();
    o2.replace_partitions = true;
    foreign_daily(&dir, "2024-02-10", "b", 50.0, &["n"]);
    compact_months(
        &Fs::unconfined(),
        &dir,
        &[d("2024-02-01")],
        &storage(&dir),
        &o2,
        &Cancel::new(),
    );
    assert_eq!(total(&dir, &all), (6, 201.0 + 1.0 + 101.0));
    // promduck's own daily file is the partition's whole state (a collection merged
    // it from the newest archived state, or replaced it): taken whole, a: only m.
    daily(&dir, "2024-02-10", "a", 7.0, &["m"]);
    // A new proxy's day in a compacted month is taken in.
    daily(&dir, "2024-02-11", "new", 5.0, &["n"]);
    compact_months(
        &Fs::unconfined(),
        &dir,
        &[d("2024-02-01")],
        &storage(&dir),
        &opts(),
        &Cancel::new(),
    );
    assert_eq!(total(&dir, &all), (6, 15.0 + 101.0 + 11.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn large_proxies_get_row_groups_of_their_own_never_splitting_a_day() {
    let dir = scratch("groups");
    for day in 1..=5 {
        for p in ["a", "b", "big", "c"] {
            let metrics: &[&str] = if p == "big" {
                &["m", "n", "o", "p"]
            } else {
                &["m"]
            };
            daily(&dir, &format!("2024-01-{day:02}"), p, day as f64, metrics);
        }
    }
    let mut o = opts();
    o.row_group_rows = 20; // a, b: 10 rows each; big: 40 (8 a day); c: 10
    let out = compact_months(
        &Fs::unconfined(),
        &dir,
        &[d("2024-01-01")],
        &storage(&dir),
        &o,
        &Cancel::new(),
    );
    assert_eq!(out[0].rows, 70);
    let f = File::open(month_path(&dir, d("2024-01-01"))).unwrap();
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&f)
        .unwrap();
    let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
    // [a, b] | big days 1-2 | days 3-4 | day 5 | c
    assert_eq!(groups, vec![20, 16, 16, 8, 10]);
    // Each (proxy, day) is in exactly one row group by its statistics.
    let file = select_files(
        &Fs::unconfined(),
        &dir,
        &Selection {
            from: Some(d("2024-01-04")),
            to: Some(d("2024-01-04")),
            proxies: Some(vec!["big".into()]),
        },
    )
    .unwrap();
    let spec = std::sync::Arc::new(crate::reader::ReadSpec {
        want: vec![Column::Value],
        metrics: None,
        batch_rows: 1024,
    });
    let r = crate::reader::PartitionReader::open(&Fs::unconfined(), &file[0], &spec).unwrap();
    assert!(!r.is_exhausted());
    assert_eq!(
        total(
            &dir,
            &Selection {
                from: Some(d("2024-01-04")),
                to: Some(d("2024-01-04")),
                proxies: Some(vec!["big".into()])
            }
        ),
        (8, 4.0 * 9.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_replaced_after_it_was_read_is_kept() {
    let dir = scratch("replaced");
    daily(&dir, "2024-02-10", "a", 0.0, &["m"]);
    let f = &daily_files_of_month(&Fs::unconfined(), &dir, d("2024-02-01")).unwrap()[0];
    let (_, id) = read_daily(&Fs::unconfined(), f).unwrap();
    // Re-collected after compaction read it: a new file at the same path.
    daily(&dir, "2024-02-10", "a", 7.0, &["m"]);
    assert!(!remove_if_same(&Fs::unconfined(), &f.path, id).unwrap());
    assert!(f.path.is_file());
    let (b, id2) = read_daily(&Fs::unconfined(), f).unwrap();
    assert_eq!(
        b.column(2)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .value(0),
        8.0
    );
    assert!(remove_if_same(&Fs::unconfined(), &f.path, id2).unwrap());
    assert!(!f.path.exists());
    // A crash between the rename and the unlink: the next compaction puts it back.
    daily(&dir, "2024-02-10", "a", 0.0, &["m"]);
    let hidden = f
        .path
        .parent()
        .unwrap()
        .join(format!(".a.parquet.abcdefabcdef{DEL_MARKER}"));
    std::fs::rename(&f.path, &hidden).unwrap();
    assert_eq!(
        months_with_daily_files(&Fs::unconfined(), &dir, d("2024-03-01")).unwrap(),
        vec![d("2024-02-01")]
    );
    let out = compact_months(
        &Fs::unconfined(),
        &dir,
        &[d("2024-02-01")],
        &storage(&dir),
        &opts(),
        &Cancel::new(),
    );
    assert_eq!((out[0].daily_files, out[0].removed, out[0].rows), (1, 1, 2));
    assert!(!hidden.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vanished_daily_file_falls_back_to_the_month_file() {
    let dir = scratch("fallback");
    daily(&dir, "2024-02-10", "a", 0.0, &["m"]);
    daily(&dir, "2024-02-10", "b", 3.0, &["m"]);
    let listed = select_files(&Fs::unconfined(), &dir, &Selection::default()).unwrap();
    assert_eq!(listed.len(), 2);
    compact_months(
        &Fs::unconfined(),
        &dir,
        &[d("2024-02-01")],
        &storage(&dir),
        &opts(),
        &Cancel::new(),
    );
    assert!(!listed[0].path.exists());
    let fb = crate::reader::month_fallback(&Fs::unconfined(), &listed[1]).unwrap();
    let b = read_partition(
        &Fs::unconfined(),
        &fb,
        &[Column::Value, Column::Proxy],
        None,
        1024,
    )
    .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(
        b[0].value.as_ref().unwrap().values().to_vec(),
        vec![3.0, 4.0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn months_that_have_not_closed_are_refused() {
    let now = DateTime::parse_from_rfc3339("2024-03-01T00:30:00+00:00")
        .unwrap()
        .with_timezone(&Utc);
    assert!(check_closed(d("2024-02-01"), now, chrono_tz::UTC).is_ok());
    assert!(check_closed(d("2024-03-01"), now, chrono_tz::UTC).is_err());
    // Still February in New York.
    let e = check_closed(d("2024-02-01"), now, chrono_tz::America::New_York)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2024-02") && e.contains("has not closed"), "{e}");
    assert_eq!(parse_month("2024-03").unwrap(), d("2024-03-01"));
    assert!(parse_month("24-03").is_err());
}
