//! The compaction lock of a bucket: one object created only if absent, a heartbeat
//! while held, taken over when its holder is gone (a dead process of this machine)
//! or it has expired.

use super::proc::{process_start, read_trimmed, unix_now};
use super::*;

/// Who holds a compaction lock, as written in the lock object.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub(super) struct LockBody {
    pub(super) host: String,
    pub(super) boot_id: String,
    pub(super) pid: u32,
    /// The process's start time (clock ticks since boot): a reused pid is another process.
    pub(super) start: u64,
    /// Unique per acquisition.
    pub(super) token: String,
    /// Seconds since the Unix epoch, by the holder's clock.
    pub(super) acquired: u64,
    pub(super) expires: u64,
}

/// How long a lock lives without a heartbeat: a holder refreshes it every third
/// of this; another host takes it over once it has expired
/// (`PROMDUCK_COMPACT_LOCK_TTL`, seconds, overrides it).
pub const LOCK_TTL: Duration = Duration::from_secs(120);

pub(super) fn lock_ttl() -> Duration {
    std::env::var("PROMDUCK_COMPACT_LOCK_TTL")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s >= 1.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(LOCK_TTL)
}

impl LockBody {
    pub(super) fn mine(token: &str, ttl: Duration) -> LockBody {
        let pid = std::process::id();
        let now = unix_now();
        LockBody {
            host: read_trimmed("/proc/sys/kernel/hostname"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid,
            start: process_start(pid).map(|s| s.0).unwrap_or(0),
            token: token.to_string(),
            acquired: now,
            expires: now + ttl.as_secs().max(1),
        }
    }

    /// Whether the lock can be taken over: expired, or held by a process of this
    /// machine that is gone.
    pub(super) fn stale(&self) -> bool {
        if unix_now() > self.expires {
            return true;
        }
        let here = LockBody::mine("", Duration::ZERO);
        if self.host.is_empty() || self.boot_id.is_empty() {
            return false;
        }
        if self.host != here.host || self.boot_id != here.boot_id {
            return false;
        }
        match process_start(self.pid) {
            Some((start, alive)) => !alive || start != self.start,
            None => true,
        }
    }

    pub(super) fn describe(&self) -> String {
        format!("pid {} on {}", self.pid, self.host)
    }
}

/// The compaction lock of an archive in a bucket: the object
/// `<prefix>/.promduck-compact.lock`, created with a conditional PUT
/// (`If-None-Match: *`, so two compactors never both create it), refreshed by a
/// heartbeat with `If-Match` on its ETag, and deleted (if still ours) when
/// dropped. A stale one (expired, or its holder on this machine gone) is taken
/// over with `If-Match` on the stale object's ETag. A holder whose refresh finds
/// the lock taken over marks it lost: compaction then stops before making
/// anything visible or deleting anything.
pub(crate) struct CompactionLock {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) signer: Option<Signer>,
    pub(super) secrets: Vec<String>,
    pub(super) key: ObjectPath,
    pub(super) state: Arc<LockState>,
    pub(super) heartbeat: Option<std::thread::JoinHandle<()>>,
}

pub(super) struct LockState {
    pub(super) e_tag: std::sync::Mutex<Option<String>>,
    pub(super) lost: std::sync::atomic::AtomicBool,
    pub(super) stop: std::sync::atomic::AtomicBool,
}

impl CompactionLock {
    /// Whether another compactor took the lock over (this one must stop).
    pub(crate) fn lost(&self) -> bool {
        self.state.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CompactionLock {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if self.lost() {
            return;
        }
        let e_tag = self.state.e_tag.lock().ok().and_then(|e| e.clone());
        let (store, key, signer) = (self.store.clone(), self.key.clone(), self.signer.clone());
        let r = run(async move {
            // Deleted only if still ours (its ETag): with `If-Match` where the
            // store takes it, else after a HEAD (a window of one request, harmless:
            // the lock was alive until now).
            if let (Some(signer), Some(tag)) = (signer, e_tag.clone()) {
                return match signer
                    .send("DELETE", key.as_ref(), &[], &[("if-match", tag)])
                    .await
                {
                    Ok((200 | 204 | 404 | 412, _)) => Ok(()),
                    Ok((status, body)) => {
                        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
                    }
                    Err(e) => Err(e),
                };
            }
            match store.head(&key).await {
                Ok(m) if m.e_tag == e_tag => store.delete(&key).await.map_err(|e| e.to_string()),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        });
        if let Err(e) = r {
            tracing::warn!(key = %self.key, error = %scrub(&e, &self.secrets), "cannot remove the compaction lock; it expires by itself");
        }
    }
}

impl ObjectStorage {
    /// Takes the archive's compaction lock (see [`CompactionLock`]), waiting for
    /// a live holder; `cancel` is asked while waiting.
    pub(crate) fn lock_compaction(&self, cancel: &Cancel) -> Result<CompactionLock> {
        use object_store::{PutMode, PutOptions, UpdateVersion};
        let key = self.key(".promduck-compact.lock");
        let ttl = lock_ttl();
        let token = format!("{:016x}", {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            h.finish()
        });
        let mut said = false;
        loop {
            let body = serde_json::to_vec(&LockBody::mine(&token, ttl)).unwrap_or_default();
            let (store, k, b) = (self.store.clone(), key.clone(), body.clone());
            let created = run(async move {
                store
                    .put_opts(&k, PutPayload::from(b), PutOptions::from(PutMode::Create))
                    .await
            });
            let e_tag = match created {
                Ok(r) => r.e_tag,
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let (store, k) = (self.store.clone(), key.clone());
                    let held = run(async move {
                        let got = store.get(&k).await?;
                        let meta = got.meta.clone();
                        Ok::<_, object_store::Error>((got.bytes().await?, meta))
                    });
                    let (bytes, meta) = match held {
                        Ok(x) => x,
                        // Released meanwhile: try again at once.
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(self.err("read the compaction lock", &key, e)),
                    };
                    let holder = serde_json::from_slice::<LockBody>(&bytes).ok();
                    let stale = match &holder {
                        Some(h) => h.stale(),
                        // Not ours to read: stale once it is older than a TTL.
                        None => (crate::clock::system_now() - meta.last_modified)
                            .to_std()
                            .is_ok_and(|age| age > ttl),
                    };
                    if !stale {
                        if !said {
                            tracing::info!(lock = %self.display(&key).display(), holder = %holder.as_ref().map(LockBody::describe).unwrap_or_default(), "another compaction of this archive is running: waiting for it");
                            said = true;
                        }
                        if cancel.is_cancelled() {
                            return Err(Error::Invalid(format!(
                                "stopped while waiting for the compaction lock {}",
                                self.display(&key).display()
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                    let (store, k, b) = (self.store.clone(), key.clone(), body.clone());
                    let update = UpdateVersion {
                        e_tag: meta.e_tag.clone(),
                        version: None,
                    };
                    let taken = run(async move {
                        store
                            .put_opts(
                                &k,
                                PutPayload::from(b),
                                PutOptions::from(PutMode::Update(update)),
                            )
                            .await
                    });
                    match taken {
                        Ok(r) => {
                            tracing::warn!(lock = %self.display(&key).display(), holder = %holder.as_ref().map(LockBody::describe).unwrap_or_default(), "took over a stale compaction lock (its holder stopped)");
                            r.e_tag
                        }
                        Err(object_store::Error::Precondition { .. })
                        | Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(self.err("take over the compaction lock", &key, e)),
                    }
                }
                Err(e) => return Err(self.err("create the compaction lock", &key, e)),
            };
            let state = Arc::new(LockState {
                e_tag: std::sync::Mutex::new(e_tag),
                lost: Default::default(),
                stop: Default::default(),
            });
            let heartbeat = {
                let (state, store, k, token, secrets) = (
                    state.clone(),
                    self.store.clone(),
                    key.clone(),
                    token.clone(),
                    self.secrets.clone(),
                );
                std::thread::Builder::new()
                    .name("promduck-lock".into())
                    .spawn(move || heartbeat(state, store, k, token, ttl, secrets))
                    .ok()
            };
            return Ok(CompactionLock {
                store: self.store.clone(),
                signer: self.signer.clone(),
                secrets: self.secrets.clone(),
                key,
                state,
                heartbeat,
            });
        }
    }
}

/// Refreshes a held lock every third of its TTL until stopped or lost.
pub(super) fn heartbeat(
    state: Arc<LockState>,
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    token: String,
    ttl: Duration,
    secrets: Vec<String>,
) {
    use object_store::{PutMode, PutOptions, UpdateVersion};
    use std::sync::atomic::Ordering;
    let every = ttl / 3;
    let mut last = std::time::Instant::now();
    while !state.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(every));
        if last.elapsed() < every {
            continue;
        }
        last = std::time::Instant::now();
        let e_tag = state.e_tag.lock().ok().and_then(|e| e.clone());
        let body = serde_json::to_vec(&LockBody::mine(&token, ttl)).unwrap_or_default();
        let (s, k) = (store.clone(), key.clone());
        let update = UpdateVersion {
            e_tag,
            version: None,
        };
        let r = run(async move {
            s.put_opts(
                &k,
                PutPayload::from(body),
                PutOptions::from(PutMode::Update(update)),
            )
            .await
        });
        match r {
            Ok(r) => {
                if let Ok(mut e) = state.e_tag.lock() {
                    *e = r.e_tag;
                }
            }
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => {
                // The flag first: once the log says so, compaction has stopped.
                state.lost.store(true, Ordering::SeqCst);
                tracing::error!(lock = %key, "the compaction lock was taken over by another compactor: stopping");
                return;
            }
            Err(e) => {
                tracing::warn!(lock = %key, error = %scrub(&e.to_string(), &secrets), "cannot refresh the compaction lock; retrying")
            }
        }
    }
}
