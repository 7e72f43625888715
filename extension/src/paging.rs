//! Handing a table function's rows to DuckDB a chunk at a time. A `func` call fills
//! one output chunk of at most [`CHUNK_ROWS`] rows and is called again until it
//! returns none; DuckDB may call it from several threads at once.
//!
//! Two shapes cover the extension's table functions: [`Pages`], rows produced once
//! on the first call (a live PromQL result, a compaction's outcomes) then handed out
//! in order; and [`Cursor`], rows that already exist (`prom_partitions`' listing),
//! whose next range each call takes. Both hand out every row exactly once, in
//! order, in ranges of at most [`CHUNK_ROWS`], and an empty range at the end.

use crate::params::{err, BoxError};
use duckdb::core::DataChunkHandle;
use std::ops::Range;
use std::sync::Mutex;

/// DuckDB's vector size: the most rows one output chunk holds.
pub use crate::scan::CHUNK_ROWS;

/// The page after the first `offset` of `len` rows: at most [`CHUNK_ROWS`] rows,
/// empty once every row was handed out.
pub fn page(offset: usize, len: usize) -> Range<usize> {
    let start = offset.min(len);
    start..(start + CHUNK_ROWS).min(len)
}

/// Rows a table function pages through.
pub trait PageRows {
    fn len(&self) -> usize;
}

impl<T> PageRows for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Rows produced on the first call, then handed out a page per call.
pub struct Pages<R> {
    /// The rows and how many were handed out; `None` before the first call (or after
    /// producing them failed).
    state: Mutex<Option<(R, usize)>>,
}

impl<R> Default for Pages<R> {
    fn default() -> Self {
        Pages {
            state: Mutex::new(None),
        }
    }
}

impl<R: PageRows> Pages<R> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Produces the rows on the first call (`produce` runs at most once per
    /// successful production; its error is returned), then calls `f` with them and the
    /// next page's range: empty once every row was handed out.
    pub fn next<T>(
        &self,
        produce: impl FnOnce() -> Result<R, BoxError>,
        f: impl FnOnce(&R, Range<usize>) -> T,
    ) -> Result<T, BoxError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| err("internal lock poisoned"))?;
        if state.is_none() {
            *state = Some((produce()?, 0));
        }
        let (rows, offset) = state
            .as_mut()
            .ok_or_else(|| err("internal error: no result state"))?;
        let r = page(*offset, rows.len());
        *offset = r.end;
        Ok(f(rows, r))
    }

    /// [`next`](Self::next) into an output chunk: `write` fills the page's rows
    /// (only when there are any) and the chunk's length is set to the page's.
    pub fn emit(
        &self,
        out: &mut DataChunkHandle,
        produce: impl FnOnce() -> Result<R, BoxError>,
        write: impl FnOnce(&R, Range<usize>, &mut DataChunkHandle) -> Result<(), BoxError>,
    ) -> Result<(), BoxError> {
        self.next(produce, |rows, r| {
            let n = r.len();
            if n > 0 {
                write(rows, r, out)?;
            }
            out.set_len(n);
            Ok(())
        })?
    }
}

/// The next page of rows that already exist (`len` of them, known to the caller).
#[derive(Default)]
pub struct Cursor {
    offset: Mutex<usize>,
}

impl Cursor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next page of `len` rows: disjoint from every other call's.
    pub fn take(&self, len: usize) -> Result<Range<usize>, BoxError> {
        let mut offset = self
            .offset
            .lock()
            .map_err(|_| err("internal lock poisoned"))?;
        let r = page(*offset, len);
        *offset = r.end;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn pages_are_whole_chunks_then_the_rest_then_empty() {
        assert_eq!(page(0, 0), 0..0);
        assert_eq!(page(0, 1), 0..1);
        assert_eq!(page(0, 2048), 0..2048);
        assert_eq!(page(2048, 2048), 2048..2048);
        assert_eq!(page(0, 2049), 0..2048);
        assert_eq!(page(2048, 2049), 2048..2049);
        assert_eq!(page(4096, 5000), 4096..5000);
        // An offset past the end (rows that shrank) is an empty page, not a panic.
        assert_eq!(page(7000, 5000), 5000..5000);
    }

    #[test]
    fn rows_are_produced_once_and_handed_out_in_order() {
        for len in [0usize, 1, 2047, 2048, 2049, 6145] {
            let pages: Pages<Vec<usize>> = Pages::new();
            let produced = AtomicUsize::new(0);
            let mut seen: Vec<usize> = Vec::new();
            let mut sizes = Vec::new();
            loop {
                let (n, rows) = pages
                    .next(
                        || {
                            produced.fetch_add(1, Ordering::SeqCst);
                            Ok((0..len).collect())
                        },
                        |rows, r| (r.len(), rows[r].to_vec()),
                    )
                    .unwrap();
                sizes.push(n);
                seen.extend(rows);
                if n == 0 {
                    break;
                }
            }
            assert_eq!(produced.load(Ordering::SeqCst), 1, "{len}");
            assert_eq!(seen, (0..len).collect::<Vec<_>>(), "{len}");
            let mut want = vec![CHUNK_ROWS; len / CHUNK_ROWS];
            if len % CHUNK_ROWS != 0 {
                want.push(len % CHUNK_ROWS);
            }
            want.push(0);
            assert_eq!(sizes, want, "{len}");
            // After the end, every further call is empty and produces nothing.
            let n = pages.next(|| Ok(vec![9]), |_, r| r.len()).unwrap();
            assert_eq!((n, produced.load(Ordering::SeqCst)), (0, 1));
        }
    }

    #[test]
    fn a_failed_production_is_the_calls_error() {
        let pages: Pages<Vec<u8>> = Pages::new();
        let e = pages
            .next(|| Err(err("prometheus is down")), |_, r| r.len())
            .unwrap_err();
        assert_eq!(e.to_string(), "prometheus is down");
        // Nothing was kept: a later call produces again.
        let n = pages.next(|| Ok(vec![1, 2, 3]), |_, r| r.len()).unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn threads_sharing_a_cursor_take_every_row_once() {
        let len = 100 * CHUNK_ROWS + 17;
        let cursor = Arc::new(Cursor::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = cursor.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let r = c.take(len).unwrap();
                        if r.is_empty() {
                            return mine;
                        }
                        assert!(r.len() <= CHUNK_ROWS);
                        mine.push(r);
                    }
                })
            })
            .collect();
        let mut all: Vec<Range<usize>> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_by_key(|r| r.start);
        assert_eq!(all.len(), 101);
        // Contiguous, disjoint and complete.
        let mut next = 0;
        for r in &all {
            assert_eq!(r.start, next);
            next = r.end;
        }
        assert_eq!(next, len);
        assert_eq!(all[100], 100 * CHUNK_ROWS..len);
    }
}
