//! One tokio runtime for the extension's network calls, created on first use.
//! DuckDB calls table functions on its own threads; they `block_on` here.

use std::future::Future;
use std::sync::OnceLock;

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(16)
            .thread_name("promduck-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))
    });
    rt.as_ref().map_err(|e| e.clone())
}

pub fn block_on<F: Future>(f: F) -> Result<F::Output, String> {
    Ok(runtime()?.block_on(f))
}

/// Runs `f` in the background on the runtime (for work that streams results back
/// to `func` calls, so DuckDB regains control between chunks).
pub fn spawn<F>(f: F) -> Result<tokio::task::JoinHandle<F::Output>, String>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(runtime()?.spawn(f))
}
