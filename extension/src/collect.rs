//! `prom_collect([config := 'config.yaml',] date | start_date/end_date [, replace])`:
//! a collection run from SQL through the same code as the collector binary. The run
//! starts on the first `func` call, never in `bind` (which DESCRIBE and some clients
//! call without executing).
//!
//! Outcomes are streamed: each `func` call returns the partitions finished so far,
//! in the order they finish. DuckDB checks for an interrupt (Ctrl-C,
//! `con.interrupt()`) between chunks and then drops the init data, which cancels
//! the run: no new partition starts and requests in flight are abandoned, while a
//! partition already being written completes atomically.

use crate::paging::CHUNK_ROWS;
use crate::params::{date_value, err, named, BoxError};
use crate::runtime::spawn;
use crate::vectors::{varchar, write_strings, write_values};
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use promduck_core::cancel::Cancel;
use promduck_core::collect::{Collector, PartitionOutcome};
use promduck_core::config::Config;
use promduck_core::plan::{days_between, last_complete_day};
use promduck_core::prometheus::{ClientOptions, HopGuard};
use std::sync::mpsc::{channel, Receiver, RecvError};
use std::sync::Mutex;

pub struct CollectBind {
    config: Config,
    /// The sandbox's file-system handle (confined with external access off).
    fs: promduck_core::fs::Fs,
    days: Vec<chrono::NaiveDate>,
    replace: bool,
    /// The sandbox's check of every redirect hop of the Prometheus client.
    hop_guard: HopGuard,
}

/// A started run: its outcomes arrive on `rx`; the sender drops when it ends.
struct Running {
    rx: Receiver<PartitionOutcome>,
    cancel: Cancel,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct CollectInit {
    state: Mutex<Option<Running>>,
}

impl Drop for CollectInit {
    fn drop(&mut self) {
        // The query ended early (interrupt, LIMIT, error): stop the run.
        if let Ok(state) = self.state.get_mut() {
            if let Some(r) = state.as_ref() {
                r.cancel.cancel();
            }
        }
    }
}

pub struct PromCollect;

impl VTab for PromCollect {
    type BindData = CollectBind;
    type InitData = CollectInit;

    fn bind(bind: &BindInfo) -> Result<CollectBind, BoxError> {
        bind.add_result_column("date", LogicalTypeHandle::from(LogicalTypeId::Date));
        bind.add_result_column("api_proxy", varchar());
        bind.add_result_column("rows", LogicalTypeHandle::from(LogicalTypeId::Bigint));
        bind.add_result_column("path", varchar());
        bind.add_result_column("status", varchar());
        bind.add_result_column("error", varchar());
        // The host's sandbox first, before any file is looked at or a connection opened.
        let policy = crate::sandbox::policy(bind)?;
        let config = crate::config_arg::load(bind, &policy, "prom_collect")?;
        policy
            .check_url("prom_collect", config.prometheus.url.url.as_str())
            .map_err(err)?;
        let tls = &config.prometheus.tls;
        for f in [&tls.ca_file, &tls.cert_file, &tls.key_file]
            .into_iter()
            .flatten()
        {
            policy.check_path("prom_collect", "read", f).map_err(err)?;
        }
        let now = crate::params::now()?;
        let date = named(bind, "date")
            .map(|v| date_value(&v, "date"))
            .transpose()?;
        let start = named(bind, "start_date")
            .map(|v| date_value(&v, "start_date"))
            .transpose()?;
        let end = named(bind, "end_date")
            .map(|v| date_value(&v, "end_date"))
            .transpose()?;
        let (from, to) = match (date, start, end) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(err("use either date or start_date/end_date, not both"))
            }
            (Some(d), None, None) => (d, d),
            (None, Some(s), Some(e)) => (s, e),
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(err("start_date and end_date go together"))
            }
            (None, None, None) => {
                let d = last_complete_day(now, config.timezone);
                (d, d)
            }
        };
        let days = days_between(from, to, now, config.timezone).map_err(|e| err(e.to_string()))?;
        let replace = match named(bind, "replace") {
            None => false,
            Some(v) => match v.render().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                other => return Err(err(format!("replace must be true or false, got {other:?}"))),
            },
        };
        bind.set_cardinality((days.len() * config.api_proxies.len()) as u64, true);
        Ok(CollectBind {
            fs: policy.fs(),
            config,
            days,
            replace,
            hop_guard: policy.hop_guard("prom_collect"),
        })
    }

    fn init(_: &InitInfo) -> Result<CollectInit, BoxError> {
        Ok(CollectInit {
            state: Mutex::new(None),
        })
    }

    fn func(func: &TableFunctionInfo<Self>, out: &mut DataChunkHandle) -> Result<(), BoxError> {
        let bind = func.get_bind_data();
        let init = func.get_init_data();
        let mut state = init
            .state
            .lock()
            .map_err(|_| err("internal lock poisoned"))?;
        if state.is_none() {
            let collector = Collector::new_with_fs(bind.config.clone(), &bind.fs)
                .map_err(|e| err(e.to_string()))?
                .with_replace(bind.replace);
            // Every redirect hop of its Prometheus requests passes the sandbox.
            let options = ClientOptions {
                hop_guard: Some(bind.hop_guard.clone()),
            };
            let collector = collector
                .with_client_options(options)
                .map_err(|e| err(e.to_string()))?;
            let (tx, rx) = channel();
            let cancel = Cancel::new();
            let (days, run_cancel) = (bind.days.clone(), cancel.clone());
            let task = spawn(async move {
                collector
                    .run(&days, &run_cancel, |o| {
                        let _ = tx.send(o.clone());
                    })
                    .await;
            })
            .map_err(err)?;
            *state = Some(Running {
                rx,
                cancel,
                task: Some(task),
            });
        }
        let running = state
            .as_mut()
            .ok_or_else(|| err("internal error: no result state"))?;
        // Wait for the next finished partition, then take whatever else is ready.
        let mut rows: Vec<PartitionOutcome> = match running.rx.recv() {
            Ok(o) => vec![o],
            Err(RecvError) => {
                // The run ended; a run that died (a bug) must not look complete.
                if let Some(task) = running.task.take() {
                    crate::runtime::block_on(task).map_err(err)?.map_err(|e| {
                        err(format!(
                            "prom_collect: the collection stopped unexpectedly: {e}"
                        ))
                    })?;
                }
                Vec::new()
            }
        };
        while rows.len() < CHUNK_ROWS {
            match running.rx.try_recv() {
                Ok(o) => rows.push(o),
                Err(_) => break,
            }
        }
        let n = rows.len();
        let slice = &rows[..];
        write_values(
            out,
            0,
            slice
                .iter()
                .map(|o| Some(promduck_core::schema::date32(o.day))),
        );
        write_strings(out, 1, slice.iter().map(|o| Some(o.proxy.as_str())))?;
        write_values(out, 2, slice.iter().map(|o| Some(o.rows as i64)));
        let paths: Vec<String> = slice.iter().map(|o| o.path.display().to_string()).collect();
        write_strings(out, 3, paths.iter().map(|p| Some(p.as_str())))?;
        write_strings(out, 4, slice.iter().map(|o| Some(o.status.as_str())))?;
        let errors: Vec<Option<String>> = slice.iter().map(|o| o.error_message()).collect();
        write_strings(out, 5, errors.iter().map(|e| e.as_deref()))?;
        out.set_len(n);
        Ok(())
    }

    fn named_parameters() -> Option<Vec<(String, LogicalTypeHandle)>> {
        let any = || LogicalTypeHandle::from(LogicalTypeId::Any);
        Some(vec![
            ("config".into(), varchar()),
            ("date".into(), any()),
            ("start_date".into(), any()),
            ("end_date".into(), any()),
            (
                "replace".into(),
                LogicalTypeHandle::from(LogicalTypeId::Boolean),
            ),
        ])
    }
}
