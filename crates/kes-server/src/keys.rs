//! Keys as the API sees them: the keystore behind a cache of parsed keys.
//!
//! The cache follows KES's expiry model (`cache.expiry.any`, `unused`, `offline`) with KES's
//! default bug fixed: an unset `unused` means 30 s, not "`any` = 30 s". Reads of cached keys take
//! a shared lock for a hash lookup and nothing else, so the hot path (`generate`, `decrypt`) never
//! waits on the keystore or on other requests. Concurrent misses of one name make one keystore
//! read.

use crate::error::{ApiError, StoreOp};
use kes_config::CacheConfig;
use kes_crypto::KeyVersion;
use kes_keystore::{KeyStore, ListPage, StoreError, StoreStatus, MAX_LIST_PAGE};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A parsed key in the cache.
pub struct CachedKey {
    pub version: KeyVersion,
    used: AtomicBool,
}

/// How often the keystore is probed to decide whether the node is offline.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

pub struct Keys {
    store: Arc<dyn KeyStore>,
    cache: RwLock<HashMap<String, Arc<CachedKey>>>,
    /// One lock per name being fetched, so concurrent misses share one keystore read.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    offline: AtomicBool,
    expiry: CacheConfig,
}

impl Keys {
    pub fn new(store: Arc<dyn KeyStore>, expiry: CacheConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            cache: RwLock::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            offline: AtomicBool::new(false),
            expiry: expiry.effective(),
        })
    }

    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    pub fn expiry(&self) -> &CacheConfig {
        &self.expiry
    }

    /// Whether the last keystore probe failed.
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Relaxed)
    }

    /// Offline caching is on and in force: expiry is suspended.
    fn holding(&self) -> bool {
        self.is_offline() && !self.expiry.offline.is_zero()
    }

    /// The key `name`, from the cache or the keystore.
    pub async fn get(&self, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        if let Some(k) = self.cached(name) {
            return Ok(k);
        }
        let gate = {
            let mut inflight = self.inflight.lock();
            Arc::clone(inflight.entry(name.to_owned()).or_default())
        };
        let result = {
            let _guard = gate.lock().await;
            match self.cached(name) {
                Some(k) => Ok(k),
                None => self.fetch(name).await,
            }
        };
        {
            let mut inflight = self.inflight.lock();
            // Only the last waiter removes the gate; others still hold a clone.
            if Arc::strong_count(&gate) <= 2 {
                inflight.remove(name);
            }
        }
        result
    }

    fn cached(&self, name: &str) -> Option<Arc<CachedKey>> {
        let k = self.cache.read().get(name).cloned()?;
        if !k.used.load(Ordering::Relaxed) {
            k.used.store(true, Ordering::Relaxed);
        }
        Some(k)
    }

    async fn fetch(&self, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        let raw = self
            .store
            .get(name)
            .await
            .map_err(|e| ApiError::store(StoreOp::Read, e))?;
        let version = KeyVersion::parse(&raw).map_err(|e| {
            tracing::error!(key = %name, error = %e, "keystore entry is not a valid key");
            ApiError::store(StoreOp::Read, StoreError::Invalid(e.to_string()))
        })?;
        let entry = Arc::new(CachedKey {
            version,
            used: AtomicBool::new(true),
        });
        self.cache
            .write()
            .insert(name.to_owned(), Arc::clone(&entry));
        Ok(entry)
    }

    /// Creates `name` in the keystore. The cache is not filled, as in KES: the first use reads
    /// the key back, which also proves it was stored.
    pub async fn create(&self, name: &str, version: &KeyVersion) -> Result<(), ApiError> {
        let encoded = version.encode();
        self.store
            .create(name, &encoded)
            .await
            .map_err(|e| ApiError::store(StoreOp::Create, e))
    }

    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let r = self.store.delete(name).await;
        // Evict even when the keystore says it did not have the key: it is gone either way.
        if matches!(r, Ok(()) | Err(StoreError::NotFound)) {
            self.cache.write().remove(name);
        }
        r.map_err(|e| ApiError::store(StoreOp::Delete, e))
    }

    pub async fn list(&self, prefix: &str, continue_at: &str) -> Result<ListPage, ApiError> {
        self.store
            .list(prefix, continue_at, MAX_LIST_PAGE)
            .await
            .map_err(|e| ApiError::store(StoreOp::List, e))
    }

    pub async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.store.status().await
    }

    /// Drops every cached key.
    pub fn clear(&self) {
        self.cache.write().clear();
    }

    /// Evicts keys not used since the last sweep and marks the rest unused.
    fn sweep_unused(&self) {
        self.cache
            .write()
            .retain(|_, k| k.used.swap(false, Ordering::Relaxed));
    }

    pub fn cached_len(&self) -> usize {
        self.cache.read().len()
    }

    /// Runs the expiry and health loops until `cancel` fires.
    pub async fn run_maintenance(self: Arc<Self>, cancel: CancellationToken) {
        let period = |d: Duration| {
            let mut i = tokio::time::interval(if d.is_zero() { Duration::MAX / 4 } else { d });
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        };
        let mut any = period(self.expiry.any);
        let mut unused = period(self.expiry.unused / 2);
        let mut offline = period(self.expiry.offline);
        let mut status = period(STATUS_INTERVAL);
        // Intervals fire at once; skip that first tick.
        any.tick().await;
        unused.tick().await;
        offline.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = any.tick(), if !self.expiry.any.is_zero() => {
                    if !self.holding() { self.clear(); }
                }
                _ = unused.tick(), if !self.expiry.unused.is_zero() => {
                    if !self.holding() { self.sweep_unused(); }
                }
                _ = offline.tick(), if !self.expiry.offline.is_zero() => {
                    if self.holding() { self.clear(); }
                }
                _ = status.tick() => {
                    let down = matches!(self.status().await, Err(e) if e.is_unavailable());
                    let was = self.offline.swap(down, Ordering::Relaxed);
                    if was != down {
                        if down {
                            tracing::warn!(store = self.store.kind(), "keystore unreachable: entering offline mode");
                        } else {
                            tracing::info!(store = self.store.kind(), "keystore reachable again: leaving offline mode");
                        }
                    }
                }
            }
        }
    }
}
