use super::*;
use crate::reader::Column;
use object_store::memory::InMemory;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

fn batch(proxy: &str, day: NaiveDate, rows: usize) -> RecordBatch {
    let mut b = crate::schema::PartitionBuilder::new();
    let s = crate::series::Series {
        labels: [("environment".to_string(), "prod".to_string())]
            .into_iter()
            .collect(),
        points: (0..rows as i64).map(|i| (i * 60_000, i as f64)).collect(),
    };
    b.push_series("m", &s, &[]);
    b.finish(proxy, day)
}

/// Every row of the month file `reader` reads, through parquet's async reader.
fn rows_of(reader: RangeReader) -> std::result::Result<usize, String> {
    let reader =
        parquet::arrow::async_reader::SpawnedReader::new(reader, runtime().handle().clone());
    let mut stream = futures::executor::block_on(ParquetRecordBatchStreamBuilder::new(reader))
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let mut n = 0;
    while let Some(b) = futures::executor::block_on(stream.next()) {
        n += b.map_err(|e| e.to_string())?.num_rows();
    }
    Ok(n)
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn sum_values(st: &ObjectStorage, sel: &Selection) -> (usize, f64) {
    let spec = Arc::new(ReadSpec {
        want: vec![Column::Value, Column::Proxy],
        metrics: None,
        batch_rows: 1000,
    });
    let mut rows = 0;
    let mut total = 0.0;
    for f in st.select(sel).unwrap() {
        let mut r = st.open(&f, &spec).unwrap();
        while let Some(b) = r.next_batch().unwrap() {
            let v = b.value.unwrap();
            rows += v.len();
            total += v.values().iter().sum::<f64>();
        }
    }
    (rows, total)
}

#[test]
fn writes_lists_and_reads_back_in_the_disk_layout() {
    let mem = Arc::new(InMemory::new());
    let st = ObjectStorage::with_store(mem.clone(), "b", "metrics/prod");
    let cfg = StorageConfig::default();
    for day in ["2024-03-01", "2024-03-02"] {
        for p in ["api-1", "a/b"] {
            st.write_partition(d(day), p, &batch(p, d(day), 10), &cfg)
                .unwrap();
        }
    }
    let keys: Vec<String> = run({
        let mem = mem.clone();
        async move {
            mem.list(None)
                .map(|m| m.unwrap().location.to_string())
                .collect::<Vec<_>>()
                .await
        }
    });
    let mut keys = keys;
    keys.sort();
    assert_eq!(
        keys,
        [
            "metrics/prod/2024-03-01/a%2Fb.parquet",
            "metrics/prod/2024-03-01/api-1.parquet",
            "metrics/prod/2024-03-02/a%2Fb.parquet",
            "metrics/prod/2024-03-02/api-1.parquet"
        ]
    );
    // 0+1+…+9 = 45 per partition.
    assert_eq!(sum_values(&st, &Selection::default()), (40, 180.0));
    let one = Selection {
        from: Some(d("2024-03-02")),
        to: Some(d("2024-03-02")),
        proxies: Some(vec!["a/b".into(), "a/b".into(), "missing".into()]),
    };
    assert_eq!(sum_values(&st, &one), (10, 45.0));
    let files = st.select(&one).unwrap();
    assert_eq!(
        files.len(),
        2,
        "looked up directly, the missing one included"
    );
    let listed = Selection {
        from: Some(d("2024-03-01")),
        to: None,
        proxies: Some(vec!["api-1".into()]),
    };
    assert_eq!(sum_values(&st, &listed), (20, 90.0));
    // Re-writing replaces, never duplicates.
    st.write_partition(
        d("2024-03-01"),
        "api-1",
        &batch("api-1", d("2024-03-01"), 3),
        &cfg,
    )
    .unwrap();
    assert_eq!(sum_values(&st, &Selection::default()), (33, 138.0));
    // The rows of a metric are read back for keeping.
    let kept = st
        .read_metric_rows(d("2024-03-01"), "api-1", Some(&["m".into()]))
        .unwrap()
        .unwrap();
    assert_eq!(kept.num_rows(), 3);
    assert!(st
        .read_metric_rows(d("2024-03-09"), "api-1", Some(&["m".into()]))
        .unwrap()
        .is_none());
    st.delete_partition(d("2024-03-01"), "api-1").unwrap();
    st.delete_partition(d("2024-03-01"), "api-1").unwrap();
    assert_eq!(sum_values(&st, &Selection::default()), (30, 135.0));
}

#[test]
fn prefetched_scans_read_the_same_rows_and_stop_when_dropped() {
    let mem = Arc::new(InMemory::new());
    let st = ObjectStorage::with_store(mem.clone(), "b", "");
    let cfg = StorageConfig::default();
    let first = d("2024-01-01");
    for i in 0..100u64 {
        let day = first + chrono::Days::new(i);
        st.write_partition(day, "p", &batch("p", day, 5), &cfg)
            .unwrap();
    }
    let spec = Arc::new(ReadSpec {
        want: vec![Column::Value],
        metrics: None,
        batch_rows: 1000,
    });
    let files = st.select(&Selection::default()).unwrap();
    assert_eq!(files.len(), 100);
    st.prefetch(&files);
    assert_eq!(st.prefetched.lock().unwrap().len(), 100);
    let mut rows = 0;
    for f in &files {
        let mut r = st.open(f, &spec).unwrap();
        while let Some(b) = r.next_batch().unwrap() {
            rows += b.value.unwrap().len();
        }
    }
    assert_eq!(rows, 500);
    assert!(st.prefetched.lock().unwrap().is_empty());
    // Stopped early (a LIMIT): dropping the storage stops the prefetch.
    st.prefetch(&files);
    let task = st.tasks.lock().unwrap().last().unwrap().clone();
    let mut r = st.open(&files[0], &spec).unwrap();
    assert!(r.next_batch().unwrap().is_some());
    drop(r);
    drop(st);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !task.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(task.is_finished());
}

#[test]
fn ranged_reads_ask_for_one_version_of_a_month_file() {
    let mem = Arc::new(InMemory::new());
    let store: Arc<dyn ObjectStore> = mem.clone();
    let key = ObjectPath::from("2024-02/2024-02.parquet");
    let cfg = StorageConfig::default();
    let encode = |rows: usize| {
        let b = batch("p", d("2024-02-01"), rows);
        Bytes::from(
            crate::writer::encode_partition(Vec::new(), std::path::Path::new("x"), &b, &cfg)
                .unwrap(),
        )
    };
    let put = |bytes: Bytes| {
        let (s, k) = (store.clone(), key.clone());
        run(async move { s.put(&k, PutPayload::from(bytes)).await.unwrap() });
    };
    let head = || {
        let (s, k) = (store.clone(), key.clone());
        run(async move { s.head(&k).await.unwrap() })
    };
    put(encode(10));
    let seen = head();
    // Replaced before its footer was read: the new version is read, whole.
    put(encode(20));
    let r = RangeReader::new(store.clone(), key.clone(), seen.size, version_of(&seen));
    assert_eq!(rows_of(r), Ok(20));
    // Replaced after its footer was read: an error, never rows of two files.
    let seen = head();
    let reader = parquet::arrow::async_reader::SpawnedReader::new(
        RangeReader::new(store.clone(), key.clone(), seen.size, version_of(&seen)),
        runtime().handle().clone(),
    );
    let mut stream = futures::executor::block_on(ParquetRecordBatchStreamBuilder::new(reader))
        .unwrap()
        .build()
        .unwrap();
    put(encode(30));
    let r = futures::executor::block_on(stream.next()).unwrap();
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("Precondition") || e.contains("precondition"),
        "{e}"
    );
}

#[test]
fn a_month_probe_brings_a_small_object_whole_and_the_last_mib_of_a_large_one() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let put = |k: &str, bytes: Vec<u8>| {
        let (s, k) = (store.clone(), ObjectPath::from(k));
        run(async move { s.put(&k, PutPayload::from(bytes)).await.unwrap() });
    };
    let probe_of = |k: &str| {
        let (s, k) = (store.clone(), ObjectPath::from(k));
        run(async move { probe(&s, &k).await })
    };
    let small: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    put("small", small.clone());
    let (meta, tail) = probe_of("small").unwrap();
    assert_eq!(meta.size, 1000);
    assert_eq!(tail.as_deref(), Some(small.as_slice()));
    // Exactly the probe's length: still whole.
    put("edge", vec![7; MONTH_PROBE_BYTES as usize]);
    let (meta, tail) = probe_of("edge").unwrap();
    assert_eq!(meta.size, MONTH_PROBE_BYTES);
    assert_eq!(tail.map(|b| b.len() as u64), Some(MONTH_PROBE_BYTES));
    // Larger: its size, version and last MiB (which serve its footer later).
    let large: Vec<u8> = (0..MONTH_PROBE_BYTES as usize + 10)
        .map(|i| (i % 253) as u8)
        .collect();
    put("large", large.clone());
    let (meta, tail) = probe_of("large").unwrap();
    assert_eq!(meta.size, MONTH_PROBE_BYTES + 10);
    assert!(meta.e_tag.is_some());
    assert_eq!(tail.as_deref(), Some(&large[10..]));
    // Missing: NotFound, as a HEAD would say.
    assert!(matches!(
        probe_of("missing"),
        Err(object_store::Error::NotFound { .. })
    ));
}

#[test]
fn a_tail_at_hand_serves_the_footer_and_the_ranges_inside_it() {
    use parquet::arrow::async_reader::AsyncFileReader;
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let key = ObjectPath::from("2024-02/2024-02.parquet");
    let cfg = StorageConfig::default();
    let b = batch("p", d("2024-02-01"), 50_000);
    let bytes = Bytes::from(
        crate::writer::encode_partition(Vec::new(), std::path::Path::new("x"), &b, &cfg).unwrap(),
    );
    let size = bytes.len() as u64;
    assert!(size > 2 * 64 * 1024, "{size}");
    let reader = |tail: Bytes| {
        RangeReader::new(store.clone(), key.clone(), size, any_version()).with_tail(tail)
    };
    // The store is empty: whatever is read comes from the tail, or fails.
    // The whole file at hand: every row, no request.
    assert_eq!(rows_of(reader(bytes.clone())), Ok(50_000));
    // Its last 64 KiB: the footer loads from them; the column chunks before them
    // need the object, which is not there.
    let tail = bytes.slice(bytes.len() - 64 * 1024..);
    let mut r = reader(tail.clone());
    let md = futures::executor::block_on(r.get_metadata(None)).unwrap();
    assert_eq!(md.file_metadata().num_rows(), 50_000);
    let inside = futures::executor::block_on(r.get_bytes(size - 100..size - 10)).unwrap();
    assert_eq!(inside, bytes.slice(bytes.len() - 100..bytes.len() - 10));
    let both = futures::executor::block_on(
        r.get_byte_ranges(vec![size - 50..size - 40, size - 30..size - 20]),
    )
    .unwrap();
    assert_eq!(
        both,
        vec![
            bytes.slice(bytes.len() - 50..bytes.len() - 40),
            bytes.slice(bytes.len() - 30..bytes.len() - 20)
        ]
    );
    assert!(futures::executor::block_on(r.get_bytes(0..10)).is_err());
    assert!(rows_of(reader(tail.clone())).is_err());
    // Stored: ranges outside the tail are fetched, inside it cut, in the order asked.
    let (s, k) = (store.clone(), key.clone());
    let put = bytes.clone();
    run(async move { s.put(&k, PutPayload::from(put)).await.unwrap() });
    let mut r = reader(tail.clone());
    let mixed =
        futures::executor::block_on(r.get_byte_ranges(vec![0..10, size - 30..size - 20, 100..120]))
            .unwrap();
    assert_eq!(
        mixed,
        vec![
            bytes.slice(0..10),
            bytes.slice(bytes.len() - 30..bytes.len() - 20),
            bytes.slice(100..120)
        ]
    );
    assert_eq!(rows_of(reader(tail)), Ok(50_000));
}

#[test]
fn a_large_month_file_is_read_by_range_with_its_footer_from_the_look_up() {
    let mem = Arc::new(InMemory::new());
    let st = ObjectStorage::with_store(mem.clone(), "b", "metrics/prod");
    let n = 1_000_000;
    let bytes = crate::writer::encode_partition(
        Vec::new(),
        std::path::Path::new("x"),
        &batch("p", d("2024-02-01"), n),
        &StorageConfig::default(),
    )
    .unwrap();
    assert!(bytes.len() as u64 > WHOLE_OBJECT_MAX, "{}", bytes.len());
    let key = ObjectPath::from("metrics/prod/2024-02/2024-02.parquet");
    let (m, k) = (mem.clone(), key.clone());
    run(async move { m.put(&k, PutPayload::from(bytes)).await.unwrap() });
    let feb = Selection {
        from: Some(d("2024-02-01")),
        to: Some(d("2024-02-29")),
        proxies: None,
    };
    let files = st.select(&feb).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].layout, Layout::Month);
    // The look-up kept the footer's bytes, not the whole MiB it fetched.
    let kept = st.tails.lock().unwrap().get(key.as_ref()).map(|b| b.len());
    assert_eq!(kept, Some(FOOTER_PREFETCH));
    assert!(st.probed.lock().unwrap().is_empty());
    // 0 + 1 + ... + (n - 1), every row once.
    let total = (n as f64) * (n as f64 - 1.0) / 2.0;
    assert_eq!(sum_values(&st, &feb), (n, total));
    // Taken by the open: nothing held once the month is read.
    assert!(st.tails.lock().unwrap().is_empty());
}

#[test]
fn scrubs_secrets() {
    let s = scrub(
        "x-amz-security-token:TOKEN123 and SECRETKEY",
        &["TOKEN123".into(), "SECRETKEY".into()],
    );
    assert_eq!(s, "x-amz-security-token:*** and ***");
}
