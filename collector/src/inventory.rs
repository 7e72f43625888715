//! `--inventory`: the archive's days, proxies, metrics, rows, bytes, compacted months
//! and holes, printed as a table or as one JSON document (see `core::inventory`).

use anyhow::Context;
use chrono::NaiveDate;
use clap::ValueEnum;
use promduck_core::config::Config;
use promduck_core::inventory::{self, Inventory};
use promduck_core::reader::Selection;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Format {
    Table,
    Json,
}

/// Prints the inventory of `from..=to` (each may be open) of the config's archive.
/// Holes are listed from the first day asked (or held) to `to`, else the last
/// complete day `last_complete`.
pub fn run(
    config: &Config,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    last_complete: NaiveDate,
    format: Format,
) -> anyhow::Result<()> {
    let storage = promduck_core::storage::for_config(&config.storage).with_context(|| {
        format!(
            "cannot open the archive {}",
            config.storage.output_dir.display()
        )
    })?;
    let sel = Selection {
        from,
        to,
        proxies: None,
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let expected = inventory::Expected {
        proxies: &config.api_proxies,
        until: last_complete,
    };
    let inv = inventory::take(storage.as_ref(), &sel, Some(expected), threads)?;
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&Report::of(&inv))? + "\n",
        Format::Table => table(&inv),
    };
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

/// The JSON document: the inventory with its totals.
#[derive(Serialize)]
struct Report<'a> {
    location: &'a str,
    days: usize,
    first_day: Option<NaiveDate>,
    last_day: Option<NaiveDate>,
    proxies: Vec<&'a str>,
    metrics: BTreeMap<&'a str, u64>,
    partitions: usize,
    rows: u64,
    files: u64,
    bytes: u64,
    compacted_months: Vec<String>,
    holes: Vec<Hole<'a>>,
    by_partition: &'a [inventory::Partition],
}

#[derive(Serialize)]
struct Hole<'a> {
    date: NaiveDate,
    proxies: &'a [String],
}

impl<'a> Report<'a> {
    fn of(inv: &'a Inventory) -> Report<'a> {
        let days = inv.days();
        Report {
            location: &inv.location,
            days: days.len(),
            first_day: days.first().copied(),
            last_day: days.last().copied(),
            proxies: inv.proxies(),
            metrics: inv.metrics(),
            partitions: inv.partitions.len(),
            rows: inv.rows(),
            files: inv.files,
            bytes: inv.bytes,
            compacted_months: inv
                .compacted_months
                .iter()
                .map(|m| m.month.format("%Y-%m").to_string())
                .collect(),
            holes: inv
                .holes
                .iter()
                .map(|(date, proxies)| Hole {
                    date: *date,
                    proxies,
                })
                .collect(),
            by_partition: &inv.partitions,
        }
    }
}

fn table(inv: &Inventory) -> String {
    let mut out = String::new();
    let days = inv.days();
    let _ = writeln!(out, "archive: {}", inv.location);
    match (days.first(), days.last()) {
        (Some(a), Some(b)) => {
            let _ = writeln!(
                out,
                "days: {} ({a} .. {b})   proxies: {}   partitions: {}   rows: {}   files: {}   bytes: {}",
                days.len(),
                inv.proxies().len(),
                inv.partitions.len(),
                inv.rows(),
                inv.files,
                inv.bytes
            );
        }
        _ => {
            let _ = writeln!(out, "no partitions");
        }
    }
    let metrics = inv.metrics();
    if !metrics.is_empty() {
        let w = metrics.keys().map(|m| m.len()).max().unwrap_or(6).max(6);
        let _ = writeln!(out, "\n{:<w$}  {:>12}", "metric", "rows");
        for (m, n) in &metrics {
            let _ = writeln!(out, "{m:<w$}  {n:>12}");
        }
    }
    if !days.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<10}  {:>7}  {:>10}  {:>12}  source",
            "date", "proxies", "rows", "bytes"
        );
        for d in &days {
            let ps: Vec<&inventory::Partition> =
                inv.partitions.iter().filter(|p| p.date == *d).collect();
            let rows: u64 = ps.iter().map(|p| p.rows).sum();
            let bytes = if ps.iter().all(|p| p.bytes.is_some()) {
                ps.iter().filter_map(|p| p.bytes).sum::<u64>().to_string()
            } else {
                "-".to_string()
            };
            let mut sources: Vec<&str> = ps.iter().map(|p| p.source).collect();
            sources.sort_unstable();
            sources.dedup();
            let _ = writeln!(
                out,
                "{d:<10}  {:>7}  {rows:>10}  {bytes:>12}  {}",
                ps.len(),
                sources.join(",")
            );
        }
    }
    if !inv.compacted_months.is_empty() {
        let _ = writeln!(out, "\ncompacted months:");
        for m in &inv.compacted_months {
            let bytes = m.bytes.map_or("-".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "  {}  {}  {bytes} bytes",
                m.month.format("%Y-%m"),
                m.path
            );
        }
    }
    let missing: usize = inv.holes.iter().map(|h| h.1.len()).sum();
    if missing == 0 {
        let _ = writeln!(out, "\nholes: none");
    } else {
        let _ = writeln!(
            out,
            "\nholes: {missing} partition(s) missing on {} day(s):",
            inv.holes.len()
        );
        for (d, ps) in &inv.holes {
            let shown: Vec<&str> = ps.iter().take(10).map(String::as_str).collect();
            let more = if ps.len() > 10 {
                format!(", ... ({} more)", ps.len() - 10)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {d}: {}{more}", shown.join(", "));
        }
    }
    out
}
