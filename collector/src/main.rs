//! `promduck-collector`: the command-line shell over `promduck_core::collect`.
//!
//! Modes: daemon (default; the original tool's behaviour), `--once` (cron),
//! `--date`/`--from --to` (backfill) and `--check`. Exit codes: 0 all good,
//! 1 some (day, proxy, metric) failed (the rest is written), 2 bad config or usage.

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use promduck_core::collect::{Cancel, Collector, PartitionOutcome, Status};
use promduck_core::config::Config;
use promduck_core::plan::{days_between, last_complete_day, parse_date};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "promduck-collector",
    version,
    about = "Collect Prometheus metrics per API proxy and day into Parquet partitions",
    long_about = "Collect Prometheus metrics per API proxy and day into Parquet partitions \
                  (<outputDir>/<YYYY-MM-DD>/<proxy>.parquet).\n\n\
                  Without a mode flag it runs as a daemon: it collects the last complete day, \
                  catches up days it missed, then repeats every 24 h (every minute with debug: true).",
    after_help = "Exit status: 0 everything collected, 1 some (day, proxy, metric) failed \
                  (everything else was written), 2 bad configuration or usage.\n\n\
                  Examples:\n  promduck-collector --config config/config.yaml --once\n  \
                  promduck-collector --config config/config.yaml --from 2024-03-01 --to 2024-03-31\n  \
                  promduck-collector --config config/config.yaml --check"
)]
struct Cli {
    /// YAML configuration file (the original tool's format).
    #[arg(short, long, env = "PROMDUCK_CONFIG", default_value = "config/config.yaml")]
    config: PathBuf,

    /// Collect the last complete day and exit (for cron).
    #[arg(long, conflicts_with_all = ["date", "from", "to", "check"])]
    once: bool,

    /// Collect one day (YYYY-MM-DD) and exit. With --check: the day to check (default: the last complete day).
    #[arg(long, value_parser = parse_day, conflicts_with_all = ["from", "to"])]
    date: Option<NaiveDate>,

    /// First day of a backfill (inclusive, YYYY-MM-DD); needs --to.
    #[arg(long, value_parser = parse_day, requires = "to", conflicts_with = "check")]
    from: Option<NaiveDate>,

    /// Last day of a backfill (inclusive, YYYY-MM-DD); needs --from.
    #[arg(long, value_parser = parse_day, requires = "from", conflicts_with = "check")]
    to: Option<NaiveDate>,

    /// Validate the configuration, check that Prometheus answers every metric's query, and exit.
    #[arg(long)]
    check: bool,

    /// Replace partitions with exactly what Prometheus answers now. By default a
    /// metric that answers with no data for a day keeps the rows the existing file
    /// has for it (Prometheus's retention forgets; the archive must not).
    #[arg(long, conflicts_with = "check")]
    replace: bool,

    /// Daemon only: how many missed days to catch up at start at most.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=3660))]
    catch_up_days: u32,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Show a progress bar (default: when stderr is a terminal and several days run).
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    progress: Progress,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Progress {
    Auto,
    Always,
    Never,
}

fn parse_day(s: &str) -> Result<NaiveDate, String> {
    parse_date(s).map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat, debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROMDUCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("promduck={default},promduck_core={default},promduck_collector={default},warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            // Once: as a JSON log event for log pipelines, else as a plain line.
            if cli.log_format == LogFormat::Json {
                init_logging(cli.log_format, false);
                tracing::error!("invalid configuration: {e}");
            } else {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format, config.debug);
    // Partition writes run on blocking threads; a small pool bounds both the
    // threads and the memory they hold, and is plenty to keep fsyncs overlapping.
    let runtime = match tokio::runtime::Builder::new_multi_thread().max_blocking_threads(16).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let json_logs = cli.log_format == LogFormat::Json;
    match runtime.block_on(run(cli, config)) {
        Ok(code) => code,
        Err(e) => {
            // Once: as a JSON log event for log pipelines, else as a plain line.
            if json_logs {
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    let collector = Collector::new(config).context("cannot set up the Prometheus client")?.with_replace(cli.replace);
    let cfg = collector.config().clone();
    let cancel = Cancel::new();
    spawn_signal_handler(cancel.clone());

    if cli.check {
        return Ok(check(&collector, cli.date).await);
    }
    let now = Utc::now();
    let days: Option<Vec<NaiveDate>> = if let Some(d) = cli.date {
        Some(days_between(d, d, now, cfg.timezone)?)
    } else if let (Some(f), Some(t)) = (cli.from, cli.to) {
        Some(days_between(f, t, now, cfg.timezone)?)
    } else if cli.once {
        Some(vec![last_complete_day(now, cfg.timezone)])
    } else {
        None
    };
    if let Some(days) = days {
        let ok = collect(&collector, &days, &cancel, cli.progress).await;
        return Ok(if cancel.is_cancelled() { ExitCode::from(130) } else if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }

    // Daemon.
    tracing::info!(
        url = collector.client().url(),
        proxies = cfg.api_proxies.len(),
        metrics = cfg.metrics.len(),
        interval = ?cfg.interval,
        output_dir = %cfg.storage.output_dir.display(),
        "promduck collector started as a daemon"
    );
    let mut all_ok = true;
    loop {
        let last = last_complete_day(Utc::now(), cfg.timezone);
        let days = missing_days(&cfg, last, cli.catch_up_days);
        all_ok &= collect(&collector, &days, &cancel, cli.progress).await;
        if cancel.is_cancelled() {
            break;
        }
        tracing::info!(next_in = ?cfg.interval, "waiting for the next collection");
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = cancel.cancelled() => break,
        }
    }
    tracing::info!("stopped");
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Days from the newest complete day on disk (exclusive) to `last` (inclusive),
/// at most `catch_up + 1` of them; always at least `last` itself.
fn missing_days(cfg: &Config, last: NaiveDate, catch_up: u32) -> Vec<NaiveDate> {
    let complete = |d: NaiveDate| {
        cfg.api_proxies
            .iter()
            .all(|p| promduck_core::layout::partition_path(&cfg.storage.output_dir, d, p).is_file())
    };
    let mut days = vec![last];
    let mut d = last;
    for _ in 0..catch_up {
        let Some(prev) = d.pred_opt() else { break };
        if complete(prev) {
            break;
        }
        days.push(prev);
        d = prev;
    }
    days.reverse();
    days
}

/// Runs a collection with progress and a summary; true when nothing failed.
async fn collect(collector: &Collector, days: &[NaiveDate], cancel: &Cancel, progress: Progress) -> bool {
    let cfg = collector.config();
    let total = (days.len() * cfg.api_proxies.len()) as u64;
    let show_bar = match progress {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => days.len() > 1 && std::io::stderr().is_terminal(),
    };
    let bar = show_bar.then(|| {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} partitions ({eta} left) {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    match (days.first(), days.last()) {
        (Some(f), Some(l)) if f == l => tracing::info!(day = %f, partitions = total, "collecting"),
        (Some(f), Some(l)) => tracing::info!(from = %f, to = %l, days = days.len(), partitions = total, "collecting"),
        _ => return true,
    }
    let started = Instant::now();
    let summary = collector
        .run(days, cancel, |o: &PartitionOutcome| {
            report(o, bar.as_ref());
        })
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    tracing::info!(
        written = summary.written,
        empty = summary.empty,
        kept = summary.kept,
        failed = summary.failed,
        cancelled = summary.cancelled,
        rows = summary.rows,
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        "collection finished"
    );
    summary.failed == 0 && summary.cancelled == 0
}

fn report(o: &PartitionOutcome, bar: Option<&ProgressBar>) {
    let line = || match o.status {
        Status::Written => match o.kept_note() {
            None => tracing::info!(day = %o.day, proxy = %o.proxy, rows = o.rows, path = %o.path.display(), "written"),
            Some(note) => tracing::warn!(day = %o.day, proxy = %o.proxy, rows = o.rows, path = %o.path.display(), "written; {note}"),
        },
        Status::Empty => tracing::warn!(day = %o.day, proxy = %o.proxy, path = %o.path.display(), "Prometheus returned no data for any metric; wrote an empty partition"),
        Status::Kept => tracing::warn!(day = %o.day, proxy = %o.proxy, path = %o.path.display(), "Prometheus returned no data; kept the existing file"),
        Status::Cancelled => tracing::warn!(day = %o.day, proxy = %o.proxy, "cancelled; existing file untouched"),
        Status::Failed => {
            for f in &o.failures {
                tracing::error!(day = %o.day, proxy = %o.proxy, metric = %f.metric, error = %f.error, "failed; existing file untouched");
            }
        }
    };
    match bar {
        Some(b) => {
            if o.status != Status::Written {
                b.suspend(line);
            }
            b.inc(1);
        }
        None => line(),
    }
}

async fn check(collector: &Collector, day: Option<NaiveDate>) -> ExitCode {
    let cfg = collector.config();
    println!("config {}: ok ({} proxies, {} metrics, output {})", cfg.source.display(), cfg.api_proxies.len(), cfg.metrics.len(), cfg.storage.output_dir.display());
    if let Err(e) = collector.client().ping().await {
        println!("prometheus {}: FAILED: {e}", collector.client().url());
        return ExitCode::from(1);
    }
    println!("prometheus {}: ok", collector.client().url());
    let day = day.unwrap_or_else(|| last_complete_day(Utc::now(), cfg.timezone));
    let proxy = &cfg.api_proxies[0];
    let mut ok = true;
    // The same query a collection runs (instant or the step grid), and the same
    // checks on its answer (series that would collide once labels are dropped).
    for m in &cfg.metrics {
        match collector.query_metric(m, proxy, day).await {
            Ok(series) => println!("metric {}: ok ({} series for proxy {proxy:?} on {day})", m.name, series.len()),
            Err(e) => {
                println!("metric {}: FAILED: {e}", m.name);
                ok = false;
            }
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn spawn_signal_handler(cancel: Cancel) {
    tokio::spawn(async move {
        let term = async {
            #[cfg(unix)]
            {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::warn!("signal received: finishing files in progress, starting no new ones (signal again to exit now)");
        cancel.cancel();
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}
