//! Reads from the local replica: crypto keys (with KES's cache expiry and the offline rules),
//! linearizable describes, and lists (straight from the keystore: a list is not a
//! linearizable read, it shows what the keystore holds).

use crate::decide::{self, Freshness, KeyTimes};
use crate::{CachedKey, Cluster, ClusterError, StoreOp, KMS_WAIT, WRAPPING_KEY};
use kes_crypto::KeyVersion;
use kes_keystore::{ListPage, StoreError, StoreStatus, MAX_LIST_PAGE};
use kes_state::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A cached key found on this node, with what its expiry depends on.
pub(crate) struct Hit {
    pub(crate) key: Arc<CachedKey>,
    /// When the KMS last confirmed it (wall clock, ms).
    pub(crate) confirmed_at_ms: u64,
    /// `stored_at_ms` of its state entry, 0 for a key read from the KMS whose fill is not
    /// applied yet.
    pub(crate) stored_at_ms: u64,
}

/// What the KMS said about a cached key.
enum Confirmation {
    Same,
    /// Gone from the KMS.
    Gone,
    /// The KMS holds other material under the name.
    Changed,
    Unreachable,
}

impl Cluster {
    /// The key `name` for crypto operations, from the local replica.
    ///
    /// Expiry (see the README's "Cache and KMS outages"): a key is served as it is while the KMS
    /// confirmed it within `cache.expiry.any` and it was used on this node within
    /// `cache.expiry.unused`. Otherwise it is re-confirmed against the KMS first: gone from the
    /// KMS means 404 and eviction everywhere, other material means a fresh read. When the KMS
    /// is unreachable it is served unconfirmed until the outage has lasted
    /// `cache.expiry.offline`, then refused with 504. A miss reads the KMS and proposes a
    /// fill; during an outage it fails at once with 504.
    pub async fn get(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ClusterError> {
        if name == WRAPPING_KEY {
            return Err(ClusterError::KeyNotFound);
        }
        self.check_serving()?;
        let now = self.clock_ms();
        if let Some(hit) = self.local(name) {
            match self.freshness(&hit, now) {
                Freshness::Fresh => {
                    hit.key.touch(now);
                    return Ok(hit.key);
                }
                Freshness::Refresh => {
                    hit.key.touch(now);
                    self.refresh_in_background(name, &hit);
                    return Ok(hit.key);
                }
                Freshness::Stale => {
                    if self.kms.is_down() {
                        return self.serve_offline(hit, now);
                    }
                }
            }
        }
        // Boxed: the hit above is nearly every call, and its future should not carry the
        // keystore round trip's state.
        Box::pin(self.get_slow(name)).await
    }

    /// A miss or a stale entry: fetch or confirm it, one caller per name at a time.
    async fn get_slow(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ClusterError> {
        let gate = {
            let mut inflight = self.inflight.lock();
            Arc::clone(inflight.entry(name.to_owned()).or_default())
        };
        let result = {
            let _guard = gate.lock().await;
            self.get_gated(name).await
        };
        {
            let mut inflight = self.inflight.lock();
            if Arc::strong_count(&gate) <= 2 {
                inflight.remove(name);
            }
        }
        result
    }

    /// The slow path of [`Cluster::get`], one caller per name at a time.
    async fn get_gated(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ClusterError> {
        let now = self.clock_ms();
        let Some(hit) = self.local(name) else {
            if self.kms.is_down() {
                // Not a definitive 404: clients should try elsewhere or later.
                return Err(ClusterError::KmsUnreachable);
            }
            self.kms.misses.fetch_add(1, Ordering::Relaxed);
            return self.fetch(name).await;
        };
        if self.freshness(&hit, now) != Freshness::Stale {
            // Someone re-confirmed it while this caller waited.
            hit.key.touch(now);
            return Ok(hit.key);
        }
        if self.kms.is_down() {
            return self.serve_offline(hit, now);
        }
        match self.confirm(name, &hit).await {
            Ok(Confirmation::Same) => {
                hit.key.touch(now);
                Ok(hit.key)
            }
            Ok(Confirmation::Gone) => Err(ClusterError::KeyNotFound),
            Ok(Confirmation::Changed) => {
                self.kms.misses.fetch_add(1, Ordering::Relaxed);
                self.fetch(name).await
            }
            Ok(Confirmation::Unreachable) => self.serve_offline(hit, now),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn freshness(&self, hit: &Hit, now: u64) -> Freshness {
        let times = KeyTimes {
            last_used: hit.key.last_used(),
            confirmed_at_ms: hit.confirmed_at_ms,
        };
        decide::freshness(&self.expiry, times, now, self.clock.wall_ms())
    }

    /// A stale key while the KMS is unreachable: served until the outage has lasted
    /// `cache.expiry.offline`.
    fn serve_offline(&self, hit: Hit, now: u64) -> Result<Arc<CachedKey>, ClusterError> {
        if decide::serve_offline(self.kms.down_for(), self.expiry.offline) {
            self.kms.served_offline.fetch_add(1, Ordering::Relaxed);
            hit.key.touch(now);
            Ok(hit.key)
        } else {
            Err(ClusterError::KmsUnreachable)
        }
    }

    /// Asks the KMS whether it still holds the cached key, and records the answer in the
    /// replicated state: a confirmation, or the eviction of the entry.
    async fn confirm(&self, name: &str, hit: &Hit) -> Result<Confirmation, ClusterError> {
        // Keystore reads are key material: wiped when dropped, here and below.
        let read = match tokio::time::timeout(KMS_WAIT, self.store.get(name)).await {
            Ok(r) => r.map(Zeroizing::new),
            Err(_) => {
                let e = StoreError::unavailable(true, format!("no answer within {KMS_WAIT:?}"));
                self.kms.record_unreachable(&e);
                Err(e)
            }
        };
        let answer = match read {
            Ok(raw) if hit.key.is_stored_as(&raw) => Confirmation::Same,
            Ok(_) => Confirmation::Changed,
            Err(StoreError::NotFound) => Confirmation::Gone,
            Err(e) if e.is_unavailable() => return Ok(Confirmation::Unreachable),
            Err(e) => return Err(ClusterError::store(StoreOp::Read, e)),
        };
        match answer {
            Confirmation::Same => {
                self.kms.confirmed.fetch_add(1, Ordering::Relaxed);
                if hit.stored_at_ms != 0 {
                    let cmd = Command::ConfirmKeys {
                        names: vec![name.to_owned()],
                        at_ms: self.clock.wall_ms(),
                    };
                    if let Err(e) = self.propose(cmd).await {
                        tracing::debug!(key = %name, error = %e, "confirmation not committed");
                    }
                }
            }
            Confirmation::Gone | Confirmation::Changed => {
                self.kms.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %name, gone = matches!(answer, Confirmation::Gone), "cached key no longer matches the KMS; evicting it");
                self.remove_decoded(name);
                if hit.stored_at_ms != 0 {
                    let cmd = Command::EvictKey {
                        name: name.to_owned(),
                        if_stored_at_ms: hit.stored_at_ms,
                    };
                    if let Err(e) = self.propose(cmd).await {
                        tracing::debug!(key = %name, error = %e, "eviction not committed");
                    }
                }
            }
            Confirmation::Unreachable => {}
        }
        Ok(answer)
    }

    /// Re-confirms a key nearing its expiry without holding up the request that noticed.
    fn refresh_in_background(self: &Arc<Self>, name: &str, hit: &Hit) {
        if self.kms.is_down() || !self.refreshing.lock().insert(name.to_owned()) {
            return;
        }
        let this = Arc::clone(self);
        let name = name.to_owned();
        let hit = Hit {
            key: Arc::clone(&hit.key),
            confirmed_at_ms: hit.confirmed_at_ms,
            stored_at_ms: hit.stored_at_ms,
        };
        self.spawn_background(async move {
            if let Err(e) = this.confirm(&name, &hit).await {
                tracing::debug!(key = %name, error = %e, "background re-confirmation failed");
            }
            this.refreshing.lock().remove(&name);
        });
    }

    /// A key from the local state, or from an earlier KMS read whose fill is not applied yet.
    pub(crate) fn local(&self, name: &str) -> Option<Hit> {
        // Nearly every call finds the key decoded already: look at the entry's stamp without
        // copying its sealed bytes, and copy them only when they must be opened.
        let (stamp, confirmed) = self.state.read(|s| {
            let generation = s.generation(name);
            match s.key(name) {
                Some(e) => ((generation, e.stored_at_ms), Some(e.confirmed_at_ms)),
                None => ((generation, 0), None),
            }
        });
        let previous = {
            let decoded = self.decoded.read();
            match decoded.get(name) {
                Some((st, k)) if *st == stamp => {
                    return Some(Hit {
                        key: Arc::clone(k),
                        confirmed_at_ms: confirmed.unwrap_or_else(|| k.fetched_at_ms()),
                        stored_at_ms: stamp.1,
                    })
                }
                Some((_, k)) => k.last_used(),
                None => 0,
            }
        };
        confirmed?;
        // Read again for the bytes: the entry may have changed in between, and the stamp
        // stored with the decoded key must be the one of the bytes it was decoded from.
        let (stamp, entry) = self.state.read(|s| {
            let generation = s.generation(name);
            match s.key(name) {
                Some(e) => (
                    (generation, e.stored_at_ms),
                    Some((e.sealed.clone(), e.confirmed_at_ms)),
                ),
                None => ((generation, 0), None),
            }
        });
        let (sealed, confirmed_at_ms) = entry?;
        let cck = self.cck.load_full()?;
        let value = cck.open(name, &sealed)?;
        let version = KeyVersion::parse(&value).ok()?;
        // The same key re-unsealed after its entry changed (a fill of a read of ours, say)
        // keeps its use history.
        let k = Arc::new(CachedKey::new(version, &value, previous));
        self.insert_decoded(name, stamp, Arc::clone(&k));
        Some(Hit {
            key: k,
            confirmed_at_ms,
            stored_at_ms: stamp.1,
        })
    }

    async fn fetch(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ClusterError> {
        let observed = self.applied_index();
        let generation = self.state.read(|s| s.generation(name));
        let read = match tokio::time::timeout(KMS_WAIT, self.store.get(name)).await {
            Ok(r) => r,
            Err(_) => {
                let e = StoreError::unavailable(true, format!("no answer within {KMS_WAIT:?}"));
                self.kms.record_unreachable(&e);
                // Not a definitive 404: clients should try elsewhere or later.
                return Err(ClusterError::KmsUnreachable);
            }
        };
        let raw = read.map(Zeroizing::new).map_err(|e| match e {
            StoreError::NotFound => ClusterError::KeyNotFound,
            // A miss while the keystore is down must not look like a definitive 404.
            e => ClusterError::store(StoreOp::Read, e),
        })?;
        let version = KeyVersion::parse(&raw).map_err(|e| {
            tracing::error!(key = %name, error = %e, "keystore entry is not a valid key");
            ClusterError::store(StoreOp::Read, StoreError::Invalid(e.to_string()))
        })?;
        let at_ms = self.clock.wall_ms();
        let k = Arc::new(CachedKey::new(version, &raw, self.clock_ms()).fetched_at(at_ms));
        self.insert_decoded(name, (generation, 0), Arc::clone(&k));
        let sealed = self.cck.load_full().map(|cck| cck.seal(name, &raw));
        match sealed {
            None => {}
            Some(Err(e)) => tracing::error!(key = %name, error = %e, "cache fill not proposed"),
            Some(Ok(sealed)) => {
                let cmd = Command::FillKey {
                    name: name.to_owned(),
                    sealed,
                    at_ms,
                    observed,
                };
                let this = Arc::clone(self);
                // The answer does not wait for the fill: the keystore is authoritative, and the
                // fill only spares the other nodes (and restarts) a keystore read.
                self.spawn_background(async move {
                    if let Err(e) = this.propose(cmd).await {
                        tracing::debug!(error = %e, "cache fill not committed");
                    }
                });
            }
        }
        Ok(k)
    }

    /// Drops unsealed copies of keys not used here for `cache.expiry.unused`, so that key
    /// material does not stay in memory for idle keys. Their next use re-confirms them.
    pub fn drop_idle(&self) {
        let unused = self.expiry.unused.as_millis() as u64;
        if unused == 0 {
            return;
        }
        let now = self.clock_ms();
        self.retain_decoded(|_, (_, k)| {
            k.last_used() != 0 && now.saturating_sub(k.last_used()) <= unused
        });
    }

    /// Watches the KMS: probes it (often during an outage, so that writes resume soon after it
    /// returns) and drops idle unsealed keys. Runs until `cancel` fires.
    /// Linearizable describe: waits for the leader's read index first.
    pub async fn describe(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ClusterError> {
        if name == WRAPPING_KEY {
            return Err(ClusterError::KeyNotFound);
        }
        let index = self.read_index().await?;
        self.wait_applied(index).await?;
        match self.get(name).await {
            Err(ClusterError::KeyNotFound) => self.committed(name).await,
            r => r,
        }
    }

    /// After the keystore said `name` does not exist: the answer of the committed state, read
    /// after the keystore's. The leader changes the keystore before it commits the change, so
    /// a delete in flight is visible there while the committed state still holds the key and
    /// every node serves it; a "not found" then, followed by a "found" from another node,
    /// would make the delete appear twice. The commit is the point where a write takes effect.
    async fn committed(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ClusterError> {
        let index = self.read_index().await?;
        self.wait_applied(index).await?;
        if !self.state.read(|s| s.key(name).is_some()) {
            return Err(ClusterError::KeyNotFound);
        }
        self.local(name)
            .map(|hit| hit.key)
            .ok_or(ClusterError::KeyNotFound)
    }

    /// A page of the keystore's names under `prefix`, without the cluster's own entry.
    pub async fn list(&self, prefix: &str, continue_at: &str) -> Result<ListPage, ClusterError> {
        let mut page = self
            .store
            .list(prefix, continue_at, MAX_LIST_PAGE)
            .await
            .map_err(|e| ClusterError::store(StoreOp::List, e))?;
        let before = page.names.len();
        page.names.retain(|n| n != WRAPPING_KEY);
        if page.names.len() < before && !page.continue_at.is_empty() {
            // Keep pages full: take the next name in the hidden entry's place.
            let next = self
                .store
                .list(prefix, &page.continue_at, 1)
                .await
                .map_err(|e| ClusterError::store(StoreOp::List, e))?;
            page.names.extend(next.names);
            page.continue_at = next.continue_at;
        }
        Ok(page)
    }

    /// The KMS's health for `/v1/status`: during an outage the answer is immediate (the
    /// background probe watches for the KMS's return); otherwise a probe bounded by
    /// [`kms::PROBE_TIMEOUT`].
    pub async fn status(&self) -> Result<StoreStatus, StoreError> {
        if let Some(reason) = self.kms.down_reason() {
            return Err(StoreError::unavailable(true, reason));
        }
        self.kms.probe(self.store.as_ref()).await
    }
}
