//! Writes a synthetic partition tree with promduck's own writer, for benchmarks:
//! `gen_partitions OUT_DIR DAYS PROXIES [FIRST_DAY] [ROWS_PER_METRIC]`.
//!
//! Each (day, proxy) file holds 3 metrics × 2 environments (the original tool's
//! daily shape: 6 rows) unless ROWS_PER_METRIC asks for more points per series.
//! Values are deterministic: value = day_index * 1000 + proxy_index + env_index.
//! OUT_DIR may be `s3://bucket/prefix` (settings from the `AWS_*` variables).

use chrono::NaiveDate;
use promduck_core::config::{Compression, StorageConfig};
use promduck_core::prometheus::Series;
use promduck_core::schema::PartitionBuilder;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: gen_partitions OUT_DIR DAYS PROXIES [FIRST_DAY=2024-01-01] [ROWS_PER_METRIC=1]"
        );
        std::process::exit(2);
    }
    let out = PathBuf::from(&args[1]);
    let days: u64 = args[2].parse()?;
    let proxies: usize = args[3].parse()?;
    let first = NaiveDate::parse_from_str(
        args.get(4).map(String::as_str).unwrap_or("2024-01-01"),
        "%Y-%m-%d",
    )?;
    let points: i64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let storage = StorageConfig {
        output_dir: out.clone(),
        compression: Compression::Zstd,
        row_group_size: 128 << 20,
        durable: false,
        s3: Default::default(),
    };
    let archive = promduck_core::storage::open(&args[1], &Default::default())?;
    let started = Instant::now();
    let metrics = ["request_count", "error_count", "latency_ms"];
    let envs = ["prod", "test"];
    for d in 0..days {
        let day = first + chrono::Days::new(d);
        let day_end = day
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_millis()
            + 86_400_000;
        for p in 0..proxies {
            let proxy = format!("api-proxy-{p}");
            let mut b = PartitionBuilder::new();
            for m in metrics {
                for (e, env) in envs.iter().enumerate() {
                    let labels = [
                        ("apiproxy".to_string(), proxy.clone()),
                        ("environment".to_string(), env.to_string()),
                    ]
                    .into_iter()
                    .collect();
                    let value = (d as f64) * 1000.0 + p as f64 + e as f64;
                    let pts = (0..points)
                        .map(|i| (day_end - (points - i) * 60_000, value))
                        .collect();
                    b.push_series(
                        m,
                        &Series {
                            labels,
                            points: pts,
                        },
                        &[],
                    );
                }
            }
            archive.write_partition(day, &proxy, &b.finish(&proxy, day), &storage)?;
        }
    }
    eprintln!(
        "wrote {} partitions in {:.1} s",
        days as usize * proxies,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
