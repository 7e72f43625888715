//! `prom_compact([config := 'config.yaml',] [month := 'YYYY-MM'] [, remove_daily_after := '30s'] [, replace := false])`:
//! compaction from SQL through the same code as `promduck-collector --compact`. One
//! row per month: `month, status, path, daily_files, removed, partitions, rows, bytes,
//! row_groups, seconds, error`. Without `month :=`, every closed month (in the
//! configured timezone) that still has daily files. The config's `outputDir` may be a
//! folder or an `s3://` bucket prefix (see `promduck_core::compact`). The work happens
//! in the first `func` call, never in `bind` (which DESCRIBE and some clients call alone).

use crate::paging::Pages;
use crate::params::{err, named, named_string, BoxError};
use crate::vectors::{varchar, write_strings, write_values};
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use promduck_core::cancel::Cancel;
use promduck_core::compact::Compact;
use promduck_core::compact::{
    check_closed, current_month, parse_month, CompactOptions, MonthOutcome,
};
use promduck_core::config::Config;

pub struct CompactBind {
    config: Config,
    /// The sandbox's file-system handle (confined with external access off).
    fs: promduck_core::fs::Fs,
    months: Option<Vec<chrono::NaiveDate>>,
    opts: CompactOptions,
}

pub struct CompactInit {
    /// The months' outcomes: compacted on the first call, then returned a chunk at a time.
    pages: Pages<Vec<MonthOutcome>>,
}

pub struct PromCompact;

impl VTab for PromCompact {
    type BindData = CompactBind;
    type InitData = CompactInit;

    fn bind(bind: &BindInfo) -> Result<CompactBind, BoxError> {
        bind.add_result_column("month", varchar());
        bind.add_result_column("status", varchar());
        bind.add_result_column("path", varchar());
        for c in [
            "daily_files",
            "removed",
            "partitions",
            "rows",
            "bytes",
            "row_groups",
        ] {
            bind.add_result_column(c, LogicalTypeHandle::from(LogicalTypeId::Bigint));
        }
        bind.add_result_column("seconds", LogicalTypeHandle::from(LogicalTypeId::Double));
        bind.add_result_column("error", varchar());
        // The host's sandbox first: the config is read, outputDir written.
        let policy = crate::sandbox::policy(bind)?;
        let config = crate::config_arg::load(bind, &policy, "prom_compact")?;
        let months = match named_string(bind, "month") {
            Some(m) => {
                crate::params::check_not_macro_parameter(&m, "month")?;
                let first = parse_month(&m).map_err(|e| err(e.to_string()))?;
                check_closed(first, crate::params::now()?, config.timezone)
                    .map_err(|e| err(e.to_string()))?;
                Some(vec![first])
            }
            None => None,
        };
        let mut opts = CompactOptions::from_config(&config);
        if let Some(v) = named_string(bind, "remove_daily_after") {
            opts.remove_daily_after = promduck_core::duration::parse_go_duration(&v)
                .map_err(|e| err(format!("remove_daily_after: {e}")))?;
        }
        if let Some(v) = named(bind, "replace") {
            opts.replace_partitions = match v.render().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                other => return Err(err(format!("replace must be true or false, got {other:?}"))),
            };
        }
        bind.set_cardinality(months.as_ref().map_or(12, |m| m.len()) as u64, false);
        Ok(CompactBind {
            fs: policy.fs(),
            config,
            months,
            opts,
        })
    }

    fn init(_: &InitInfo) -> Result<CompactInit, BoxError> {
        Ok(CompactInit {
            pages: Pages::new(),
        })
    }

    fn func(func: &TableFunctionInfo<Self>, out: &mut DataChunkHandle) -> Result<(), BoxError> {
        let bind = func.get_bind_data();
        func.get_init_data().pages.emit(
            out,
            || compact(bind),
            |o, r, out| write_outcomes(&o[r], out),
        )
    }

    fn named_parameters() -> Option<Vec<(String, LogicalTypeHandle)>> {
        Some(vec![
            ("config".into(), varchar()),
            ("month".into(), varchar()),
            ("remove_daily_after".into(), varchar()),
            (
                "replace".into(),
                LogicalTypeHandle::from(LogicalTypeId::Boolean),
            ),
        ])
    }
}

/// Compacts the months of a call (the first `func` call does it, never `bind`).
fn compact(bind: &CompactBind) -> Result<Vec<MonthOutcome>, BoxError> {
    // The archive the config writes to: a folder or an s3:// bucket prefix.
    let archive = promduck_core::storage::for_config_with(&bind.config.storage, &bind.fs)
        .map_err(|e| err(format!("prom_compact: {e}")))?;
    let months = match &bind.months {
        Some(m) => m.clone(),
        None => archive
            .months_with_daily_files(current_month(crate::params::now()?, bind.config.timezone))
            .map_err(|e| err(crate::sandbox::core_error("prom_compact", "read", &e)))?,
    };
    Ok(archive.compact(&months, &bind.config.storage, &bind.opts, &Cancel::new()))
}

/// Outcomes into the output chunk, one row each.
fn write_outcomes(outcomes: &[MonthOutcome], out: &mut DataChunkHandle) -> Result<(), BoxError> {
    let names: Vec<String> = outcomes.iter().map(|o| o.month_name()).collect();
    write_strings(out, 0, names.iter().map(|s| Some(s.as_str())))?;
    write_strings(out, 1, outcomes.iter().map(|o| Some(o.status.as_str())))?;
    let paths: Vec<String> = outcomes
        .iter()
        .map(|o| o.path.display().to_string())
        .collect();
    write_strings(out, 2, paths.iter().map(|s| Some(s.as_str())))?;
    write_values(out, 3, outcomes.iter().map(|o| Some(o.daily_files as i64)));
    write_values(out, 4, outcomes.iter().map(|o| Some(o.removed as i64)));
    write_values(out, 5, outcomes.iter().map(|o| Some(o.partitions as i64)));
    write_values(out, 6, outcomes.iter().map(|o| Some(o.rows as i64)));
    write_values(out, 7, outcomes.iter().map(|o| Some(o.bytes as i64)));
    write_values(out, 8, outcomes.iter().map(|o| Some(o.row_groups as i64)));
    write_values(out, 9, outcomes.iter().map(|o| Some(o.seconds)));
    write_strings(out, 10, outcomes.iter().map(|o| o.error.as_deref()))?;
    Ok(())
}
