//! Listing: day folders, month files and partitions by prefix, a bounded number of
//! listings in flight; known days and proxies are looked up, not listed.

use super::*;

impl ObjectStorage {
    /// Lists `rel/` (one level): sub-prefixes and objects with their sizes.
    pub(super) async fn list(
        store: Arc<dyn ObjectStore>,
        key: ObjectPath,
    ) -> std::result::Result<(Vec<String>, Vec<(String, u64)>), object_store::Error> {
        let r = store.list_with_delimiter(Some(&key)).await?;
        let dirs = r
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        let files = r
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(|n| (n.to_string(), o.size)))
            .collect();
        Ok((dirs, files))
    }

    /// Whether each month of `months` has its month file (its size if so). One GET
    /// of the last [`MONTH_PROBE_BYTES`] each: a month file that arrives whole is kept
    /// for `open`; of a larger one the size, the version and those last bytes (its
    /// footer, read from them without another request).
    pub(super) fn month_files(&self, months: &[NaiveDate]) -> Result<Vec<Option<u64>>> {
        let keys: Vec<ObjectPath> = months
            .iter()
            .map(|m| self.key(&Self::month_rel(*m)))
            .collect();
        let store = self.store.clone();
        let probes = run(async move {
            futures::stream::iter(keys.into_iter().map(|k| {
                let store = store.clone();
                async move {
                    let r = probe(&store, &k).await;
                    (k, r)
                }
            }))
            .buffered(LIST_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
        });
        probes
            .into_iter()
            .map(|(k, r)| match r {
                Ok((meta, tail)) => {
                    if let Ok(mut pins) = self.pins.lock() {
                        pins.insert(k.to_string(), version_of(&meta));
                    }
                    match tail {
                        Some(bytes) if bytes.len() as u64 == meta.size => {
                            if let Ok(mut probed) = self.probed.lock() {
                                probed.insert(k.to_string(), bytes);
                            }
                        }
                        // Read by range: its footer's share of those bytes is kept
                        // (copied, so the rest of the MiB is freed now).
                        Some(bytes) if meta.size > WHOLE_OBJECT_MAX => {
                            let keep = bytes.len().min(FOOTER_PREFETCH);
                            let tail = Bytes::copy_from_slice(&bytes[bytes.len() - keep..]);
                            if let Ok(mut tails) = self.tails.lock() {
                                tails.insert(k.to_string(), tail);
                            }
                        }
                        _ => {}
                    }
                    Ok(Some(meta.size))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("look for the month file", &k, e)),
            })
            .collect()
    }

    /// The daily partitions of `days` inside `sel`: few known names are looked up
    /// by name (no listing; a missing one reads as absent), else each day is listed.
    pub(super) fn daily_files(
        &self,
        days: &[NaiveDate],
        sel: &Selection,
    ) -> Result<Vec<PartitionFile>> {
        match &sel.proxies {
            Some(proxies) if days.len() * proxies.len() <= DIRECT_LOOKUPS_MAX => {
                let mut out = Vec::with_capacity(days.len() * proxies.len());
                for d in days {
                    for p in proxies {
                        let mut f = self.partition_file(
                            *d,
                            p,
                            &Self::daily_rel(*d, p),
                            None,
                            Layout::Daily,
                        );
                        if let Some(o) = &mut f.object {
                            o.size = None;
                        }
                        out.push(f);
                    }
                }
                Ok(out)
            }
            _ => self.list_daily(days, |p| sel.proxy_ok(p)),
        }
    }

    /// The daily partitions in the folders of `days` whose proxy `proxy_ok` keeps: one
    /// listing per day, [`LIST_CONCURRENCY`] at a time. Objects whose name is not an
    /// encoded proxy name (`.parquet`) are not partitions and are left out.
    pub(super) fn list_daily(
        &self,
        days: &[NaiveDate],
        proxy_ok: impl Fn(&str) -> bool,
    ) -> Result<Vec<PartitionFile>> {
        let store = self.store.clone();
        let keys: Vec<(NaiveDate, ObjectPath)> = days
            .iter()
            .map(|d| (*d, self.key(&day_dir_name(*d))))
            .collect();
        let listed = run(async move {
            futures::stream::iter(keys.into_iter().map(|(d, k)| {
                let store = store.clone();
                async move {
                    let r = Self::list(store, k.clone()).await;
                    (d, k, r)
                }
            }))
            .buffered(LIST_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
        });
        let mut out = Vec::new();
        for (day, key, r) in listed {
            let (_, files) = r.map_err(|e| self.err("list", &key, e))?;
            for (name, size) in files {
                let Some(stem) = name.strip_suffix(&format!(".{PARQUET_EXT}")) else {
                    continue;
                };
                // Written by promduck: the stem is the encoded name.
                let Some(proxy) = crate::layout::decode_proxy(stem) else {
                    continue;
                };
                if stem.is_empty() || !proxy_ok(&proxy) {
                    continue;
                }
                out.push(self.partition_file(
                    day,
                    &proxy,
                    &format!("{}/{name}", day_dir_name(day)),
                    Some(size),
                    Layout::Daily,
                ));
            }
        }
        Ok(out)
    }

    pub(super) fn partition_file(
        &self,
        day: NaiveDate,
        proxy: &str,
        rel: &str,
        size: Option<u64>,
        layout: Layout,
    ) -> PartitionFile {
        let key = self.key(rel);
        PartitionFile {
            day,
            proxy: proxy.to_string(),
            path: self.display(&key),
            layout,
            filter: None,
            object: Some(crate::reader::ObjectFile {
                key: key.to_string(),
                size,
            }),
        }
    }
}
