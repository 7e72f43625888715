//! The runtime object-store requests run on, owned per process.
//!
//! Fork safety: after `fork()` (Python multiprocessing's default on Linux, gunicorn
//! `--preload`) the child has the parent's memory but none of its threads, so the
//! parent's runtime would accept requests that no worker ever runs and every call
//! would hang. A process whose PID differs from the runtime's creator builds its
//! own; the inherited one is leaked, not dropped (dropping it would wait for
//! threads that do not exist in the child). The extension's runtime does the same.
//!
//! A runtime of its own rather than the caller's: the blocking [`Storage`] calls
//! wait on it, and a caller's worker thread waiting on its own runtime could wait
//! for itself.
//!
//! [`Storage`]: crate::storage::Storage

use std::future::Future;
use std::sync::{Mutex, OnceLock};

/// Run at the start of each of the object-store runtime's threads, if set before the
/// runtime starts: the DuckDB extension blocks SIGPIPE there (a host such as the
/// DuckDB CLI keeps its default action, which would kill it on a write to a closed
/// connection).
pub(super) static THREAD_START: OnceLock<fn()> = OnceLock::new();

/// Sets [`THREAD_START`] (once; later calls are ignored).
pub fn set_thread_start_hook(f: fn()) {
    let _ = THREAD_START.set(f);
}

/// The runtime and the process that built it.
pub(super) struct Owned {
    pub(super) pid: u32,
    pub(super) runtime: &'static tokio::runtime::Runtime,
}

pub(super) static RUNTIME: Mutex<Option<Owned>> = Mutex::new(None);

/// This process's object-store runtime: two threads of its own, so that the
/// blocking [`Storage`](crate::storage::Storage) calls work from any thread
/// (DuckDB's, the collector's blocking pool, even an async task) without nesting
/// runtimes.
pub(super) fn runtime() -> &'static tokio::runtime::Runtime {
    let pid = std::process::id();
    // A poisoned lock only means a panic elsewhere while holding it; the slot is
    // still consistent (it is replaced whole).
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(owned) = slot.as_ref() {
        if owned.pid == pid {
            return owned.runtime;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("promduck-objstore")
        .on_thread_start(|| {
            if let Some(f) = THREAD_START.get() {
                f()
            }
        })
        .enable_all()
        .build()
        .expect("the object-store runtime starts (threads and an I/O driver)");
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(rt));
    // The previous owner (if any) was the parent process: its reference is dropped.
    *slot = Some(Owned { pid, runtime });
    runtime
}

/// Runs `f` on the object-store runtime and waits for it.
pub(super) fn run<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match futures::executor::block_on(runtime().spawn(f)) {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("object-store task cancelled: {e}"),
    }
}
