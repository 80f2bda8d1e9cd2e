//! A key ready for crypto operations: the parsed `KeyVersion`, unsealed once and shared.

use kes_crypto::KeyVersion;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct CachedKey {
    pub version: KeyVersion,
    used: AtomicBool,
}

impl CachedKey {
    pub fn new(version: KeyVersion) -> Self {
        Self {
            version,
            used: AtomicBool::new(true),
        }
    }

    /// Marks the key as used since the last expiry sweep.
    pub fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the key was used since the last call, and resets the mark.
    pub fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }
}
