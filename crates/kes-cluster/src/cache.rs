//! A key ready for crypto operations: the parsed `KeyVersion`, unsealed once and shared.

use kes_crypto::KeyVersion;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct CachedKey {
    pub version: KeyVersion,
    /// A digest of the stored encoding, to tell whether the KMS still holds the same material
    /// without keeping a second copy of it.
    pub fingerprint: [u8; 32],
    /// Milliseconds on the node's clock (see `Cluster::clock_ms`: the node clock's monotonic milliseconds, plus one) when the key was last used
    /// on this node; 0 if not since it was unsealed here.
    last_used: AtomicU64,
    /// For a key read from the KMS by this node: when (wall clock, ms). Its state entry, once
    /// the fill is applied, carries the confirmation time instead.
    fetched_at_ms: u64,
}

impl CachedKey {
    pub fn new(version: KeyVersion, stored: &[u8], last_used: u64) -> Self {
        use sha2::Digest as _;
        Self {
            version,
            fingerprint: sha2::Sha256::digest(stored).into(),
            last_used: AtomicU64::new(last_used),
            fetched_at_ms: 0,
        }
    }

    pub fn fetched_at(mut self, at_ms: u64) -> Self {
        self.fetched_at_ms = at_ms;
        self
    }

    pub fn fetched_at_ms(&self) -> u64 {
        self.fetched_at_ms
    }

    /// Whether `stored` is the encoding this key came from.
    pub fn is_stored_as(&self, stored: &[u8]) -> bool {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(stored).into();
        digest == self.fingerprint
    }

    /// Marks the key as used at `now`.
    pub fn touch(&self, now: u64) {
        // Skip the write (and the cache-line traffic between cores) within the same 100 ms,
        // but always mark a key used for the first time.
        let last = self.last_used.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= 100 {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }
}
