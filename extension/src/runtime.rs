//! One tokio runtime for the extension's network calls, created on first use.
//! DuckDB calls table functions on its own threads; they `block_on` here.
//!
//! Fork safety: after `fork()` (Python multiprocessing's default on Linux, gunicorn
//! `--preload`, Celery prefork) the child has the parent's memory but none of its
//! threads, so the parent's runtime would accept work that no worker ever runs and
//! every call would hang. The runtime is therefore owned per process: a process
//! whose PID differs from the runtime's creator builds its own. The inherited one
//! is leaked, not dropped: dropping it would wait for threads that do not exist in
//! the child.

use std::future::Future;
use std::sync::Mutex;

struct Owned {
    pid: u32,
    runtime: &'static tokio::runtime::Runtime,
}

static RUNTIME: Mutex<Option<Owned>> = Mutex::new(None);

fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    let pid = std::process::id();
    // A poisoned lock only means a panic elsewhere while holding it; the slot is
    // still consistent (it is replaced whole).
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(owned) = slot.as_ref() {
        if owned.pid == pid {
            return Ok(owned.runtime);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("promduck-io")
        .on_thread_start(crate::sigpipe::block_in_this_thread)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(rt));
    // The previous owner (if any) was the parent process: its reference is simply dropped.
    *slot = Some(Owned { pid, runtime });
    Ok(runtime)
}

pub fn block_on<F: Future>(f: F) -> Result<F::Output, String> {
    let rt = runtime()?;
    // The future may write to a socket on this (DuckDB's) thread: see sigpipe.rs.
    let _quiet = crate::sigpipe::Blocked::new();
    Ok(rt.block_on(f))
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
