use super::*;

#[test]
fn the_oldest_sample_is_read_from_prometheus_own_metrics() {
    let page =
        b"# HELP prometheus_tsdb_lowest_timestamp Lowest timestamp value stored in the database.\n\
# TYPE prometheus_tsdb_lowest_timestamp gauge\n\
prometheus_tsdb_lowest_timestamp 1.7092944e+12\n\
prometheus_tsdb_lowest_timestamp_seconds 1.7092944e+09\n";
    assert_eq!(parse_lowest_timestamp(page), Some(1_709_294_400_000));
    // An empty TSDB says int64's largest value: no time.
    assert_eq!(
        parse_lowest_timestamp(b"prometheus_tsdb_lowest_timestamp 9.223372036854776e+18\n"),
        None
    );
    assert_eq!(parse_lowest_timestamp(b"up 1\n"), None);
}

#[test]
fn native_histograms_are_unsupported_not_malformed() {
    let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"histogram":[1,{"count":"2","sum":"3","buckets":[[0,"1","2","3"]]}]}]}}"#;
    let m = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"histograms": [[1,{"count":"2","sum":"3"}]]}]}}"#;
    for body in [&v[..], &m[..]] {
        let e = decode_query_response(body).unwrap_err();
        assert!(matches!(e, PromError::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("native histogram"), "{e}");
    }
    // A label called `histogram` is a label.
    let l = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"histogram":"x"},"value":[1,"2"]}]}}"#;
    assert_eq!(
        decode_query_response(l).unwrap()[0].points,
        vec![(1000, 2.0)]
    );
}

#[test]
fn decodes_vector_matrix_scalar() {
    let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"apiproxy":"p","environment":"prod"},"value":[1709337600,"1234"]}]}}"#;
    let s = decode_query_response(v).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].labels["environment"], "prod");
    assert_eq!(s[0].points, vec![(1_709_337_600_000, 1234.0)]);

    let m = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1.5,"1"],[3,"NaN"],[4.001,"+Inf"]]}]}}"#;
    let s = decode_query_response(m).unwrap();
    assert_eq!(s[0].points[0], (1500, 1.0));
    assert!(s[0].points[1].1.is_nan());
    assert_eq!(s[0].points[2], (4001, f64::INFINITY));

    let sc = br#"{"status":"success","data":{"resultType":"scalar","result":[10,"-Inf"]}}"#;
    let s = decode_query_response(sc).unwrap();
    assert!(s[0].labels.is_empty());
    assert_eq!(s[0].points[0], (10_000, f64::NEG_INFINITY));
}

#[test]
fn decode_errors() {
    let e = decode_query_response(
        br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Prometheus error (bad_data): parse error at char 5"
    );
    assert!(!e.is_transient());
    assert!(matches!(
        decode_query_response(b"{\"status\":\"succ"),
        Err(PromError::Decode(_))
    ));
    assert!(matches!(
        decode_query_response(b"<html>"),
        Err(PromError::Decode(_))
    ));
    let s = br#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
    assert!(matches!(
        decode_query_response(s),
        Err(PromError::Unsupported(_))
    ));
    let bad = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#;
    assert!(decode_query_response(bad)
        .unwrap_err()
        .to_string()
        .contains("abc"));
    let wrong = br#"{"status":"success","data":{"resultType":"vector","result":{"x":1}}}"#;
    assert!(matches!(
        decode_query_response(wrong),
        Err(PromError::Decode(_))
    ));
}

#[test]
fn decodes_whatever_the_key_order() {
    let m = br#"{"data":{"result":[{"values":[[1,"2"]],"metric":{"a":"b"}}],"resultType":"matrix"},"status":"success"}"#;
    let s = decode_query_response(m).unwrap();
    assert_eq!(
        s,
        vec![Series {
            labels: BTreeMap::from([("a".into(), "b".into())]),
            points: vec![(1000, 2.0)]
        }]
    );
    let v = br#"{"status":"success","data":{"result":[{"value":[2,"3"]}],"resultType":"vector"}}"#;
    assert_eq!(
        decode_query_response(v).unwrap()[0].points,
        vec![(2000, 3.0)]
    );
    // A vector item without a value, a scalar of the wrong shape: malformed.
    let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#;
    assert!(matches!(
        decode_query_response(v),
        Err(PromError::Decode(_))
    ));
    let sc = br#"{"status":"success","data":{"resultType":"scalar","result":[{"metric":{}}]}}"#;
    assert!(matches!(
        decode_query_response(sc),
        Err(PromError::Decode(_))
    ));
}

/// The series a body holds, decoded through a generic JSON tree (the reference
/// for the column-wise decoder): a map's last repeated key wins, labels sorted.
fn reference_decode(body: &str) -> Vec<Series> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let data = &v["data"];
    let vector = data["resultType"] == "vector";
    let point = |p: &serde_json::Value| -> (i64, f64) {
        (
            (p[0].as_f64().unwrap() * 1000.0).round() as i64,
            parse_value(p[1].as_str().unwrap()).unwrap(),
        )
    };
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let points = if vector {
                vec![point(&s["value"])]
            } else {
                s["values"]
                    .as_array()
                    .map(|a| a.iter().map(point).collect())
                    .unwrap_or_default()
            };
            Series { labels, points }
        })
        .collect()
}

#[test]
fn column_wise_decoding_equals_the_series() {
    let mut bodies = vec![
        // Repeated, unsorted and escaped names and values; missing and empty maps.
        r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"b":"1","a":"2","b":"3"},"value":[1,"1"]},
            {"value":[2,"2"]},
            {"metric":{},"value":[3,"+Inf"]},
            {"metric":{"a\"q":"x\u00e9\n","":""},"value":[4.5,"-Inf"]}]}}"#
            .to_string(),
        // `value` and `values` in one item: the result type decides.
        r#"{"status":"success","data":{"result":[{"values":[[1,"1"],[2,"2"]],"value":[9,"9"],"metric":{"a":"b"}}],"resultType":"matrix"}}"#
            .to_string(),
        r#"{"status":"success","data":{"result":[{"values":[[1,"1"],[2,"2"]],"value":[9,"9"],"metric":{"a":"b"}}],"resultType":"vector"}}"#
            .to_string(),
    ];
    // Many series sharing label values (interned), more names than are interned,
    // values rotating faster than the recent ones kept.
    let mut items = Vec::new();
    for i in 0..300 {
        let mut labels = [
            format!(r#""apiproxy":"p{}""#, i / 7),
            format!(r#""environment":"e{}""#, i % 9),
            format!(r#""k{}":"v""#, i % 80),
        ];
        labels.rotate_left(i % 3);
        let pts: Vec<String> = (0..(i % 4))
            .map(|j| format!(r#"[{j}.25,"{i}.5"]"#))
            .collect();
        items.push(format!(
            r#"{{"metric":{{{}}},"values":[{}]}}"#,
            labels.join(","),
            pts.join(",")
        ));
    }
    bodies.push(format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        items.join(",")
    ));
    for body in &bodies {
        let want = reference_decode(body);
        assert_eq!(
            decode_query_response(body.as_bytes()).unwrap(),
            want,
            "{body}"
        );
        let a = decode_query_answer(body.as_bytes()).unwrap();
        assert_eq!(a.len(), want.len());
        assert_eq!(
            a.samples(),
            want.iter().map(|s| s.points.len() as u64).sum::<u64>()
        );
        for (i, s) in want.iter().enumerate() {
            assert_eq!(a.label_map(i), s.labels);
            for (k, v) in &s.labels {
                assert_eq!(a.label(i, k), Some(v.as_str()));
            }
            for (j, w) in want.iter().enumerate() {
                assert_eq!(a.cmp_labels(i, j), s.labels.cmp(&w.labels), "{i} {j}");
            }
        }
        assert_eq!(Answer::from_series(want.clone()).into_series(), want);
    }
    // The first offending element names the error.
    let v = |r: &str| {
        format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{r}]}}}}"#)
    };
    let msg = |b: String| decode_query_response(b.as_bytes()).unwrap_err().to_string();
    assert!(msg(v(r#"{"metric":{}},1"#)).contains("without a value"));
    assert!(msg(v(r#"1,{"metric":{}}"#)).contains("not a series"));
    assert!(msg(v(r#"{"metric":{"a":1},"value":[1,"1"]}"#))
        .contains("invalid type: integer `1`, expected a string"));
}

/// Random answers, some malformed or cut short, decoded by the fast path (where it
/// applies) and by serde alone: the same answer, or the same error.
#[test]
fn fast_decoding_equals_serde_decoding() {
    let seed = Cell::new(0x2545f4914f6cdd1du64);
    let rnd = |n: u64| {
        let mut x = seed.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seed.set(x);
        x % n.max(1)
    };
    fn pick<'a>(r: u64, xs: &[&'a str]) -> &'a str {
        xs[r as usize % xs.len()]
    }
    let mut fast_used = 0;
    for case in 0..6000 {
        let ws = |r: u64| if r.is_multiple_of(5) { " \n\t" } else { "" };
        let ts = || {
            let r = rnd(20);
            let secs = 1_700_000_000 + rnd(100_000);
            match r {
                0 => format!("{secs}.{}", rnd(10_000)),
                1 => format!("{secs}e0"),
                2 => format!("-{secs}"),
                3 => format!("{secs}.{:03}", rnd(1000)),
                4 => format!("{secs}.{}", rnd(10)),
                5 => "0".to_string(),
                6 => format!("0{secs}"),
                _ => format!("{secs}"),
            }
        };
        let mut items = Vec::new();
        for _ in 0..rnd(6) {
            let mut fields = Vec::new();
            if rnd(8) != 0 {
                let labels: Vec<String> = (0..rnd(5))
                    .map(|_| {
                        let k = pick(
                            rnd(9),
                            &[
                                "a",
                                "b",
                                "apiproxy",
                                "environment",
                                "k\\\"q",
                                "",
                                "z",
                                "a",
                                "instance",
                            ],
                        );
                        let v = pick(rnd(8), &["x", "prod", "", "é", "v\\nw", "p1", "test", "x"]);
                        format!("\"{k}\"{}:{}\"{v}\"", ws(rnd(9)), ws(rnd(9)))
                    })
                    .collect();
                fields.push(if rnd(30) == 0 {
                    "\"metric\":null".to_string()
                } else {
                    format!("\"metric\":{{{}}}", labels.join(","))
                });
            }
            let value = pick(
                rnd(12),
                &[
                    "1", "2.5", "NaN", "+Inf", "-Inf", "1e3", "abc", "0", "-0", "7", "3",
                    "1\\u0030",
                ],
            );
            if rnd(3) == 0 {
                fields.push(format!("\"value\":[{},\"{value}\"]", ts()));
            }
            if rnd(2) == 0 {
                let pts: Vec<String> = (0..rnd(5))
                    .map(|_| {
                        format!(
                            "[{},{}\"{}\"]",
                            ts(),
                            ws(rnd(9)),
                            pick(rnd(5), &["1", "2", "NaN", "4.25", "x"])
                        )
                    })
                    .collect();
                fields.push(format!("\"values\":[{}]", pts.join(",")));
            }
            if rnd(10) == 0 {
                fields.push(pick(rnd(4), &["\"histogram\":[1,{\"count\":\"2\",\"buckets\":[[0,\"1\",\"2\",\"3\"]]}]", "\"x\":null", "\"metric\":{}", "\"y\":[true,false,1.5e-3]"]).to_string());
            }
            let n = fields.len();
            for i in 0..n {
                let j = rnd(n as u64) as usize;
                fields.swap(i, j);
            }
            items.push(format!("{{{}}}", fields.join(",")));
        }
        if rnd(15) == 0 {
            items.push(pick(rnd(3), &["1", "\"x\"", "[1,\"2\"]"]).to_string());
        }
        let rt = pick(
            rnd(14),
            &[
                "vector", "matrix", "vector", "matrix", "vector", "matrix", "scalar", "string",
                "other", "vector", "matrix", "vector", "matrix", "matrix",
            ],
        );
        let result = if rt == "scalar" && rnd(2) == 0 {
            "[1700000000,\"5\"]".to_string()
        } else {
            format!("[{}]", items.join(","))
        };
        let mut data_fields = [
            format!("\"resultType\":\"{rt}\""),
            format!("\"result\":{result}"),
        ];
        if rnd(2) == 0 {
            data_fields.reverse();
        }
        let mut top = vec![
            format!(
                "\"status\":{}\"{}\"",
                ws(rnd(9)),
                pick(
                    rnd(20),
                    &["success"; 19]
                        .iter()
                        .copied()
                        .chain(["error"])
                        .collect::<Vec<_>>()
                )
            ),
            format!(
                "\"data\":{{{}}}",
                data_fields.join(&format!(",{}", ws(rnd(9))))
            ),
        ];
        if rnd(3) == 0 {
            top.push(
                pick(
                    rnd(5),
                    &[
                        "\"warnings\":[\"w\"]",
                        "\"infos\":[]",
                        "\"stats\":{\"a\":[1,2,{\"b\":null}]}",
                        "\"errorType\":null",
                        "\"error\":7",
                    ],
                )
                .to_string(),
            );
        }
        if rnd(40) == 0 {
            top.push("\"status\":\"success\"".to_string());
        }
        let n = top.len();
        for i in 0..n {
            let j = rnd(n as u64) as usize;
            top.swap(i, j);
        }
        let mut body = format!("{}{{{}}}{}", ws(rnd(9)), top.join(","), ws(rnd(9)));
        if rnd(12) == 0 {
            let cut = rnd(body.len() as u64) as usize;
            body.truncate(
                body.char_indices()
                    .map(|(i, _)| i)
                    .take_while(|&i| i <= cut)
                    .last()
                    .unwrap_or(0),
            );
        }
        let left = if rnd(4) == 0 { rnd(8) } else { u64::MAX };
        let r = Redactor::default();
        if fast::decode(body.as_bytes()).is_some() {
            fast_used += 1;
        }
        let a = decode_answer(body.as_bytes(), &r, left, left);
        let b = decode_answer_serde(body.as_bytes(), left);
        match (a, b) {
            (Ok((a, na)), Ok((b, nb))) => {
                assert_eq!(na, nb, "{case}: {body}");
                assert_eq!(a.len(), b.len(), "{case}: {body}");
                for i in 0..a.len() {
                    assert_eq!(a.label_map(i), b.label_map(i), "{case}: {body}");
                    let (pa, pb) = (a.points(i), b.points(i));
                    assert_eq!(pa.0, pb.0, "{case}: {body}");
                    assert_eq!(
                        pa.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        pb.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{case}: {body}"
                    );
                }
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{case}: {body}"),
            (a, b) => panic!(
                "{case}: {body}\nfast: {:?}\nserde: {:?}",
                a.map(|x| x.1),
                b.map(|x| x.1)
            ),
        }
    }
    // Most generated answers are of the kind Prometheus sends.
    assert!(fast_used > 1000, "{fast_used}");
}

#[test]
fn fast_decimals_equal_parse() {
    let mut cases: Vec<String> = [
        "0",
        "-0",
        "17",
        "0.05666666666666667",
        "141.44256784456574",
        "9007199254740992",
        "9007199254740993",
        "1.5",
        "-2.25",
        "0.1",
        "123456789012.345678",
        "1.",
        ".5",
        "1..2",
        "-",
        "",
        "+1",
        "1e3",
        "0.0000000000000000000001",
        "0.00000000000000000000001",
        "007",
        "4503599627370497.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut x: u64 = 88172645463325252;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let digits = (x % 1_000_000_000_000_000_000) as u128;
        let scale = (x >> 60) as usize % 20;
        let mut t = format!(
            "{:0width$}",
            digits % 10u128.pow((x >> 40) as u32 % 19 + 1),
            width = scale + 1
        );
        if scale > 0 {
            t.insert(t.len() - scale, '.');
        }
        if x & 1 == 1 {
            t.insert(0, '-');
        }
        cases.push(t);
    }
    let mut fast = 0;
    for c in &cases {
        if let Some(v) = fast::decimal(c.as_bytes()) {
            fast += 1;
            assert_eq!(v.to_bits(), c.parse::<f64>().unwrap().to_bits(), "{c}");
        }
    }
    assert!(fast > 100_000, "{fast}");
}

#[test]
fn range_answers_are_merged_and_sorted_by_labels() {
    let s = |l: &[(&str, &str)], p: &[(i64, f64)]| Series {
        labels: l
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        points: p.to_vec(),
    };
    let one = Answer::from_series(vec![
        s(&[("a", "2")], &[(1, 1.0)]),
        s(&[("a", "1")], &[(1, 2.0)]),
    ]);
    assert_eq!(
        Answer::merge_sorted(vec![one]).into_series(),
        vec![s(&[("a", "1")], &[(1, 2.0)]), s(&[("a", "2")], &[(1, 1.0)])]
    );
    // Repeated label sets (in one answer, or across split requests) are merged in order.
    let a = Answer::from_series(vec![
        s(&[("a", "2")], &[(1, 1.0)]),
        s(&[("a", "1")], &[(1, 2.0)]),
        s(&[("a", "2")], &[(2, 3.0)]),
    ]);
    let b = Answer::from_series(vec![s(&[("a", "2")], &[(3, 4.0)])]);
    assert_eq!(
        Answer::merge_sorted(vec![a, b]).into_series(),
        vec![
            s(&[("a", "1")], &[(1, 2.0)]),
            s(&[("a", "2")], &[(1, 1.0), (2, 3.0), (3, 4.0)])
        ]
    );
}

#[test]
fn sample_budget_stops_decoding() {
    let body = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[1,"1"],[2,"1"],[3,"1"]]},{"metric":{"a":"2"},"values":[[1,"1"],[2,"1"]]}]}}"#;
    let r = Redactor::default();
    let (s, n) = decode_query(body, &r, 5, 5).unwrap();
    assert_eq!((s.len(), n), (2, 5));
    let e = decode_query(body, &r, 4, 9).unwrap_err();
    assert_eq!(
        e.to_string(),
        "too many samples: the answer has more than 9 samples, more than the limit of 9; narrow the query or the time range, \
         use a larger step, or raise the limit (prometheus.maxSamples in the config file, max_samples := ... in SQL)"
    );
    assert!(!e.is_transient());
    // The budget is per decode: the next decode on this thread is unlimited again.
    assert_eq!(decode_query_response(body).unwrap().len(), 2);
}
