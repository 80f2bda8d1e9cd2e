//! The `KeyStore` trait every backend implements, the stores that need no external service
//! (in memory, and a directory in KES's filesystem layout), and the conformance suite that every
//! store must pass.
//!
//! A keystore holds opaque values (KES's encoded `KeyVersion` text) under key names. It knows
//! nothing about caching, replication or cryptography: the server decides what to store and the
//! store only has to be durable, create-if-absent, and honest about who failed.

use async_trait::async_trait;
use std::time::Duration;

pub mod conformance;
pub mod fs;
pub mod memory;

pub use fs::FsStore;
pub use memory::MemoryStore;

/// Most names a single `list` call returns.
pub const MAX_LIST_PAGE: usize = 1024;

/// Largest value a store accepts or returns, in bytes. KES reads at most 1 MiB per key.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// Why a store operation failed. The variants decide the HTTP status clients see, and whether
/// clients fail over to another node: only definitive answers may become 4xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key does not exist")]
    NotFound,
    #[error("key already exists")]
    AlreadyExists,
    /// The store refused the operation for this caller (credentials, policy at the backend).
    #[error("access denied by the keystore: {0}")]
    Denied(String),
    /// The store could not be reached or did not answer in time. `retryable` says whether the
    /// same request may be sent again without risk (reads always; writes when nothing was sent).
    #[error("keystore unavailable: {message}")]
    Unavailable { retryable: bool, message: String },
    /// The store answered, but with something that is not a valid entry.
    #[error("invalid keystore entry: {0}")]
    Invalid(String),
}

impl StoreError {
    pub fn unavailable(retryable: bool, message: impl Into<String>) -> Self {
        Self::Unavailable {
            retryable,
            message: message.into(),
        }
    }

    /// Transient failures of the store itself, as opposed to answers about the key.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Sorted names, at most the requested limit.
    pub names: Vec<String>,
    /// The first name not returned, or empty when the listing is complete.
    pub continue_at: String,
}

/// A store's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    /// Round-trip time of the health probe.
    pub latency: Duration,
}

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// A short name of the backend kind for logs and metrics ("memory", "fs", "vault", ...).
    fn kind(&self) -> &'static str;

    /// Stores `value` under `name` if and only if no entry of that name exists. Of any number of
    /// concurrent creates of one name, exactly one succeeds; the others get `AlreadyExists`.
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;

    /// The value stored under `name`.
    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError>;

    /// Removes `name`. `NotFound` when there was no such entry, where the backend can tell.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// Names starting with `prefix`, sorted, beginning at `continue_at` (inclusive) when it is
    /// not empty, at most `limit` (capped at [`MAX_LIST_PAGE`]).
    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError>;

    /// Probes the backend.
    async fn status(&self) -> Result<StoreStatus, StoreError>;
}

/// Builds a page from an iterator over names in any order, for stores that can only enumerate
/// everything.
pub fn page_from<I, S>(names: I, prefix: &str, continue_at: &str, limit: usize) -> ListPage
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let limit = limit.clamp(1, MAX_LIST_PAGE);
    let mut all: Vec<String> = names
        .into_iter()
        .map(Into::into)
        .filter(|n| n.starts_with(prefix) && n.as_str() >= continue_at)
        .collect();
    all.sort_unstable();
    all.dedup();
    let continue_at = all.get(limit).cloned().unwrap_or_default();
    all.truncate(limit);
    ListPage {
        names: all,
        continue_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging() {
        let names = ["b", "a", "ab", "c", "abc"];
        let p = page_from(names, "a", "", 2);
        assert_eq!(p.names, vec!["a", "ab"]);
        assert_eq!(p.continue_at, "abc");
        let p = page_from(names, "a", "abc", 2);
        assert_eq!(p.names, vec!["abc"]);
        assert_eq!(p.continue_at, "");
        let p = page_from(names, "", "", 0);
        assert_eq!(p.names, vec!["a"], "limit 0 is treated as 1");
    }
}
