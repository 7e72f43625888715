//! `promduck-collector`: the command-line shell over `promduck_core::collect`.
//!
//! Modes: daemon (default; the original tool's behaviour), `--once` (cron),
//! `--date`/`--from --to` (backfill), `--check` and `--compact` (closed months into
//! one file each, see `promduck_core::compact`). Exit codes: 0 all good (and a
//! daemon stopped on request), 1 some (day, proxy, metric) failed (the rest is
//! written), 2 bad config or usage, 130 a one-shot run stopped by a signal with
//! partitions left uncollected.

mod chunkenc;
mod inventory;
mod prompb;
mod serve;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use promduck_core::cancel::Cancel;
use promduck_core::collect::{Collector, PartitionOutcome, RunSummary, Status};
use promduck_core::compact::Compact;
use promduck_core::config::Config;
use promduck_core::plan::{days_between, last_complete_day, parse_date, Shard};
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
                  catches up days it missed, then runs again just after each day closes in the \
                  config's timezone (00:30), or every `interval` if that is sooner (debug: true: \
                  every minute); it logs when the next run is.",
    after_help = "Exit status: 0 everything collected (a daemon stopped by SIGTERM/SIGINT/SIGHUP \
                  also exits 0), 1 some (day, proxy, metric) failed (everything else was written), \
                  2 bad configuration or usage, 130 a one-shot run stopped by a signal before \
                  every partition was collected.\n\n\
                  Examples:\n  promduck-collector --config config/config.yaml --once\n  \
                  promduck-collector --config config/config.yaml --from 2024-03-01 --to 2024-03-31\n  \
                  promduck-collector --config config/config.yaml --check\n  \
                  promduck-collector --config config/config.yaml --compact --month 2024-03\n  \
                  promduck-collector --config config/config.yaml --serve 127.0.0.1:9201   # Prometheus remote_read\n  \
                  promduck-collector --config config/config.yaml --serve 127.0.0.1:9201 --daemon   # collect and serve"
)]
struct Cli {
    /// YAML configuration file (the original tool's format); `-` reads it from standard input.
    #[arg(
        short,
        long,
        env = "PROMDUCK_CONFIG",
        default_value = promduck_core::config::DEFAULT_CONFIG_FILE
    )]
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
    /// re-collection keeps every archived row the new answer lacks (a series, a step
    /// point, a metric) and leaves a day Prometheus no longer holds in full as it is
    /// (Prometheus's retention forgets; the archive must not).
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

    /// Collect only this shard of the proxies: `i/n` with 0 <= i < n (a stable hash of
    /// each name decides its shard, so n collectors cover every proxy exactly once).
    /// A Kubernetes Indexed Job can pass its JOB_COMPLETION_INDEX as i.
    #[arg(long, env = "PROMDUCK_SHARD", value_parser = parse_shard)]
    shard: Option<Shard>,

    /// After each run, write the collector's own metrics in Prometheus text format to
    /// this file, atomically (for node_exporter's textfile collector).
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,

    /// Daemon only: serve the same metrics over HTTP at ADDR (e.g. 127.0.0.1:9464), on any path.
    /// A one-shot run has nothing to serve: use --metrics-file there.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["once", "date", "from", "check", "compact"])]
    metrics_listen: Option<std::net::SocketAddr>,

    /// Compact every closed month (in the configured timezone) that still has daily
    /// files into one file, <outputDir>/<YYYY-MM>/<YYYY-MM>.parquet, and exit.
    #[arg(long, conflicts_with_all = ["once", "date", "from", "to", "check"])]
    compact: bool,

    /// Serve the archive (storage.outputDir) to Prometheus's remote_read on
    /// POST http://ADDR/api/v1/read, with the server's own metrics on /metrics, until
    /// SIGTERM/SIGINT (exit 0). ADDR is required; give a loopback address (e.g.
    /// 127.0.0.1:9201) unless other hosts must reach it. Auth and limits: `serve` in the config.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["once", "date", "from", "check", "compact", "metrics_listen", "shard"])]
    serve: Option<std::net::SocketAddr>,

    /// Print what the archive (storage.outputDir, disk or S3) holds and exit: its days,
    /// proxies, metrics, rows, bytes, compacted months and holes (the config's proxies
    /// missing up to the last complete day), as a table or JSON. --date or --from/--to
    /// bound the days read.
    #[arg(long, value_enum, value_name = "FORMAT", num_args = 0..=1, default_missing_value = "table",
          conflicts_with_all = ["once", "check", "compact", "serve", "metrics_listen", "replace"])]
    inventory: Option<inventory::Format>,

    /// With --serve: also run the daemon (collect as without a mode flag) in the same
    /// process, so the archive is served while it is collected. A signal stops both:
    /// files in progress are finished, reads in progress answered (exit 0).
    #[arg(long, requires = "serve")]
    daemon: bool,

    /// With --compact: only this month (YYYY-MM).
    #[arg(long, value_parser = parse_month_arg, requires = "compact", value_name = "YYYY-MM")]
    month: Option<NaiveDate>,
}

fn parse_month_arg(s: &str) -> Result<NaiveDate, String> {
    promduck_core::compact::parse_month(s).map_err(|e| e.to_string())
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    Shard::parse(s).map_err(|e| e.to_string())
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
    let filter = std::env::var("PROMDUCK_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(quiet_libraries(&v)).ok())
        .unwrap_or_else(|| {
            tracing_subscriber::EnvFilter::new(format!(
                "promduck={default},promduck_core={default},promduck_collector={default},warn"
            ))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// The HTTP and TLS libraries under the client log every connection and frame at
/// debug level; `PROMDUCK_LOG=debug` means promduck's own debug lines, so those stay
/// at `info` unless the filter names them (`PROMDUCK_LOG=debug,hyper=debug`).
fn quiet_libraries(filter: &str) -> String {
    const NOISY: [&str; 7] = [
        "hyper",
        "hyper_util",
        "reqwest",
        "h2",
        "rustls",
        "tower",
        "tokio_util",
    ];
    let named = |c: &str| {
        filter
            .split(',')
            .any(|d| d.trim().split(['=', '[', ':']).next() == Some(c))
    };
    let mut out = filter.to_string();
    for c in NOISY.iter().filter(|c| !named(c)) {
        out.push_str(&format!(",{c}=info"));
    }
    out
}

fn load_config(path: &std::path::Path) -> Result<Config, String> {
    if path.as_os_str() == "-" {
        use promduck_core::config::small_file::CONFIG_LIMIT;
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), CONFIG_LIMIT + 1),
            &mut text,
        )
        .map_err(|e| format!("<stdin>: cannot read the configuration: {e}"))?;
        if text.len() as u64 > CONFIG_LIMIT {
            return Err(format!(
                "<stdin>: the configuration is larger than the limit of {CONFIG_LIMIT} bytes"
            ));
        }
        return Config::from_yaml_str(&text, std::path::Path::new("<stdin>"))
            .map_err(|e| e.to_string());
    }
    Config::load(path).map_err(|e| e.to_string())
}

/// The current time (`promduck_core::clock::now`: `PROMDUCK_NOW` when set), checked in `main`.
fn current_time() -> DateTime<Utc> {
    promduck_core::clock::now().unwrap_or_else(|e| unreachable!("checked at start: {e}"))
}

fn main() -> ExitCode {
    // An empty PROMDUCK_CONFIG= or PROMDUCK_SHARD= (common in templates) means unset.
    for var in ["PROMDUCK_CONFIG", "PROMDUCK_SHARD"] {
        if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(var);
        }
    }
    let cli = Cli::parse();
    // PROMDUCK_NOW (a testing aid) is checked once here; every later `current_time()` reads the same value.
    if let Err(e) = promduck_core::clock::now() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let config = match load_config(&cli.config) {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
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

async fn run(cli: Cli, mut config: Config) -> anyhow::Result<ExitCode> {
    if let Some(format) = cli.inventory {
        let (from, to) = match (cli.date, cli.from, cli.to) {
            (Some(d), _, _) => (Some(d), Some(d)),
            (None, f, t) => (f, t),
        };
        let last = last_complete_day(current_time(), config.timezone);
        tokio::task::block_in_place(|| inventory::run(&config, from, to, last, format))?;
        return Ok(ExitCode::SUCCESS);
    }
    // With --daemon the server is bound now (a bad address fails at start) and runs
    // beside the daemon below.
    let mut server = None;
    if let Some(addr) = cli.serve.filter(|_| cli.daemon) {
        server = Some(serve::bind(&config, addr).await?);
    } else if let Some(addr) = cli.serve {
        let cancel = Cancel::new();
        spawn_signal_handler(
            cancel.clone(),
            "signal received: stopping the remote-read server: no new connections, \
             reads in progress finish (signal again to exit now)",
        );
        return serve::run(&config, addr, cancel).await;
    }
    if let Some(shard) = cli.shard {
        let all = config.api_proxies.len();
        config.api_proxies.retain(|p| shard.owns(p));
        tracing::info!(
            shard = format!("{}/{}", shard.index, shard.count),
            proxies = config.api_proxies.len(),
            of = all,
            "collecting one shard of the proxies"
        );
        if config.api_proxies.is_empty() {
            tracing::warn!("this shard owns none of the configured proxies: nothing to do");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let collector = Collector::new(config)
        .context("cannot set up the Prometheus client")?
        .with_replace(cli.replace);
    let mut metrics = SelfMetrics::new(cli.metrics_file.clone(), cli.shard);
    let cfg = collector.config().clone();
    let cancel = Cancel::new();
    spawn_signal_handler(
        cancel.clone(),
        match server {
            None => "signal received: finishing files in progress, starting no new ones (signal again to exit now)",
            Some(_) => "signal received: finishing files in progress, starting no new ones; \
                        the remote-read server takes no new connections, answers reads in progress \
                        (signal again to exit now)",
        },
    );
    let server = server.map(|s| tokio::spawn(s.serve(cancel.clone())));

    if cli.check {
        let report = CheckReport {
            json: cli.log_format == LogFormat::Json,
        };
        return Ok(check(&collector, cli.date, cli.catch_up_days, report).await);
    }
    let now = current_time();
    let days: Option<Vec<NaiveDate>> = if let Some(d) = cli.date {
        Some(days_between(d, d, now, cfg.timezone)?)
    } else if let (Some(f), Some(t)) = (cli.from, cli.to) {
        Some(days_between(f, t, now, cfg.timezone)?)
    } else if cli.once {
        Some(vec![last_complete_day(now, cfg.timezone)])
    } else {
        None
    };
    let swept = collector.storage().remove_stale_temp_files();
    if swept > 0 {
        tracing::info!(
            removed = swept,
            "removed temporary files left by an interrupted run"
        );
    }
    if cli.compact {
        let months = match cli.month {
            Some(m) => {
                promduck_core::compact::check_closed(m, now, cfg.timezone)?;
                vec![m]
            }
            None => collector.storage().months_with_daily_files(
                promduck_core::compact::current_month(now, cfg.timezone),
            )?,
        };
        if months.is_empty() {
            tracing::info!(output_dir = %collector.storage().url(), "no closed month has daily files: nothing to compact");
            return Ok(ExitCode::SUCCESS);
        }
        let outcomes = compact(&collector, months, &cancel, cli.replace).await;
        return Ok(compaction_exit_code(&outcomes));
    }
    if let Some(days) = days {
        let all: Vec<(NaiveDate, &[String])> = days
            .iter()
            .map(|&d| (d, cfg.api_proxies.as_slice()))
            .collect();
        let started = Instant::now();
        let summary = collect(&collector, &all, &cancel, cli.progress).await;
        let metrics_written =
            metrics.record(&summary, started.elapsed(), collector.client().stats());
        // Days of compacted months were written as daily files again: compact those
        // months now, so that the new values take effect (see compact.rs).
        let recompact = recompact_months(&collector, &days);
        if !recompact.is_empty() && !cancel.is_cancelled() {
            let outcomes = compact(&collector, recompact, &cancel, cli.replace).await;
            if outcomes
                .iter()
                .any(|o| o.status == promduck_core::compact::MonthStatus::Failed)
            {
                return Ok(ExitCode::from(1));
            }
        }
        // Stopped because Prometheus cannot be used: a failure (1). Else 130 only
        // when a signal actually left partitions uncollected.
        return Ok(if summary.aborted.is_some() {
            ExitCode::from(1)
        } else if summary.cancelled > 0 {
            ExitCode::from(130)
        } else if summary.failed == 0 && metrics_written {
            ExitCode::SUCCESS
        } else {
            // A partition failed, or the --metrics-file asked for could not be written
            // (cron would otherwise never learn that monitoring went blind).
            ExitCode::from(1)
        });
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
    if let Some(addr) = cli.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen {addr}"))?;
        tracing::info!(%addr, "serving the collector's metrics");
        tokio::spawn(serve_metrics(listener, metrics.shared()));
    }
    loop {
        let last = last_complete_day(current_time(), cfg.timezone);
        let units = daemon_partitions(&collector, last, cli.catch_up_days);
        let units: Vec<(NaiveDate, &[String])> =
            units.iter().map(|(d, p)| (*d, p.as_slice())).collect();
        let started = Instant::now();
        let summary = collect(&collector, &units, &cancel, cli.progress).await;
        metrics.record(&summary, started.elapsed(), collector.client().stats());
        if cancel.is_cancelled() {
            break;
        }
        // Compaction: months compacted before that got daily files again, and, with
        // storage.compaction.afterDays, every month closed that many days ago.
        let days: Vec<NaiveDate> = units.iter().map(|u| u.0).collect();
        let mut months = recompact_months(&collector, &days);
        if let Some(after) = cfg.compaction.after_days {
            let now = current_time();
            let today = now.with_timezone(&cfg.timezone).date_naive();
            let current = promduck_core::compact::current_month(now, cfg.timezone);
            match collector.storage().months_with_daily_files(current) {
                Ok(closed) => months.extend(closed.into_iter().filter(|m| {
                    let closes = promduck_core::layout::month_end(*m)
                        .succ_opt()
                        .unwrap_or(*m);
                    closes + chrono::Days::new(after as u64) <= today
                })),
                Err(e) => tracing::error!(error = %e, "cannot list the months to compact"),
            }
        }
        months.sort();
        months.dedup();
        if !months.is_empty() {
            compact(&collector, months, &cancel, cli.replace).await;
            if cancel.is_cancelled() {
                break;
            }
        }
        let now = current_time();
        let next = promduck_core::plan::next_run(now, cfg.timezone, cfg.interval);
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::info!(
            next_run = %next.with_timezone(&cfg.timezone).format("%Y-%m-%d %H:%M:%S %Z"),
            next_in = ?wait,
            "waiting for the next collection (just after the day closes, or `interval` if sooner)"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
    }
    // A requested stop is a normal end for a service (systemd, Kubernetes): exit 0.
    // Failures of earlier ticks were logged when they happened.
    if let Some(server) = server {
        let _ = server.await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The compacted months (those with a month file) among the months of `days`: a
/// collection wrote daily files into them, which the next compaction takes in.
/// A month that cannot be checked is left out (logged).
fn recompact_months(collector: &Collector, days: &[NaiveDate]) -> Vec<NaiveDate> {
    let mut months: Vec<NaiveDate> = days
        .iter()
        .map(|d| promduck_core::layout::month_of(*d))
        .collect();
    months.sort();
    months.dedup();
    months.retain(|m| match collector.storage().is_compacted(*m) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(month = %promduck_core::layout::month_dir_name(*m), error = %e, "cannot tell whether the month is compacted");
            false
        }
    });
    months
}

/// Compacts months on a blocking thread, logging each outcome.
async fn compact(
    collector: &Collector,
    months: Vec<NaiveDate>,
    cancel: &Cancel,
    replace: bool,
) -> Vec<promduck_core::compact::MonthOutcome> {
    use promduck_core::compact::{CompactOptions, MonthStatus};
    let cfg = collector.config();
    let mut opts = CompactOptions::from_config(cfg);
    opts.replace_partitions = replace;
    let (archive, storage, stop) = (
        collector.storage().clone(),
        cfg.storage.clone(),
        cancel.clone(),
    );
    let names: Vec<String> = months
        .iter()
        .map(|m| promduck_core::layout::month_dir_name(*m))
        .collect();
    tracing::info!(months = %names.join(", "), remove_daily_after = ?opts.remove_daily_after, "compacting");
    let started = Instant::now();
    let outcomes =
        match tokio::task::spawn_blocking(move || archive.compact(&months, &storage, &opts, &stop))
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "compaction stopped unexpectedly");
                return Vec::new();
            }
        };
    for o in &outcomes {
        let month = o.month_name();
        match o.status {
            MonthStatus::Compacted | MonthStatus::Unchanged => tracing::info!(
                month,
                status = o.status.as_str(),
                daily_files = o.daily_files,
                removed = o.removed,
                partitions = o.partitions,
                rows = o.rows,
                bytes = o.bytes,
                row_groups = o.row_groups,
                seconds = format!("{:.2}", o.seconds),
                path = %o.path.display(),
                "month compacted"
            ),
            MonthStatus::Written => {
                tracing::warn!(month, path = %o.path.display(), daily_files = o.daily_files, "month file written; stopped before its daily files were removed (the next compaction removes them)")
            }
            MonthStatus::Empty => {
                tracing::info!(
                    month,
                    status = o.status.as_str(),
                    "nothing to compact: the archive holds no partition of this month"
                )
            }
            MonthStatus::Cancelled => tracing::warn!(month, "not compacted: stopped by a signal"),
            MonthStatus::Failed => tracing::error!(
                month,
                error = o.error.as_deref().unwrap_or(""),
                "compaction failed; the month reads as before"
            ),
        }
    }
    tracing::info!(
        months = outcomes.len(),
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        "compaction finished"
    );
    outcomes
}

/// 0 when every month was compacted (or had nothing to do), 1 when one failed, 130
/// when a signal stopped the run before every month was done.
fn compaction_exit_code(outcomes: &[promduck_core::compact::MonthOutcome]) -> ExitCode {
    use promduck_core::compact::MonthStatus;
    if outcomes.iter().any(|o| o.status == MonthStatus::Failed) {
        ExitCode::from(1)
    } else if outcomes
        .iter()
        .any(|o| matches!(o.status, MonthStatus::Cancelled | MonthStatus::Written))
    {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    }
}

/// The (day, proxies) a daemon tick collects: the last complete day whole, and for
/// each earlier day of the catch-up window the proxies that have no partition yet
/// (a hole behind a complete day is filled too, not only a missing tail).
fn daemon_partitions(
    collector: &Collector,
    last: NaiveDate,
    catch_up: u32,
) -> Vec<(NaiveDate, Vec<String>)> {
    let cfg = collector.config();
    let mut out: Vec<(NaiveDate, Vec<String>)> = gaps(collector, last, catch_up)
        .into_iter()
        .filter(|(d, _)| *d != last)
        .collect();
    out.push((last, cfg.api_proxies.clone()));
    out
}

/// For each day of `last - catch_up ..= last`, the proxies without a partition
/// (days with none missing left out), oldest first (see `Storage::holes`). An archive
/// that cannot be listed: every day is collected whole, with a warning.
fn gaps(collector: &Collector, last: NaiveDate, catch_up: u32) -> Vec<(NaiveDate, Vec<String>)> {
    let proxies = &collector.config().api_proxies;
    let first = last
        .checked_sub_days(chrono::Days::new(catch_up.into()))
        .unwrap_or(NaiveDate::MIN);
    match collector.storage().holes(proxies, first, last) {
        Ok(holes) => holes,
        Err(e) => {
            tracing::warn!(from = %first, to = %last, error = %e, "cannot list the archive; collecting the days whole");
            first
                .iter_days()
                .take_while(|d| *d <= last)
                .map(|d| (d, proxies.clone()))
                .collect()
        }
    }
}

/// Runs a collection with progress and a summary.
async fn collect(
    collector: &Collector,
    units: &[(NaiveDate, &[String])],
    cancel: &Cancel,
    progress: Progress,
) -> RunSummary {
    let days: Vec<NaiveDate> = units.iter().map(|u| u.0).collect();
    let total = units.iter().map(|u| u.1.len()).sum::<usize>() as u64;
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
    // A bar that cannot be drawn (stderr is no terminal: systemd, cron, a pipe) would only
    // hide the per-partition lines it replaces: the record of what was written.
    let bar = match bar {
        Some(b) if b.is_hidden() => {
            tracing::info!("--progress always: stderr is not a terminal; one line per partition instead of a bar");
            None
        }
        b => b,
    };
    match (days.first(), days.last()) {
        (Some(f), Some(l)) if f == l => tracing::info!(day = %f, partitions = total, "collecting"),
        (Some(f), Some(l)) => {
            tracing::info!(from = %f, to = %l, days = days.len(), partitions = total, "collecting")
        }
        _ => return RunSummary::default(),
    }
    let started = Instant::now();
    let mut reporter = Reporter::default();
    let summary = collector
        .run_partitions(units, cancel, |o: &PartitionOutcome| {
            reporter.report(o, bar.as_ref());
        })
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    reporter.finish(&summary, collector.client().url());
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
    summary
}

/// Logs outcomes as they come. An error repeated for many partitions (Prometheus
/// down, a query wrong for every proxy) is printed once, then counted and summarised
/// at the end: 10,000 proxies must not mean 10,000 identical lines.
#[derive(Default)]
struct Reporter {
    /// metric + error → (metric, the error as first seen, further partitions with
    /// it, the first few of them as day/proxy)
    repeated: std::collections::HashMap<String, (String, String, usize, Vec<String>)>,
    order: Vec<String>,
    cancelled: usize,
    /// Partitions failed by an error that stops the run (said once, at the end).
    fatal: usize,
}

impl Reporter {
    fn report(&mut self, o: &PartitionOutcome, bar: Option<&ProgressBar>) {
        let mut line = || match o.status {
            Status::Written => match o.kept_note() {
                None => {
                    tracing::info!(day = %o.day, proxy = %o.proxy, rows = o.rows, path = %o.path.display(), "written")
                }
                Some(note) => {
                    tracing::warn!(day = %o.day, proxy = %o.proxy, rows = o.rows, path = %o.path.display(), "written; {note}")
                }
            },
            Status::Empty => {
                tracing::warn!(day = %o.day, proxy = %o.proxy, path = %o.path.display(), "Prometheus returned no data for any metric; wrote an empty partition")
            }
            Status::Kept => {
                let note = o.kept_note().unwrap_or_default();
                tracing::warn!(day = %o.day, proxy = %o.proxy, rows = o.rows, path = %o.path.display(), "kept; {note}")
            }
            Status::Cancelled => self.cancelled += 1,
            Status::Failed if o.failures.iter().any(|f| f.fatal) => self.fatal += 1,
            Status::Failed => {
                for f in &o.failures {
                    let key = format!("{}\u{0}{}", f.metric, without_positions(&f.error));
                    match self.repeated.get_mut(&key) {
                        Some((_, _, n, examples)) => {
                            *n += 1;
                            if examples.len() < 5 {
                                examples.push(format!("{}/{}", o.day, o.proxy));
                            }
                        }
                        None => {
                            tracing::error!(day = %o.day, proxy = %o.proxy, metric = %f.metric, error = %f.error, "failed; nothing written for this partition");
                            self.repeated.insert(
                                key.clone(),
                                (f.metric.clone(), f.error.clone(), 0, Vec::new()),
                            );
                            self.order.push(key);
                        }
                    }
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

    fn finish(&self, summary: &RunSummary, url: &str) {
        for key in &self.order {
            let (metric, e, more, examples) = &self.repeated[key];
            if *more > 0 {
                let etc = if *more > examples.len() { ", ..." } else { "" };
                tracing::error!(metric = %metric, error = %e, more, "the same failure for {more} more partition(s): {}{etc}", examples.join(", "));
            }
        }
        if let Some(reason) = &summary.aborted {
            if let Some(hint) = unresolved_host_hint(reason, url) {
                tracing::error!("{hint}");
            }
            tracing::error!(
                url,
                failed = self.fatal,
                not_attempted = self.cancelled,
                "stopped: Prometheus cannot be used ({reason}); {} partition(s) failed with it and {} not attempted; nothing written for them",
                self.fatal,
                self.cancelled
            );
        } else if self.cancelled > 0 {
            tracing::warn!(
                cancelled = self.cancelled,
                "stopped by a signal: {} partition(s) not started; nothing written for them",
                self.cancelled
            );
        }
    }
}

/// A hint for the first thing a new user meets: the sample config's `prometheus.url`
/// (`http://prometheus:9090`, a Kubernetes service name) does not resolve on a laptop.
/// `None` unless the failure is a host name that did not resolve.
fn unresolved_host_hint(reason: &str, url: &str) -> Option<String> {
    reason.contains("dns error").then(|| {
        format!(
            "hint: the host of prometheus.url ({url}) does not resolve: set `prometheus.url` in the config \
             to your Prometheus (config/config.yaml is a sample; `make demo` starts a local Prometheus \
             and collects with --config config/demo.yaml)"
        )
    })
}

/// An error with PromQL parse positions (`1:41:`) blanked: the same mistake in a
/// template sits at a different column for each proxy name.
fn without_positions(e: &str) -> String {
    let b = e.as_bytes();
    let mut out = String::with_capacity(e.len());
    let mut i = 0;
    while i < b.len() {
        let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let n = digits(i);
        if n > 0
            && b.get(i + n) == Some(&b':')
            && digits(i + n + 1) > 0
            && (i == 0 || !b[i - 1].is_ascii_digit())
        {
            out.push_str("L:C");
            i += n + 1 + digits(i + n + 1);
            continue;
        }
        let ch = e[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The collector's own metrics (Prometheus text format), kept for `--metrics-listen`
/// and written to `--metrics-file` after each run.
struct SelfMetrics {
    file: Option<PathBuf>,
    shard: Option<Shard>,
    last_success: Option<f64>,
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl SelfMetrics {
    fn new(file: Option<PathBuf>, shard: Option<Shard>) -> Self {
        // A one-shot run that fails must not erase when the last success was: carry
        // it over from the previous file.
        let last_success = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("promduck_last_success_timestamp_seconds ")
                        .and_then(|v| v.trim().parse().ok())
                })
            });
        SelfMetrics {
            file,
            shard,
            last_success,
            text: Default::default(),
        }
    }

    fn shared(&self) -> std::sync::Arc<std::sync::Mutex<String>> {
        self.text.clone()
    }

    /// Records a run; `false` when the metrics file could not be written.
    fn record(
        &mut self,
        s: &RunSummary,
        took: std::time::Duration,
        (requests, retries): (u64, u64),
    ) -> bool {
        let now = current_time().timestamp_millis() as f64 / 1000.0;
        if s.failed == 0 && s.cancelled == 0 && s.aborted.is_none() {
            self.last_success = Some(now);
        }
        let mut t = String::new();
        let mut metric = |name: &str, help: &str, kind: &str, samples: &[(&str, f64)]| {
            t.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in samples {
                t.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        metric(
            "promduck_last_run_timestamp_seconds",
            "When the last collection run ended.",
            "gauge",
            &[("", now)],
        );
        if let Some(ts) = self.last_success {
            metric(
                "promduck_last_success_timestamp_seconds",
                "When the last run with no failed or cancelled partition ended.",
                "gauge",
                &[("", ts)],
            );
        }
        metric(
            "promduck_last_run_duration_seconds",
            "How long the last run took.",
            "gauge",
            &[("", took.as_secs_f64())],
        );
        metric(
            "promduck_last_run_partitions",
            "Partitions of the last run by outcome.",
            "gauge",
            &[
                ("{status=\"written\"}", s.written as f64),
                ("{status=\"empty\"}", s.empty as f64),
                ("{status=\"kept\"}", s.kept as f64),
                ("{status=\"failed\"}", s.failed as f64),
                ("{status=\"cancelled\"}", s.cancelled as f64),
            ],
        );
        metric(
            "promduck_last_run_rows",
            "Rows written by the last run.",
            "gauge",
            &[("", s.rows as f64)],
        );
        metric(
            "promduck_last_run_aborted",
            "1 when the last run stopped because Prometheus could not be used.",
            "gauge",
            &[("", if s.aborted.is_some() { 1.0 } else { 0.0 })],
        );
        metric(
            "promduck_requests_total",
            "HTTP requests sent to Prometheus by this process (retries included).",
            "counter",
            &[("", requests as f64)],
        );
        metric(
            "promduck_retries_total",
            "Requests that were retries.",
            "counter",
            &[("", retries as f64)],
        );
        if let Some(sh) = self.shard {
            let labels = format!("{{shard=\"{}/{}\"}}", sh.index, sh.count);
            metric(
                "promduck_shard_info",
                "The shard this collector collects.",
                "gauge",
                &[(labels.as_str(), 1.0)],
            );
        }
        if let Ok(mut shared) = self.text.lock() {
            shared.clone_from(&t);
        }
        if let Some(path) = &self.file {
            if let Err(e) = write_atomically(path, &t) {
                tracing::error!(path = %path.display(), error = %e, "cannot write the metrics file");
                return false;
            }
        }
        true
    }
}

/// Writes `text` to `path` through a temporary file in the same folder and a rename,
/// so a reader (node_exporter) never sees half a file. The temporary name does not end
/// in `.prom`, which the textfile collector ignores.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A minimal HTTP/1.1 responder for `--metrics-listen`: every request gets the
/// current metrics (a scrape needs nothing more; no other route exists).
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    text: std::sync::Arc<std::sync::Mutex<String>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let text = text.clone();
        tokio::spawn(async move {
            // Read the request head (up to 8 KiB or the blank line); its content is not needed.
            let mut buf = vec![0u8; 8192];
            let mut got = 0;
            while got < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf[got..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        got += n;
                        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let body = text.lock().map(|t| t.clone()).unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// What `--check` prints: a line of text per finding, or with `--log-format json` one
/// JSON object per line (`check`, `status`, `message`), so that a cron job appending its
/// output to a JSON-lines log keeps it parseable.
struct CheckReport {
    json: bool,
}

impl CheckReport {
    fn line(&self, check: &str, status: &str, message: String) {
        if self.json {
            let v = serde_json::json!({"check": check, "status": status, "message": message});
            println!("{v}");
        } else {
            println!("{message}");
        }
    }
}

async fn check(
    collector: &Collector,
    day: Option<NaiveDate>,
    catch_up: u32,
    report: CheckReport,
) -> ExitCode {
    let cfg = collector.config();
    report.line(
        "config",
        "ok",
        format!(
            "config {}: ok ({} proxies, {} metrics, output {})",
            cfg.source.display(),
            cfg.api_proxies.len(),
            cfg.metrics.len(),
            cfg.storage.output_dir.display()
        ),
    );
    let storage = collector.storage();
    if let Err(e) = storage.check_writable() {
        report.line(
            "output",
            "failed",
            format!("output {}: FAILED: {e}", storage.url()),
        );
        return ExitCode::from(1);
    }
    let how = match storage.exists() {
        Ok(false) => "does not exist yet; can be created",
        _ => "writable",
    };
    report.line(
        "output",
        "ok",
        format!("output {}: ok ({how})", storage.url()),
    );
    // Holes the daemon will fill (within its catch-up window), listed for the operator.
    let last = last_complete_day(current_time(), cfg.timezone);
    let holes = gaps(
        collector,
        last.pred_opt().unwrap_or(last),
        catch_up.saturating_sub(1),
    );
    if holes.is_empty() {
        report.line(
            "gaps",
            "ok",
            format!("gaps: none in the {catch_up} days before {last}"),
        );
    } else {
        let n: usize = holes.iter().map(|h| h.1.len()).sum();
        report.line(
            "gaps",
            "warning",
            format!("gaps: {n} missing partitions in the {catch_up} days before {last}:"),
        );
        for (d, ps) in &holes {
            report.line("gaps", "warning", format!("  {d}: {}", ps.join(", ")));
        }
    }
    if let Err(e) = collector.client().ping().await {
        let url = collector.client().url();
        report.line(
            "prometheus",
            "failed",
            format!("prometheus {url}: FAILED: {e}"),
        );
        if let Some(hint) = unresolved_host_hint(&e.to_string(), url) {
            report.line("prometheus", "failed", hint);
        }
        return ExitCode::from(1);
    }
    report.line(
        "prometheus",
        "ok",
        format!("prometheus {}: ok", collector.client().url()),
    );
    let day = day.unwrap_or_else(|| last_complete_day(current_time(), cfg.timezone));
    let sample = check_sample(&cfg.api_proxies);
    if sample.len() < cfg.api_proxies.len() {
        report.line(
            "proxies",
            "note",
            format!(
                "proxies checked: {} of {}, spread over the list ({} … {})",
                sample.len(),
                cfg.api_proxies.len(),
                sample[0],
                sample[sample.len() - 1]
            ),
        );
    }
    let mut ok = true;
    // The same query a collection runs (instant or the step grid), and the same
    // checks on its answer (series that would collide once labels are dropped).
    let window = collector.plan().window(day);
    let hours = window.length_ms() as f64 / 3_600_000.0;
    report.line(
        "day",
        "note",
        format!(
            "day {day} ({}): {} .. {} ({hours} h){}",
            cfg.timezone,
            window.start.to_rfc3339(),
            window.end.to_rfc3339(),
            if window.length_ms() != 86_400_000 {
                "; ranges of exactly one day in instant queries span this day's length"
            } else {
                ""
            }
        ),
    );
    for m in &collector.plan().metrics {
        let mut series = 0usize;
        let mut without = Vec::new();
        let mut request = None;
        let mut failed = None;
        for proxy in &sample {
            match collector.query_metric(m, proxy, day).await {
                Ok((r, s)) => {
                    if s.is_empty() {
                        without.push(proxy.as_str());
                    }
                    series += s.len();
                    request.get_or_insert(r);
                }
                Err(e) => {
                    failed = Some(format!("proxy {proxy:?}: {e}"));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            report.line(
                "metric",
                "failed",
                format!("metric {}: FAILED: {e}", m.config.name),
            );
            ok = false;
            continue;
        }
        let Some(request) = request else { continue };
        let how = match request.eval {
            promduck_core::plan::Eval::Instant { .. } => "instant at the day's end".to_string(),
            promduck_core::plan::Eval::Range(g) => {
                format!("{} points every {} ms", g.points(), g.step_ms)
            }
        };
        if series == 0 {
            // Not "ok": nothing was checked but that the query runs.
            report.line(
                "metric",
                "warning",
                format!(
                    "metric {}: WARNING: no series for any of the {} proxies checked on {day} ({how}; query {}): \
                     a collection would write nothing for it (another day: --date)",
                    m.config.name,
                    sample.len(),
                    request.query
                ),
            );
            continue;
        }
        report.line(
            "metric",
            "ok",
            format!(
                "metric {}: ok ({series} series over {} proxies on {day}; {how}; query {})",
                m.config.name,
                sample.len(),
                request.query
            ),
        );
        if !without.is_empty() {
            report.line(
                "metric",
                "note",
                format!(
                    "metric {}: note: no series for {} of them: {}",
                    m.config.name,
                    without.len(),
                    without.join(", ")
                ),
            );
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The proxies `--check` queries: all of them up to [`CHECK_PROXIES`], else that many
/// spread evenly over the list (first and last included).
fn check_sample(proxies: &[String]) -> Vec<String> {
    if proxies.len() <= CHECK_PROXIES {
        return proxies.to_vec();
    }
    let last = proxies.len() - 1;
    let mut picked: Vec<usize> = (0..CHECK_PROXIES)
        .map(|i| i * last / (CHECK_PROXIES - 1))
        .collect();
    picked.dedup();
    picked.into_iter().map(|i| proxies[i].clone()).collect()
}

/// Proxies `--check` queries at most (each metric once per proxy).
const CHECK_PROXIES: usize = 20;

/// On SIGINT/SIGTERM/SIGHUP: logs `message` (what this mode does on stopping) and
/// cancels; a second signal exits at once (130).
fn spawn_signal_handler(cancel: Cancel, message: &'static str) {
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
        let hup = async {
            #[cfg(unix)]
            {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await
        };
        // SIGHUP (a closed terminal, `systemctl reload` without ExecReload) stops
        // cleanly like SIGTERM: no write is cut off, no temporary file left behind.
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
            _ = hup => {}
        }
        tracing::warn!("{message}");
        cancel.cancel();
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The failure of the sample config on a laptop, as the collector printed it.
    const UNRESOLVED: &str = "cannot reach Prometheus at http://prometheus:9090/: error sending request for url \
        (http://prometheus:9090/api/v1/query): client error (Connect): dns error: failed to lookup address \
        information: Name or service not known";

    #[test]
    fn an_unresolved_host_points_at_the_config_and_the_demo() {
        let hint = unresolved_host_hint(UNRESOLVED, "http://prometheus:9090/").unwrap();
        assert!(
            hint.contains("(http://prometheus:9090/) does not resolve"),
            "{hint}"
        );
        assert!(hint.contains("--config config/demo.yaml"), "{hint}");
        let refused = "cannot reach Prometheus at http://127.0.0.1:9/: error sending request for url \
            (http://127.0.0.1:9/api/v1/query): client error (Connect): tcp connect error: Connection refused";
        assert_eq!(unresolved_host_hint(refused, "http://127.0.0.1:9/"), None);
    }

    #[test]
    fn debug_is_promduck_s_own_unless_a_library_is_named() {
        assert_eq!(
            quiet_libraries("debug"),
            "debug,hyper=info,hyper_util=info,reqwest=info,h2=info,rustls=info,tower=info,tokio_util=info"
        );
        let named = quiet_libraries("trace,hyper_util=debug,reqwest[span]=trace");
        assert!(named.starts_with("trace,hyper_util=debug,reqwest[span]=trace,hyper=info,h2=info"));
        assert!(
            !named.contains("hyper_util=info") && !named.contains("reqwest=info"),
            "{named}"
        );
        // Every result is a filter tracing accepts.
        for f in ["debug", "info,promduck_core=trace", "warn,h2=trace"] {
            assert!(
                tracing_subscriber::EnvFilter::try_new(quiet_libraries(f)).is_ok(),
                "{f}"
            );
        }
    }
}
