//! The reader's unit tests: selection, decoding, streaming.

use super::*;
use crate::fs::Fs;
use crate::layout::{encode_proxy, CREATED_BY_KEY};
use arrow::array::ArrayRef;
use std::path::Path;

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

    let all = select_files(&Fs::unconfined(), &root, &Selection::default()).unwrap();
    assert_eq!(all.len(), 11);
    let sel = Selection {
        from: Some(d("2024-03-02")),
        to: Some(d("2024-03-02")),
        proxies: None,
    };
    let got: Vec<_> = select_files(&Fs::unconfined(), &root, &sel)
        .unwrap()
        .into_iter()
        .map(|f| (f.proxy, f.layout))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), Layout::Daily),
            ("b".into(), Layout::Daily),
            ("c".into(), Layout::Hive),
            ("we\"ird".into(), Layout::Daily)
        ]
    );
    let sel = Selection {
        from: None,
        to: None,
        proxies: Some(vec!["we\"ird".into(), "zzz".into()]),
    };
    assert_eq!(
        select_files(&Fs::unconfined(), &root, &sel).unwrap().len(),
        3
    );
    let sel = Selection {
        from: Some(d("2024-03-03")),
        to: Some(d("2024-03-01")),
        proxies: None,
    };
    assert!(select_files(&Fs::unconfined(), &root, &sel)
        .unwrap()
        .is_empty());
    assert!(select_files(
        &Fs::unconfined(),
        &root.join("missing"),
        &Selection::default()
    )
    .unwrap_err()
    .to_string()
    .contains("missing"));
    let _ = std::fs::remove_dir_all(&root);
}

use arrow::array::StringArray as Utf8;
use std::sync::Arc;

/// A fresh folder under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("promduck-reader-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// Writes a Parquet file with the given columns; `promduck` stamps it as promduck's writer does.
fn write(path: &Path, cols: Vec<(&str, ArrayRef)>, promduck: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut props = parquet::file::properties::WriterProperties::builder();
    if promduck {
        props = props.set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            CREATED_BY_KEY.to_string(),
            "test".to_string(),
        )]));
    }
    let f = std::fs::File::create(path).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props.build())).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A minimal partition of `proxy` on `day` (one row, value 1.0).
fn partition(path: &Path, day: &str, proxy: &str, promduck: bool) {
    write(
        path,
        vec![
            (
                "timestamp",
                Arc::new(Int64Array::from(vec![1_000])) as ArrayRef,
            ),
            ("metric_name", Arc::new(Utf8::from(vec!["m"]))),
            ("value", Arc::new(Float64Array::from(vec![1.0]))),
            ("api_proxy", Arc::new(Utf8::from(vec![proxy]))),
            (
                "date",
                Arc::new(Date32Array::from(vec![crate::schema::date32(d(day))])),
            ),
        ],
        promduck,
    );
}

fn names(root: &Path, sel: &Selection) -> Vec<(String, String)> {
    select_files(&Fs::unconfined(), root, sel)
        .unwrap()
        .into_iter()
        .map(|f| {
            (
                f.proxy,
                f.path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .collect()
}

fn proxies(ps: &[&str]) -> Selection {
    Selection {
        from: None,
        to: None,
        proxies: Some(ps.iter().map(|p| p.to_string()).collect()),
    }
}

#[test]
fn go_archive_file_names_are_raw_proxy_names() {
    let root = scratch("go-names");
    let go = root.join("2024-03-01");
    for (file, proxy) in [
        ("sp ace", "sp ace"),
        ("é", "é"),
        ("x%zz", "x%zz"),
        (".hidden", ".hidden"),
        ("a/b", "a/b"),
        ("a%2Fb", "a%2Fb"),
        ("c/d/e", "c/d/e"),
    ] {
        partition(
            &go.join(format!("{file}.parquet")),
            "2024-03-01",
            proxy,
            false,
        );
    }
    // promduck's files for the same names, a day later.
    let pd = root.join("2024-03-02");
    for proxy in ["sp ace", "a/b", "a%2Fb", ".hidden"] {
        partition(
            &pd.join(format!("{}.parquet", encode_proxy(proxy))),
            "2024-03-02",
            proxy,
            true,
        );
    }
    touch(&pd.join(".x.parquet.abc-1.promduck-tmp"));
    let all = names(&root, &Selection::default());
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        all,
        vec![
            s(".hidden", "2024-03-01/.hidden.parquet"),
            s("a%2Fb", "2024-03-01/a%2Fb.parquet"),
            s("a/b", "2024-03-01/a/b.parquet"),
            s("c/d/e", "2024-03-01/c/d/e.parquet"),
            s("sp ace", "2024-03-01/sp ace.parquet"),
            s("x%zz", "2024-03-01/x%zz.parquet"),
            s("é", "2024-03-01/é.parquet"),
            s(".hidden", "2024-03-02/%2Ehidden.parquet"),
            s("a%2Fb", "2024-03-02/a%252Fb.parquet"),
            s("a/b", "2024-03-02/a%2Fb.parquet"),
            s("sp ace", "2024-03-02/sp%20ace.parquet"),
        ]
    );
    // Looking names up finds exactly the files listing gives them.
    for name in [".hidden", "a%2Fb", "a/b", "c/d/e", "sp ace", "x%zz", "é"] {
        let want: Vec<_> = all.iter().filter(|(p, _)| p == name).cloned().collect();
        assert_eq!(names(&root, &proxies(&[name])), want, "{name}");
    }
    // Names that are no file, or that would leave the day folder.
    for name in [
        "a",
        "c/d",
        "../2024-03-01/sp ace",
        "/etc/passwd",
        "a//b",
        "./a/b",
        "x%ZZ",
    ] {
        assert_eq!(names(&root, &proxies(&[name])), vec![], "{name}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn each_file_is_selected_once() {
    let root = scratch("dedup");
    for day in ["2024-03-01", "2024-03-02"] {
        partition(&root.join(day).join("api.parquet"), day, "api", true);
        partition(&root.join(day).join("a%2Fb.parquet"), day, "a/b", true);
    }
    let sel = proxies(&["api", "api", "a/b", "a/b"]);
    assert_eq!(
        select_files(&Fs::unconfined(), &root, &sel).unwrap().len(),
        4
    );
    // Day folders reachable twice: a symlinked day, a symlink to the data dir,
    // a subfolder linking back up, a symlinked file.
    std::os::unix::fs::symlink(root.join("2024-03-01"), root.join("2024-03-05")).unwrap();
    std::os::unix::fs::symlink(root.join("2024-03-01"), root.join("2024-02-28")).unwrap();
    std::os::unix::fs::symlink(&root, root.join("2024-03-09")).unwrap();
    std::os::unix::fs::symlink("..", root.join("2024-03-02").join("up")).unwrap();
    std::os::unix::fs::symlink("api.parquet", root.join("2024-03-02").join("same.parquet"))
        .unwrap();
    let all: Vec<_> = select_files(&Fs::unconfined(), &root, &Selection::default())
        .unwrap()
        .into_iter()
        .map(|f| (f.day.to_string(), f.proxy))
        .collect();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        all,
        vec![
            s("2024-03-01", "a/b"),
            s("2024-03-01", "api"),
            s("2024-03-02", "a/b"),
            s("2024-03-02", "api")
        ]
    );
    // Selected alone, a symlinked day is its own selection (its rows are checked when read).
    let sel = Selection {
        from: Some(d("2024-03-05")),
        to: Some(d("2024-03-05")),
        proxies: Some(vec!["api".into(), "api".into()]),
    };
    let got = select_files(&Fs::unconfined(), &root, &sel).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, root.join("2024-03-05/api.parquet"));
    let e = read_partition(&Fs::unconfined(), &got[0], &[Column::Value], None, 1024)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2024-03-05/api.parquet")
            && e.contains("`date`")
            && e.contains("2024-03-01")
            && e.contains("says 2024-03-05"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

fn file_with(root: &Path, day: &str, cols: Vec<(&str, ArrayRef)>, promduck: bool) -> PartitionFile {
    let path = root.join(day).join("p.parquet");
    let mut all: Vec<(&str, ArrayRef)> = vec![
        (
            "timestamp",
            Arc::new(Int64Array::from(vec![Some(1_000), None])) as ArrayRef,
        ),
        ("metric_name", Arc::new(Utf8::from(vec!["m", "m"]))),
        ("value", Arc::new(Float64Array::from(vec![1.5, 2.5]))),
    ];
    for (n, c) in cols {
        all.retain(|(m, _)| *m != n);
        all.push((n, c));
    }
    write(&path, all, promduck);
    PartitionFile {
        day: d(day),
        proxy: "p".into(),
        path,
        layout: Layout::Daily,
        filter: None,
        object: None,
    }
}

fn read_err(f: &PartitionFile, want: &[Column]) -> String {
    read_partition(&Fs::unconfined(), f, want, None, 1024)
        .unwrap_err()
        .to_string()
}

#[test]
fn conversions_are_exact_or_errors_naming_file_column_and_value() {
    let root = scratch("convert");
    let all = &Column::ALL;
    // A VARCHAR value that is not a number.
    let f = file_with(
        &root,
        "2024-03-01",
        vec![(
            "value",
            Arc::new(Utf8::from(vec![Some("1.25"), Some("abc")])),
        )],
        false,
    );
    let e = read_err(&f, &[Column::Value]);
    assert!(
        e.starts_with(&f.path.display().to_string())
            && e.contains("`value`")
            && e.contains("'abc'"),
        "{e}"
    );
    // Numbers in strings convert exactly; NULLs stay NULL.
    let f = file_with(
        &root,
        "2024-03-01",
        vec![("value", Arc::new(Utf8::from(vec![Some("1.25"), None])))],
        false,
    );
    let b = &read_partition(&Fs::unconfined(), &f, &[Column::Value], None, 1024).unwrap()[0];
    assert_eq!(
        b.value.as_ref().unwrap(),
        &Float64Array::from(vec![Some(1.25), None])
    );
    // Integers a DOUBLE cannot hold exactly.
    let f = file_with(
        &root,
        "2024-03-01",
        vec![("value", Arc::new(Int64Array::from(vec![1, (1 << 53) + 1])))],
        false,
    );
    let e = read_err(&f, &[Column::Value]);
    assert!(
        e.contains("`value`") && e.contains("9007199254740993"),
        "{e}"
    );
    let f = file_with(
        &root,
        "2024-03-01",
        vec![("value", Arc::new(Int64Array::from(vec![1, 1 << 53])))],
        false,
    );
    let b = &read_partition(&Fs::unconfined(), &f, &[Column::Value], None, 1024).unwrap()[0];
    assert_eq!(
        b.value.as_ref().unwrap(),
        &Float64Array::from(vec![1.0, 9007199254740992.0])
    );
    // A `date` that is not a date, in a query that does not even ask for it.
    let f = file_with(
        &root,
        "2024-03-01",
        vec![(
            "date",
            Arc::new(Utf8::from(vec!["2024-03-01", "not-a-date"])),
        )],
        false,
    );
    for want in [&[Column::Value][..], all] {
        let e = read_err(&f, want);
        assert!(
            e.contains("p.parquet") && e.contains("`date`") && e.contains("'not-a-date'"),
            "{e}"
        );
    }
    // A date other than the folder's.
    let f = file_with(
        &root,
        "2024-03-01",
        vec![(
            "date",
            Arc::new(Utf8::from(vec![Some("2024-03-01"), Some("2024-02-29")])),
        )],
        false,
    );
    let e = read_err(&f, &[Column::Value]);
    assert!(
        e.contains("`date`")
            && e.contains("row 1 holds 2024-02-29")
            && e.contains("says 2024-03-01"),
        "{e}"
    );
    // The folder's day (as text, as the Go tool wrote it) and NULL dates read fine.
    let f = file_with(
        &root,
        "2024-03-01",
        vec![("date", Arc::new(Utf8::from(vec![Some("2024-03-01"), None])))],
        false,
    );
    let b = &read_partition(&Fs::unconfined(), &f, all, None, 1024).unwrap()[0];
    let day = crate::schema::date32(d("2024-03-01"));
    assert_eq!(
        b.date.as_ref().unwrap(),
        &Date32Array::from(vec![Some(day), None])
    );
    assert_eq!(
        b.timestamp_us.as_ref().unwrap(),
        &Int64Array::from(vec![Some(1_000_000), None])
    );
    // promduck's own files: statistics vouch for the day, or the rows are checked.
    let good = file_with(
        &root,
        "2024-03-02",
        vec![("date", Arc::new(Date32Array::from(vec![day + 1, day + 1])))],
        true,
    );
    assert_eq!(
        read_partition(&Fs::unconfined(), &good, &[Column::Value], None, 1024).unwrap()[0].len,
        2
    );
    let bad = file_with(
        &root,
        "2024-03-03",
        vec![("date", Arc::new(Date32Array::from(vec![day + 2, day])))],
        true,
    );
    let e = read_err(&bad, &[Column::Value]);
    assert!(
        e.contains("row 1 holds 2024-03-01") && e.contains("says 2024-03-03"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn timestamps_never_overflow_silently() {
    let root = scratch("ts");
    let ts = |unit: TimeUnit, v: Vec<i64>| -> ArrayRef {
        use arrow::array::*;
        match unit {
            TimeUnit::Second => Arc::new(TimestampSecondArray::from(v)),
            TimeUnit::Millisecond => Arc::new(TimestampMillisecondArray::from(v)),
            TimeUnit::Microsecond => Arc::new(TimestampMicrosecondArray::from(v)),
            TimeUnit::Nanosecond => Arc::new(TimestampNanosecondArray::from(v)),
        }
    };
    // Exact conversions, sub-millisecond parts kept.
    for (unit, raw, us) in [
        (TimeUnit::Second, 1_709_251_200, 1_709_251_200_000_000),
        (
            TimeUnit::Millisecond,
            1_709_251_200_123,
            1_709_251_200_123_000,
        ),
        (
            TimeUnit::Microsecond,
            1_709_251_200_123_456,
            1_709_251_200_123_456,
        ),
        (TimeUnit::Nanosecond, -1_500, -2),
    ] {
        let f = file_with(
            &root,
            "2024-03-01",
            vec![("timestamp", ts(unit, vec![raw, 0]))],
            false,
        );
        let b =
            &read_partition(&Fs::unconfined(), &f, &[Column::Timestamp], None, 1024).unwrap()[0];
        assert_eq!(b.timestamp_us.as_ref().unwrap().value(0), us, "{unit:?}");
    }
    for (col, needle) in [
        (
            Arc::new(Int64Array::from(vec![0, i64::MAX / 999])) as ArrayRef,
            "9232604641496272",
        ),
        (
            Arc::new(Int64Array::from(vec![0, i64::MIN])) as ArrayRef,
            "-9223372036854775808",
        ),
        (
            ts(TimeUnit::Second, vec![0, 9_223_372_036_855]),
            "9223372036855 (seconds",
        ),
        (
            ts(TimeUnit::Microsecond, vec![0, i64::MAX]),
            "9223372036854775807 (microseconds",
        ),
        (
            Arc::new(arrow::array::UInt64Array::from(vec![0, u64::MAX])) as ArrayRef,
            "18446744073709551615",
        ),
    ] {
        let f = file_with(&root, "2024-03-01", vec![("timestamp", col)], false);
        let e = read_err(&f, &[Column::Timestamp]);
        assert!(
            e.contains("p.parquet") && e.contains("`timestamp`") && e.contains(needle),
            "{e}"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn partitions_are_read_a_batch_at_a_time() {
    let root = scratch("stream");
    let path = root.join("2024-03-01").join("p.parquet");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let n = 5_000usize;
    let day = crate::schema::date32(d("2024-03-01"));
    // A foreign file (dates checked row by row) of 1,000-row row groups; row 4,500 has another day.
    let batch = RecordBatch::try_from_iter(vec![
        (
            "timestamp",
            Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| 1_709_251_200_000 + i),
            )) as ArrayRef,
        ),
        (
            "metric_name",
            Arc::new(Utf8::from_iter_values((0..n).map(|i| {
                if (3_000..3_010).contains(&i) {
                    "z"
                } else {
                    "m"
                }
            }))),
        ),
        (
            "value",
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
        ),
        (
            "date",
            Arc::new(Date32Array::from_iter_values((0..n).map(|i| {
                if i == 4_500 {
                    day - 1
                } else {
                    day
                }
            }))),
        ),
    ])
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(1_000))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let file = PartitionFile {
        day: d("2024-03-01"),
        proxy: "p".into(),
        path,
        layout: Layout::Daily,
        filter: None,
        object: None,
    };

    // Batches come one per call; the bad date is found when its batch is read.
    let spec = Arc::new(ReadSpec {
        want: vec![Column::Value],
        metrics: None,
        batch_rows: 1_024,
    });
    let mut r = PartitionReader::open(&Fs::unconfined(), &file, &spec).unwrap();
    let mut seen = 0;
    for _ in 0..4 {
        assert!(!r.is_exhausted());
        let b = r.next_batch().unwrap().unwrap();
        assert_eq!(b.value.as_ref().unwrap().value(0), seen as f64);
        seen += b.len;
    }
    assert_eq!(seen, 4_096);
    let e = r.next_batch().unwrap_err().to_string();
    assert!(
        e.contains("p.parquet") && e.contains("`date`") && e.contains("row 4500 holds 2024-02-29"),
        "{e}"
    );
    assert!(read_partition(&Fs::unconfined(), &file, &[Column::Value], None, 1_024).is_err());

    // A metric filter skips batches it empties; the reader knows when it is done.
    let spec = Arc::new(ReadSpec {
        want: vec![Column::Value],
        metrics: Some(vec!["z".into()]),
        batch_rows: 4_096,
    });
    let mut r = PartitionReader::open(&Fs::unconfined(), &file, &spec).unwrap();
    let b = r.next_batch().unwrap().unwrap();
    assert_eq!(
        b.value.as_ref().unwrap(),
        &Float64Array::from_iter_values((3_000..3_010).map(|i| i as f64))
    );
    assert!(!r.is_exhausted());
    assert!(r.next_batch().unwrap_err().to_string().contains("row 4500"));

    // A small file is exhausted right after its only batch, without another read.
    let small = file_with(&root, "2024-03-02", vec![], true);
    let spec = Arc::new(ReadSpec {
        want: Column::ALL.to_vec(),
        metrics: None,
        batch_rows: 2_048,
    });
    let mut r = PartitionReader::open(&Fs::unconfined(), &small, &spec).unwrap();
    assert!(!r.is_exhausted());
    assert_eq!(r.next_batch().unwrap().unwrap().len, 2);
    assert!(r.is_exhausted());
    assert!(r.next_batch().unwrap().is_none());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn labels_without_keys_are_errors() {
    let root = scratch("labels");
    let t = DataType::Struct(
        vec![
            arrow::datatypes::Field::new("key", DataType::Utf8, true),
            arrow::datatypes::Field::new("value", DataType::Utf8, true),
        ]
        .into(),
    );
    let keys = Arc::new(Utf8::from(vec![Some("env"), None])) as ArrayRef;
    let vals = Arc::new(Utf8::from(vec![Some("prod"), Some("x")])) as ArrayRef;
    let DataType::Struct(fields) = t else {
        unreachable!()
    };
    let entries = arrow::array::StructArray::new(fields.clone(), vec![keys, vals], None);
    let list = arrow::array::ListArray::new(
        Arc::new(arrow::datatypes::Field::new(
            "item",
            DataType::Struct(fields),
            true,
        )),
        OffsetBuffer::new(vec![0, 1, 2].into()),
        Arc::new(entries),
        None,
    );
    let f = file_with(
        &root,
        "2024-03-01",
        vec![("labels", Arc::new(list) as ArrayRef)],
        false,
    );
    let e = read_err(&f, &[Column::Labels]);
    assert!(
        e.contains("p.parquet") && e.contains("`labels`") && e.contains("NULL"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Files below and above [`READ_WHOLE`] (read in one piece, or by column chunk from the
/// file) give the same rows; a damaged one is an error naming it either way.
#[test]
fn small_and_large_files_read_the_same() {
    let root = scratch("whole");
    let rows = |n: usize| {
        vec![
            (
                "timestamp",
                Arc::new(Int64Array::from_iter_values(
                    (0..n as i64).map(|i| 1_709_251_200_000 + i),
                )) as ArrayRef,
            ),
            (
                "metric_name",
                Arc::new(Utf8::from_iter_values(
                    (0..n).map(|i| format!("m{}", i % 3)),
                )),
            ),
            (
                // Not compressible to less than READ_WHOLE at 300,000 rows.
                "value",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| (i as f64).sqrt() * 1.000_000_1),
                )),
            ),
        ]
    };
    let spec = Arc::new(ReadSpec {
        want: vec![Column::Timestamp, Column::Metric, Column::Value],
        metrics: Some(vec!["m1".into()]),
        batch_rows: 4_096,
    });
    for (day, n) in [("2024-03-01", 3_000usize), ("2024-03-02", 300_000)] {
        let f = file_with(&root, day, rows(n), false);
        let size = std::fs::metadata(&f.path).unwrap().len();
        assert_eq!(size > READ_WHOLE, n == 300_000, "{size} bytes");
        let mut r = PartitionReader::open(&Fs::unconfined(), &f, &spec).unwrap();
        let mut got = Vec::new();
        while let Some(b) = r.next_batch().unwrap() {
            got.extend(b.value.as_ref().unwrap().values().iter().copied());
        }
        let want: Vec<f64> = (0..n)
            .filter(|i| i % 3 == 1)
            .map(|i| (i as f64).sqrt() * 1.000_000_1)
            .collect();
        assert_eq!(got, want, "{n} rows");
        // The footer of a damaged file: an error naming the file.
        let bytes = std::fs::read(&f.path).unwrap();
        std::fs::write(&f.path, &bytes[..bytes.len() - 3]).unwrap();
        let e = PartitionReader::open(&Fs::unconfined(), &f, &spec)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(day) && e.contains("p.parquet"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
