//! Objects fetched whole, in order, a bounded number ahead of their consumer (a
//! month's compaction reads its daily objects this way).

use super::*;

/// Objects fetched whole in a given order, up to [`FETCH_AHEAD`] ahead of the
/// consumer ([`PREFETCH_CONCURRENCY`] requests in flight); stopped when dropped.
pub(crate) struct OrderedFetch {
    pub(super) rx: tokio::sync::mpsc::Receiver<(usize, Fetch)>,
    pub(super) task: tokio::task::AbortHandle,
}

/// A fetched object: its bytes and the version they are (ETag), or why not.
pub(crate) type Fetch = std::result::Result<(Bytes, Option<String>), object_store::Error>;

/// Objects fetched and not yet taken by compaction, at most.
pub(super) const FETCH_AHEAD: usize = 64;

impl OrderedFetch {
    /// The next object, in order, with its position; `None` once all were given.
    pub(crate) fn next(&mut self) -> Option<(usize, Fetch)> {
        futures::executor::block_on(self.rx.recv())
    }
}

impl Drop for OrderedFetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ObjectStorage {
    /// Fetches `keys` whole, in their order, a bounded number ahead.
    pub(crate) fn fetch_in_order(&self, keys: Vec<ObjectPath>) -> OrderedFetch {
        let (tx, rx) = tokio::sync::mpsc::channel(FETCH_AHEAD);
        let store = self.store.clone();
        let task = runtime().spawn(async move {
            let mut fetches = futures::stream::iter(keys.into_iter().enumerate().map(|(i, k)| {
                let store = store.clone();
                async move {
                    let r: Fetch = async {
                        let got = store.get(&k).await?;
                        let e_tag = got.meta.e_tag.clone();
                        Ok((got.bytes().await?, e_tag))
                    }
                    .await;
                    (i, r)
                }
            }))
            .buffered(PREFETCH_CONCURRENCY);
            while let Some(item) = fetches.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        OrderedFetch {
            rx,
            task: task.abort_handle(),
        }
    }
}
