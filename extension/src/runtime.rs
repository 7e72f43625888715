//! One tokio runtime for the extension's network calls, created on first use.
//! DuckDB calls table functions on its own threads; they `block_on` here.

use std::future::Future;
use std::sync::OnceLock;

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

pub fn block_on<F: Future>(f: F) -> Result<F::Output, String> {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(16)
            .thread_name("promduck-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))
    });
    match rt {
        Ok(rt) => Ok(rt.block_on(f)),
        Err(e) => Err(e.clone()),
    }
}
