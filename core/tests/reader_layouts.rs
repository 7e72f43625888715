//! The reader on every layout it reads, through its public API: promduck's daily
//! files, the original Go tool's daily files (raw file names, `date` as text, labels
//! as a list of key/value structs), its Hive layout (`year=/month=/day=/app=`, no
//! `api_proxy`/`date` columns: both come from the path) and compacted month files
//! (read in part by day and proxy). Each test writes its files with arrow-rs, reads
//! them back and compares every column with values written down independently: epoch
//! microseconds, Date32 day numbers, label offsets, keys and values.

use arrow::array::{
    Array, ArrayRef, Date32Array, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    Int8Array, ListArray, MapArray, StringArray, StructArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt16Array,
    UInt32Array, UInt64Array, UInt8Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use promduck_core::config::StorageConfig;
use promduck_core::fs::Fs;
use promduck_core::layout::{encode_proxy, CREATED_BY_KEY};
use promduck_core::reader::{
    daily_files_of_month, month_fallback, month_partitions, read_partition, select_files,
    written_by_promduck, Column, Layout, PartitionFile, ReadBatch, Selection,
};
use promduck_core::schema::PartitionBuilder;
use std::path::{Path, PathBuf};
use std::sync::Arc;

// --- helpers -------------------------------------------------------------------------------

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Days since 1970-01-01 (a DATE's Date32 value), counted here without the library.
fn days_since_epoch(s: &str) -> i32 {
    (day(s) - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

/// Epoch milliseconds of midnight UTC of a day.
fn midnight_ms(s: &str) -> i64 {
    days_since_epoch(s) as i64 * 86_400_000
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Writes a Parquet file; `stamp` adds promduck's footer stamp, `row_group_rows` caps
/// row groups (else one).
fn write(path: &Path, cols: Vec<(&str, ArrayRef)>, stamp: bool, row_group_rows: Option<usize>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(row_group_rows);
    if stamp {
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

/// One row of a label list: `None` is a NULL list; entries are `(key, value)`.
type LabelRow<'a> = Option<Vec<(Option<&'a str>, Option<&'a str>)>>;

/// The Go tool's labels: `LIST(STRUCT(<key>, <value>))`, one `Option` per row (`None`:
/// a NULL list), each entry `(key, value)`.
fn label_list(key: &str, value: &str, rows: &[LabelRow]) -> ArrayRef {
    label_list_ordered(key, value, false, rows)
}

/// [`label_list`] with the struct's value field first when `value_first`.
fn label_list_ordered(key: &str, value: &str, value_first: bool, rows: &[LabelRow]) -> ArrayRef {
    let entries: Vec<&(Option<&str>, Option<&str>)> = rows.iter().flatten().flatten().collect();
    let keys = StringArray::from(entries.iter().map(|e| e.0).collect::<Vec<_>>());
    let values = StringArray::from(entries.iter().map(|e| e.1).collect::<Vec<_>>());
    let mut fields = vec![
        Field::new(key, DataType::Utf8, true),
        Field::new(value, DataType::Utf8, true),
    ];
    let mut columns = vec![Arc::new(keys) as ArrayRef, Arc::new(values)];
    if value_first {
        fields.reverse();
        columns.reverse();
    }
    let fields = Fields::from(fields);
    let structs = StructArray::new(fields.clone(), columns, None);
    let lens = rows.iter().map(|r| r.as_ref().map_or(0, Vec::len));
    let nulls = NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>());
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(fields), true)),
        OffsetBuffer::from_lengths(lens),
        Arc::new(structs),
        Some(nulls),
    ))
}

/// The labels of a read batch as `Option<Vec<(key, value)>>` per row.
type Labels = Vec<Option<Vec<(String, Option<String>)>>>;

fn labels_of(b: &ReadBatch) -> Labels {
    let l = b.labels.as_ref().expect("labels were asked for");
    let offs = l.offsets.as_ref();
    (0..b.len)
        .map(|r| {
            if l.nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                return None;
            }
            Some(
                (offs[r] as usize..offs[r + 1] as usize)
                    .map(|j| {
                        (
                            l.keys.value(j).to_string(),
                            (!l.values.is_null(j)).then(|| l.values.value(j).to_string()),
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

fn label_row(kv: &[(&str, Option<&str>)]) -> Option<Vec<(String, Option<String>)>> {
    Some(
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .collect(),
    )
}

/// Every row of a file, all columns, in one batch.
fn read_all(file: &PartitionFile) -> ReadBatch {
    read_columns(file, &Column::ALL)
}

fn read_columns(file: &PartitionFile, want: &[Column]) -> ReadBatch {
    let mut batches = read_partition(&Fs::unconfined(), file, want, None, 1024).unwrap();
    assert_eq!(
        batches.len(),
        1,
        "{}: one batch expected",
        file.path.display()
    );
    batches.remove(0)
}

fn ts_us(b: &ReadBatch) -> Vec<Option<i64>> {
    b.timestamp_us.as_ref().unwrap().iter().collect()
}
fn dates(b: &ReadBatch) -> Vec<Option<i32>> {
    b.date.as_ref().unwrap().iter().collect()
}
fn proxies(b: &ReadBatch) -> Vec<Option<&str>> {
    b.proxy.as_ref().unwrap().iter().collect()
}
fn metrics(b: &ReadBatch) -> Vec<Option<&str>> {
    b.metric.as_ref().unwrap().iter().collect()
}
fn values(b: &ReadBatch) -> Vec<Option<f64>> {
    b.value.as_ref().unwrap().iter().collect()
}

fn relative(root: &Path, files: &[PartitionFile]) -> Vec<(String, String, Layout)> {
    files
        .iter()
        .map(|f| {
            (
                f.proxy.clone(),
                f.path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                f.layout,
            )
        })
        .collect()
}

fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    (dir, root)
}

// --- promduck's daily files ----------------------------------------------------------------

#[test]
fn promduck_daily_files_read_back_exactly() {
    let (_tmp, root) = scratch();
    let d = "2024-03-01";
    let t0 = midnight_ms("2024-03-02"); // the seed's instant: the end of the day
    let mut b = PartitionBuilder::new();
    b.push_points(
        "request_count",
        &[t0, t0 + 1],
        &[1.5, 2.5],
        &[("apiproxy", "sp ace"), ("environment", "prod")],
    );
    b.push_points("up", &[t0 + 999], &[-0.0], &[]);
    let batch = b.finish("sp ace", day(d));
    let path = root
        .join(d)
        .join(format!("{}.parquet", encode_proxy("sp ace")));
    promduck_core::writer::write_partition(
        &Fs::unconfined(),
        &path,
        &batch,
        &StorageConfig::default(),
    )
    .unwrap();
    assert!(path.ends_with("2024-03-01/sp%20ace.parquet"));
    assert_eq!(written_by_promduck(&Fs::unconfined(), &path), Some(true));

    let files = select_files(&Fs::unconfined(), &root, &Selection::default()).unwrap();
    assert_eq!(
        relative(&root, &files),
        vec![(
            "sp ace".into(),
            "2024-03-01/sp%20ace.parquet".into(),
            Layout::Daily
        )]
    );
    let got = read_all(&files[0]);
    assert_eq!(got.len, 3);
    assert_eq!(
        ts_us(&got),
        vec![
            Some(1_709_337_600_000_000),
            Some(1_709_337_600_001_000),
            Some(1_709_337_600_999_000)
        ]
    );
    assert_eq!(dates(&got), vec![Some(19_783); 3]);
    assert_eq!(days_since_epoch(d), 19_783);
    assert_eq!(proxies(&got), vec![Some("sp ace"); 3]);
    assert_eq!(
        metrics(&got),
        vec![Some("request_count"), Some("request_count"), Some("up")]
    );
    let v = values(&got);
    assert_eq!(v, vec![Some(1.5), Some(2.5), Some(0.0)]);
    assert!(v[2].unwrap().is_sign_negative(), "-0.0 is kept bit for bit");
    let labels = label_row(&[("apiproxy", Some("sp ace")), ("environment", Some("prod"))]);
    assert_eq!(
        labels_of(&got),
        vec![labels.clone(), labels, label_row(&[])]
    );

    // Only what is asked for is decoded; a metric filter keeps that metric's rows.
    let only_value = read_columns(&files[0], &[Column::Value]);
    assert!(only_value.timestamp_us.is_none() && only_value.labels.is_none());
    assert!(only_value.date.is_none() && only_value.proxy.is_none());
    assert_eq!(values(&only_value), vec![Some(1.5), Some(2.5), Some(0.0)]);
    let up = read_partition(
        &Fs::unconfined(),
        &files[0],
        &[Column::Timestamp],
        Some(&strings(&["up"])),
        1024,
    )
    .unwrap();
    assert_eq!(up.len(), 1);
    assert_eq!(ts_us(&up[0]), vec![Some(1_709_337_600_999_000)]);
    let none = read_partition(
        &Fs::unconfined(),
        &files[0],
        &[Column::Value],
        Some(&strings(&["down"])),
        1024,
    )
    .unwrap();
    assert_eq!(none.len(), 0, "a metric with no rows is no batch");
}

// --- the Go tool's daily files -------------------------------------------------------------

/// A Go-tool daily partition: TIMESTAMP(ms), `api_proxy` as written, `date` as text,
/// labels as a list of key/value structs.
fn go_daily(path: &Path, proxy: &str, d: &str, labels: ArrayRef, n: usize) {
    let t0 = midnight_ms(d);
    write(
        path,
        vec![
            (
                "timestamp",
                Arc::new(TimestampMillisecondArray::from(
                    (0..n as i64).map(|i| t0 + i * 60_000).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "metric_name",
                Arc::new(StringArray::from(vec!["request_count"; n])),
            ),
            (
                "value",
                Arc::new(Float64Array::from(
                    (0..n).map(|i| i as f64 + 0.25).collect::<Vec<_>>(),
                )),
            ),
            ("api_proxy", Arc::new(StringArray::from(vec![proxy; n]))),
            ("date", Arc::new(StringArray::from(vec![d; n]))),
            ("labels", labels),
        ],
        false,
        None,
    );
}

#[test]
fn go_daily_files_have_raw_names_text_dates_and_label_lists() {
    let (_tmp, root) = scratch();
    let d = "2023-04-01";
    let dir = root.join(d);
    let env = |v: &'static str| Some(vec![(Some("environment"), Some(v))]);
    // Rows: two labels; an empty list; a NULL list; a label whose value is NULL.
    let labels = label_list(
        "key",
        "value",
        &[
            Some(vec![
                (Some("environment"), Some("prod")),
                (Some("type"), Some("a b")),
            ]),
            Some(vec![]),
            None,
            Some(vec![(Some("region"), None)]),
        ],
    );
    go_daily(&dir.join("sp ace.parquet"), "sp ace", d, labels, 4);
    // `a%2Fb` is also promduck's encoding of `a/b`: an unstamped file keeps its raw name.
    go_daily(
        &dir.join("a%2Fb.parquet"),
        "a%2Fb",
        d,
        label_list("key", "value", &[env("test")]),
        1,
    );
    // The Go tool's proxy `a/b` is the file `a/b.parquet` in a subfolder.
    go_daily(
        &dir.join("a").join("b.parquet"),
        "a/b",
        d,
        label_list("key", "value", &[env("dev")]),
        1,
    );
    std::fs::write(dir.join("notes.txt"), "not a partition").unwrap();

    let files = select_files(&Fs::unconfined(), &root, &Selection::default()).unwrap();
    assert_eq!(
        relative(&root, &files),
        vec![
            (
                "a%2Fb".into(),
                "2023-04-01/a%2Fb.parquet".into(),
                Layout::Daily
            ),
            ("a/b".into(), "2023-04-01/a/b.parquet".into(), Layout::Daily),
            (
                "sp ace".into(),
                "2023-04-01/sp ace.parquet".into(),
                Layout::Daily
            ),
        ]
    );
    assert_eq!(
        written_by_promduck(&Fs::unconfined(), &files[0].path),
        Some(false)
    );

    let got = read_all(&files[2]);
    let t0 = 1_680_307_200_000_000; // 2023-04-01 00:00:00 UTC in microseconds
    assert_eq!(midnight_ms(d) * 1000, t0);
    assert_eq!(
        ts_us(&got),
        vec![
            Some(t0),
            Some(t0 + 60_000_000),
            Some(t0 + 120_000_000),
            Some(t0 + 180_000_000)
        ]
    );
    // The text date, checked against the folder on every row and read as a DATE.
    assert_eq!(dates(&got), vec![Some(19_448); 4]);
    assert_eq!(days_since_epoch(d), 19_448);
    assert_eq!(proxies(&got), vec![Some("sp ace"); 4]);
    assert_eq!(
        values(&got),
        vec![Some(0.25), Some(1.25), Some(2.25), Some(3.25)]
    );
    assert_eq!(
        labels_of(&got),
        vec![
            label_row(&[("environment", Some("prod")), ("type", Some("a b"))]),
            label_row(&[]),
            None,
            label_row(&[("region", None)]),
        ]
    );
    // Each name selects its own file, the raw `a%2Fb` and the subfolder's `a/b` alike.
    for (name, file) in [
        ("a%2Fb", "2023-04-01/a%2Fb.parquet"),
        ("a/b", "2023-04-01/a/b.parquet"),
    ] {
        let sel = Selection {
            proxies: Some(strings(&[name])),
            ..Default::default()
        };
        let got = select_files(&Fs::unconfined(), &root, &sel).unwrap();
        assert_eq!(
            relative(&root, &got),
            vec![(name.to_string(), file.to_string(), Layout::Daily)]
        );
        assert_eq!(proxies(&read_all(&got[0])), vec![Some(name)]);
    }
}

#[test]
fn a_go_daily_text_date_other_than_its_folder_is_an_error_naming_the_row() {
    let (_tmp, root) = scratch();
    let path = root.join("2023-04-01").join("p.parquet");
    write(
        &path,
        vec![
            (
                "timestamp",
                Arc::new(Int64Array::from(vec![0, 1, 2])) as ArrayRef,
            ),
            ("metric_name", Arc::new(StringArray::from(vec!["m"; 3]))),
            ("value", Arc::new(Float64Array::from(vec![1.0; 3]))),
            (
                "date",
                Arc::new(StringArray::from(vec![
                    Some("2023-04-01"),
                    None,
                    Some("2023-04-02"),
                ])),
            ),
        ],
        false,
        None,
    );
    let files = select_files(&Fs::unconfined(), &root, &Selection::default()).unwrap();
    let e = read_partition(&Fs::unconfined(), &files[0], &[Column::Value], None, 1024)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}: column `date`: row 2 holds 2023-04-02, but its folder says 2023-04-01; \
             a partition holds one day",
            path.display()
        )
    );
}

// --- the Go tool's Hive layout -------------------------------------------------------------

#[test]
fn hive_files_take_day_and_proxy_from_their_path() {
    let (_tmp, root) = scratch();
    let app = root.join("year=2023/month=04/day=02/app=sp%20ace");
    let t = 1_680_393_600; // 2023-04-02 00:00:00 UTC in seconds
    assert_eq!(midnight_ms("2023-04-02"), t * 1000);
    // An Arrow writer's TIMESTAMP(s): stored as a plain INT64, its unit only in the
    // file's Arrow schema; struct fields named otherwise are read by position.
    write(
        &app.join("part-0.parquet"),
        vec![
            (
                "timestamp",
                Arc::new(TimestampSecondArray::from(vec![t, t + 3600])) as ArrayRef,
            ),
            ("metric_name", Arc::new(StringArray::from(vec!["rc", "ec"]))),
            ("value", Arc::new(Float64Array::from(vec![5.0, 1.0]))),
            (
                "labels",
                label_list(
                    "name",
                    "val",
                    &[
                        Some(vec![(Some("environment"), Some("prod"))]),
                        Some(vec![
                            (Some("environment"), Some("prod")),
                            (Some("code"), Some("500")),
                        ]),
                    ],
                ),
            ),
        ],
        false,
        None,
    );
    let footer = parquet::file::reader::SerializedFileReader::new(
        std::fs::File::open(app.join("part-0.parquet")).unwrap(),
    )
    .unwrap();
    let ts_col = parquet::file::reader::FileReader::metadata(&footer)
        .file_metadata()
        .schema_descr()
        .column(0);
    assert_eq!(ts_col.physical_type(), parquet::basic::Type::INT64);
    assert_eq!(
        ts_col.logical_type_ref(),
        None,
        "seconds have no Parquet annotation"
    );
    // A second file of the same partition: fields named `keys`/`values`, the value
    // first (found by name, not position).
    write(
        &app.join("part-1.parquet"),
        vec![
            (
                "timestamp",
                Arc::new(Int64Array::from(vec![t * 1000 + 7])) as ArrayRef,
            ),
            ("metric_name", Arc::new(StringArray::from(vec!["rc"]))),
            ("value", Arc::new(Float64Array::from(vec![2.0]))),
            (
                "labels",
                label_list_ordered(
                    "keys",
                    "values",
                    true,
                    &[Some(vec![(Some("x"), Some("y"))])],
                ),
            ),
        ],
        false,
        None,
    );
    // Not partitions: hidden files, other files, and a proxy or a year outside the selection.
    std::fs::write(app.join(".part-2.parquet"), "hidden").unwrap();
    std::fs::write(app.join("_SUCCESS"), "").unwrap();
    let other = root.join("year=2023/month=04/day=02/app=other/part-0.parquet");
    write(
        &other,
        vec![
            ("timestamp", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
            ("value", Arc::new(Float64Array::from(vec![0.0]))),
        ],
        false,
        None,
    );
    let sel = Selection {
        from: Some(day("2023-04-02")),
        to: Some(day("2023-04-02")),
        proxies: Some(strings(&["sp ace"])),
    };
    let files = select_files(&Fs::unconfined(), &root, &sel).unwrap();
    assert_eq!(
        relative(&root, &files),
        vec![
            (
                "sp ace".into(),
                "year=2023/month=04/day=02/app=sp%20ace/part-0.parquet".into(),
                Layout::Hive
            ),
            (
                "sp ace".into(),
                "year=2023/month=04/day=02/app=sp%20ace/part-1.parquet".into(),
                Layout::Hive
            ),
        ]
    );
    let a = read_all(&files[0]);
    assert_eq!(
        ts_us(&a),
        vec![Some(1_680_393_600_000_000), Some(1_680_397_200_000_000)]
    );
    assert_eq!(dates(&a), vec![Some(19_449); 2]);
    assert_eq!(proxies(&a), vec![Some("sp ace"); 2]);
    assert_eq!(metrics(&a), vec![Some("rc"), Some("ec")]);
    assert_eq!(values(&a), vec![Some(5.0), Some(1.0)]);
    assert_eq!(
        labels_of(&a),
        vec![
            label_row(&[("environment", Some("prod"))]),
            label_row(&[("environment", Some("prod")), ("code", Some("500"))]),
        ]
    );
    // A plain INT64 without a hint: epoch milliseconds.
    let b = read_all(&files[1]);
    assert_eq!(ts_us(&b), vec![Some(1_680_393_600_007_000)]);
    assert_eq!(labels_of(&b), vec![label_row(&[("x", Some("y"))])]);
    // The other proxy is there when nothing is selected; another day prunes both.
    let all = select_files(&Fs::unconfined(), &root, &Selection::default()).unwrap();
    assert_eq!(
        all.iter().map(|f| f.proxy.as_str()).collect::<Vec<_>>(),
        vec!["other", "sp ace", "sp ace"]
    );
    let sel = Selection {
        from: Some(day("2023-04-03")),
        ..Default::default()
    };
    assert_eq!(
        select_files(&Fs::unconfined(), &root, &sel).unwrap(),
        vec![]
    );
}

// --- timestamps ----------------------------------------------------------------------------

#[test]
fn every_timestamp_type_converts_exactly_in_both_go_layouts() {
    // (type, raw values, epoch microseconds written down by hand)
    let d_ms: i64 = 1_680_307_200_000; // 2023-04-01 00:00:00 UTC
    let cases: Vec<(&str, ArrayRef, [i64; 2])> = vec![
        (
            "int64-ms",
            Arc::new(Int64Array::from(vec![d_ms, -1])),
            [1_680_307_200_000_000, -1_000],
        ),
        (
            "int32-ms",
            Arc::new(Int32Array::from(vec![i32::MAX, i32::MIN])),
            [2_147_483_647_000, -2_147_483_648_000],
        ),
        (
            "int16-ms",
            Arc::new(Int16Array::from(vec![-32_768, 32_767])),
            [-32_768_000, 32_767_000],
        ),
        (
            "int8-ms",
            Arc::new(Int8Array::from(vec![-128, 127])),
            [-128_000, 127_000],
        ),
        (
            "uint64-ms",
            Arc::new(UInt64Array::from(vec![d_ms as u64, 0])),
            [1_680_307_200_000_000, 0],
        ),
        (
            "uint32-ms",
            Arc::new(UInt32Array::from(vec![u32::MAX, 1])),
            [4_294_967_295_000, 1_000],
        ),
        (
            "uint16-ms",
            Arc::new(UInt16Array::from(vec![65_535, 0])),
            [65_535_000, 0],
        ),
        (
            "uint8-ms",
            Arc::new(UInt8Array::from(vec![255, 7])),
            [255_000, 7_000],
        ),
        (
            "timestamp-s",
            Arc::new(TimestampSecondArray::from(vec![
                d_ms / 1000,
                d_ms / 1000 + 59,
            ])),
            [1_680_307_200_000_000, 1_680_307_259_000_000],
        ),
        (
            "timestamp-ms",
            Arc::new(TimestampMillisecondArray::from(vec![
                d_ms + 123,
                d_ms + 999,
            ])),
            [1_680_307_200_123_000, 1_680_307_200_999_000],
        ),
        (
            "timestamp-us",
            Arc::new(TimestampMicrosecondArray::from(vec![
                d_ms * 1000 + 123_456,
                1,
            ])),
            [1_680_307_200_123_456, 1],
        ),
        // Nanoseconds are floored to the microsecond, also before 1970.
        (
            "timestamp-ns",
            Arc::new(TimestampNanosecondArray::from(vec![
                d_ms * 1_000_000 + 123_456_789,
                -1_500,
            ])),
            [1_680_307_200_123_456, -2],
        ),
        (
            "timestamp-ms-utc",
            Arc::new(
                TimestampMillisecondArray::from(vec![d_ms + 1, d_ms + 2]).with_timezone("UTC"),
            ),
            [1_680_307_200_001_000, 1_680_307_200_002_000],
        ),
        (
            "timestamp-us-berlin",
            Arc::new(
                TimestampMicrosecondArray::from(vec![d_ms * 1000 + 7, 0])
                    .with_timezone("Europe/Berlin"),
            ),
            [1_680_307_200_000_007, 0],
        ),
    ];
    let (_tmp, root) = scratch();
    for (name, col, _) in &cases {
        let cols = |with_proxy_and_date: bool| {
            let mut c: Vec<(&str, ArrayRef)> = vec![
                ("timestamp", col.clone()),
                ("metric_name", Arc::new(StringArray::from(vec!["m", "m"]))),
                ("value", Arc::new(Float64Array::from(vec![1.0, 2.0]))),
            ];
            if with_proxy_and_date {
                let proxy = format!("daily-{name}");
                c.push((
                    "api_proxy",
                    Arc::new(StringArray::from(vec![proxy.as_str(); 2])),
                ));
                c.push(("date", Arc::new(StringArray::from(vec!["2023-04-01"; 2]))));
            }
            c
        };
        write(
            &root.join(format!("2023-04-01/daily-{name}.parquet")),
            cols(true),
            false,
            None,
        );
        write(
            &root.join(format!(
                "year=2023/month=04/day=01/app=hive-{name}/part-0.parquet"
            )),
            cols(false),
            false,
            None,
        );
    }
    let files = select_files(&Fs::unconfined(), &root, &Selection::default()).unwrap();
    assert_eq!(files.len(), 2 * cases.len());
    for f in &files {
        let (layout, name) = f.proxy.split_once('-').unwrap();
        assert_eq!(
            (layout, f.layout),
            if f.layout == Layout::Daily {
                ("daily", Layout::Daily)
            } else {
                ("hive", Layout::Hive)
            }
        );
        let want = cases.iter().find(|c| c.0 == name).unwrap().2;
        let got = read_columns(f, &[Column::Timestamp, Column::Date, Column::Proxy]);
        assert_eq!(
            ts_us(&got),
            vec![Some(want[0]), Some(want[1])],
            "{}",
            f.proxy
        );
        assert_eq!(dates(&got), vec![Some(19_448); 2], "{}", f.proxy);
        assert_eq!(proxies(&got), vec![Some(f.proxy.as_str()); 2]);
    }
}

// --- values and labels of other writers ----------------------------------------------------

#[test]
fn values_of_other_types_convert_exactly() {
    let (_tmp, root) = scratch();
    let cases: Vec<(&str, ArrayRef, Vec<Option<f64>>)> = vec![
        (
            "f32",
            Arc::new(Float32Array::from(vec![Some(1.5), None, Some(-0.125)])),
            vec![Some(1.5), None, Some(-0.125)],
        ),
        (
            "i32",
            Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(0), None])),
            vec![Some(-2_147_483_648.0), Some(0.0), None],
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![1 << 53, -(1 << 53), 3])),
            vec![
                Some(9_007_199_254_740_992.0),
                Some(-9_007_199_254_740_992.0),
                Some(3.0),
            ],
        ),
        (
            "text",
            Arc::new(StringArray::from(vec![Some("1e3"), Some("-2.5"), None])),
            vec![Some(1000.0), Some(-2.5), None],
        ),
    ];
    for (name, col, want) in cases {
        let path = root.join("2024-03-01").join(format!("{name}.parquet"));
        write(
            &path,
            vec![
                (
                    "timestamp",
                    Arc::new(Int64Array::from(vec![0, 1, 2])) as ArrayRef,
                ),
                ("value", col),
            ],
            false,
            None,
        );
        let files = select_files(
            &Fs::unconfined(),
            &root,
            &Selection {
                proxies: Some(strings(&[name])),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            values(&read_columns(&files[0], &[Column::Value])),
            want,
            "{name}"
        );
    }
}

#[test]
fn labels_that_are_no_map_are_errors_naming_the_file() {
    let (_tmp, root) = scratch();
    let ints = Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Int64, true)),
        OffsetBuffer::from_lengths([1]),
        Arc::new(Int64Array::from(vec![1])),
        None,
    )) as ArrayRef;
    let one_field = {
        let fields = Fields::from(vec![Field::new("key", DataType::Utf8, true)]);
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Struct(fields.clone()), true)),
            OffsetBuffer::from_lengths([1]),
            Arc::new(StructArray::new(
                fields,
                vec![Arc::new(StringArray::from(vec!["k"])) as ArrayRef],
                None,
            )),
            None,
        )) as ArrayRef
    };
    for (name, labels, message) in [
        (
            "text",
            Arc::new(StringArray::from(vec!["env=prod"])) as ArrayRef,
            "column `labels`: unsupported type Utf8",
        ),
        (
            "ints",
            ints,
            "column `labels`: expected a list of key/value structs",
        ),
        (
            "one-field",
            one_field,
            "column `labels`: entries need a key and a value",
        ),
        (
            "null-key",
            label_list("key", "value", &[Some(vec![(None, Some("v"))])]),
            "column `labels`: a label without a key (a NULL entry or key), which a MAP cannot hold",
        ),
    ] {
        let path = root.join("2024-03-01").join(format!("{name}.parquet"));
        write(
            &path,
            vec![
                ("timestamp", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
                ("value", Arc::new(Float64Array::from(vec![1.0]))),
                ("labels", labels),
            ],
            false,
            None,
        );
        let file = PartitionFile {
            day: day("2024-03-01"),
            proxy: name.into(),
            path: path.clone(),
            layout: Layout::Daily,
            filter: None,
            object: None,
        };
        // Not asked for, labels are not decoded: the file reads.
        assert_eq!(
            values(&read_columns(&file, &[Column::Value])),
            vec![Some(1.0)]
        );
        let e = read_partition(&Fs::unconfined(), &file, &[Column::Labels], None, 1024)
            .unwrap_err()
            .to_string();
        assert_eq!(e, format!("{}: {message}", path.display()), "{name}");
    }
}

#[test]
fn promduck_map_labels_keep_null_values_and_null_rows() {
    let (_tmp, root) = scratch();
    // MAP(VARCHAR, VARCHAR) as DuckDB writes it: rows {a: 1, b: NULL}, NULL, {}.
    let DataType::Map(entries_field, sorted) = promduck_core::schema::labels_type() else {
        unreachable!()
    };
    let DataType::Struct(fields) = entries_field.data_type().clone() else {
        unreachable!()
    };
    let entries = StructArray::new(
        fields,
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("1"), None])),
        ],
        None,
    );
    let map = MapArray::new(
        entries_field,
        OffsetBuffer::from_lengths([2, 0, 0]),
        entries,
        Some(NullBuffer::from(vec![true, false, true])),
        sorted,
    );
    let path = root.join("2024-03-01").join("m.parquet");
    write(
        &path,
        vec![
            (
                "timestamp",
                Arc::new(Int64Array::from(vec![0, 1, 2])) as ArrayRef,
            ),
            ("value", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
            ("labels", Arc::new(map)),
        ],
        true,
        None,
    );
    let files = select_files(&Fs::unconfined(), &root, &Selection::default()).unwrap();
    assert_eq!(
        labels_of(&read_columns(&files[0], &[Column::Labels])),
        vec![
            label_row(&[("a", Some("1")), ("b", None)]),
            None,
            label_row(&[])
        ]
    );
}

// --- month files ---------------------------------------------------------------------------

/// A month file of 2024-03: proxies `a` and `b` on days 1 and 2, two rows each, then `c`
/// on the 31st and, wrongly, on April 1st; sorted by (proxy, day) in row groups of three
/// rows, so groups mix proxies and days (the reader keeps rows, not groups):
/// `[a1 a1 a2] [a2 b1 b1] [b2 b2 c31] [c-april]`. The April row is read only if its
/// group is, and then it is an error.
fn month_file(root: &Path, stamp: bool) -> PathBuf {
    let path = root.join("2024-03").join("2024-03.parquet");
    let rows: Vec<(&str, &str, f64)> = vec![
        ("a", "2024-03-01", 1.0),
        ("a", "2024-03-01", 2.0),
        ("a", "2024-03-02", 3.0),
        ("a", "2024-03-02", 4.0),
        ("b", "2024-03-01", 5.0),
        ("b", "2024-03-01", 6.0),
        ("b", "2024-03-02", 7.0),
        ("b", "2024-03-02", 8.0),
        ("c", "2024-03-31", 9.0),
        ("c", "2024-04-01", 10.0),
    ];
    write(
        &path,
        vec![
            (
                "timestamp",
                Arc::new(Int64Array::from(
                    rows.iter()
                        .map(|r| midnight_ms(r.1) + r.2 as i64)
                        .collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "metric_name",
                Arc::new(StringArray::from(vec!["m"; rows.len()])),
            ),
            (
                "value",
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ),
            (
                "api_proxy",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
            ),
            (
                "date",
                Arc::new(Date32Array::from(
                    rows.iter()
                        .map(|r| days_since_epoch(r.1))
                        .collect::<Vec<_>>(),
                )),
            ),
        ],
        stamp,
        Some(3),
    );
    path
}

#[test]
fn month_files_are_read_for_the_selected_days_and_proxies_only() {
    let (_tmp, root) = scratch();
    let path = month_file(&root, false);
    // A day folder of the compacted month (not listed: the month file is the month),
    // and a day of the next month (listed).
    write(
        &root.join("2024-03-05").join("a.parquet"),
        vec![
            ("timestamp", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
            ("value", Arc::new(Float64Array::from(vec![100.0]))),
        ],
        true,
        None,
    );
    write(
        &root.join("2024-04-01").join("a.parquet"),
        vec![
            ("timestamp", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
            ("value", Arc::new(Float64Array::from(vec![200.0]))),
        ],
        true,
        None,
    );
    let sel = Selection {
        from: Some(day("2024-03-02")),
        to: Some(day("2024-03-02")),
        proxies: Some(strings(&["b", "b"])),
    };
    let files = select_files(&Fs::unconfined(), &root, &sel).unwrap();
    assert_eq!(
        files,
        vec![PartitionFile {
            day: day("2024-03-01"),
            proxy: String::new(),
            path: path.clone(),
            layout: Layout::Month,
            filter: Some(Arc::new(Selection {
                from: Some(day("2024-03-02")),
                to: Some(day("2024-03-02")),
                proxies: Some(strings(&["b"])),
            })),
            object: None,
        }]
    );
    let got = read_all(&files[0]);
    assert_eq!(values(&got), vec![Some(7.0), Some(8.0)]);
    assert_eq!(proxies(&got), vec![Some("b"); 2]);
    assert_eq!(dates(&got), vec![Some(19_784); 2]);
    assert_eq!(days_since_epoch("2024-03-02"), 19_784);
    assert_eq!(
        ts_us(&got),
        vec![Some(1_709_337_600_007_000), Some(1_709_337_600_008_000)]
    );
    // Proxy `a` on both days, from the same file; the group of `c` is never read.
    let sel = Selection {
        from: None,
        to: Some(day("2024-03-31")),
        proxies: Some(strings(&["a"])),
    };
    let files = select_files(&Fs::unconfined(), &root, &sel).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        values(&read_all(&files[0])),
        vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0)]
    );
    assert_eq!(
        month_partitions(&Fs::unconfined(), &files[0]).unwrap(),
        vec![
            (day("2024-03-01"), "a".into()),
            (day("2024-03-02"), "a".into())
        ]
    );
    // The whole month: the group of `c` is read, and its April row is an error.
    let all = select_files(&Fs::unconfined(), &root, &Selection::default()).unwrap();
    assert_eq!(
        relative(&root, &all),
        vec![
            (
                String::new(),
                "2024-03/2024-03.parquet".into(),
                Layout::Month
            ),
            ("a".into(), "2024-04-01/a.parquet".into(), Layout::Daily),
        ]
    );
    assert_eq!(all[0].filter, None);
    let e = read_partition(&Fs::unconfined(), &all[0], &[Column::Value], None, 1024)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}: column `date`: row 9 holds 2024-04-01, but its folder says 2024-03; \
             a month file holds one month",
            path.display()
        )
    );
    // Compaction's own listing still sees the month's daily files.
    let dailies = daily_files_of_month(&Fs::unconfined(), &root, day("2024-03-01")).unwrap();
    assert_eq!(
        relative(&root, &dailies),
        vec![("a".into(), "2024-03-05/a.parquet".into(), Layout::Daily)]
    );
}

#[test]
fn a_vanished_daily_file_falls_back_to_its_month_file() {
    let (_tmp, root) = scratch();
    let month = month_file(&root, true);
    // What a reader listed before compaction removed it.
    let gone = PartitionFile {
        day: day("2024-03-02"),
        proxy: "a".into(),
        path: root.join("2024-03-02").join("a.parquet"),
        layout: Layout::Daily,
        filter: None,
        object: None,
    };
    let fb = month_fallback(&Fs::unconfined(), &gone).unwrap();
    assert_eq!(
        fb,
        PartitionFile {
            day: day("2024-03-01"),
            proxy: String::new(),
            path: month.clone(),
            layout: Layout::Month,
            filter: Some(Arc::new(Selection {
                from: Some(day("2024-03-02")),
                to: Some(day("2024-03-02")),
                proxies: Some(strings(&["a"])),
            })),
            object: None,
        }
    );
    assert_eq!(values(&read_all(&fb)), vec![Some(3.0), Some(4.0)]);
    // Asked for values alone, the rows are still chosen by day and proxy (the reader
    // decodes `date` and `api_proxy` for that, and returns neither).
    let only_value = read_columns(&fb, &[Column::Value]);
    assert_eq!(values(&only_value), vec![Some(3.0), Some(4.0)]);
    assert!(only_value.date.is_none() && only_value.proxy.is_none());
    // No month file for April; Hive files have none either.
    let april = PartitionFile {
        day: day("2024-04-01"),
        path: root.join("2024-04-01").join("a.parquet"),
        ..gone.clone()
    };
    assert_eq!(month_fallback(&Fs::unconfined(), &april), None);
    let hive = PartitionFile {
        layout: Layout::Hive,
        ..gone
    };
    assert_eq!(month_fallback(&Fs::unconfined(), &hive), None);
}

#[test]
fn a_month_file_without_proxy_and_date_columns_is_refused() {
    let (_tmp, root) = scratch();
    let path = root.join("2024-03").join("2024-03.parquet");
    write(
        &path,
        vec![
            ("timestamp", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
            ("value", Arc::new(Float64Array::from(vec![1.0]))),
            (
                "date",
                Arc::new(Date32Array::from(vec![days_since_epoch("2024-03-01")])),
            ),
        ],
        true,
        None,
    );
    let files = select_files(&Fs::unconfined(), &root, &Selection::default()).unwrap();
    assert_eq!(files.len(), 1);
    let e = read_partition(&Fs::unconfined(), &files[0], &[Column::Value], None, 1024)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}: not a month file: it has no `date` and `api_proxy` columns",
            path.display()
        )
    );
}
