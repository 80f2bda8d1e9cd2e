//! A keystore that lives in process memory: for tests, development and single-node demos. It is
//! not durable, and that is its only difference from the other stores as far as callers can tell.

use crate::{KeyStore, ListPage, StoreError, StoreStatus, MAX_LIST_PAGE, MAX_VALUE_LEN};
use async_trait::async_trait;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Instant;
use zeroize::Zeroizing;

/// An in-memory keystore.
///
/// A sorted map keeps listing a range scan, so a page costs O(log n + limit) instead of a sort
/// of every name. Values are KES key material, so they are wiped from memory when replaced,
/// deleted or dropped with the store.
///
/// Rules it shares with [`crate::FsStore`]: creating an empty name or a value longer than
/// [`MAX_VALUE_LEN`] fails with [`StoreError::Invalid`], and deleting a missing name is
/// [`StoreError::NotFound`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RwLock<BTreeMap<String, Zeroizing<Vec<u8>>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries, for tests and metrics.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if name.is_empty() {
            return Err(StoreError::Invalid("empty key name".into()));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds the limit of {MAX_VALUE_LEN} bytes",
                value.len()
            )));
        }
        // Check and insert under one write lock: that is what makes create-if-absent atomic.
        let mut entries = self.entries.write();
        if entries.contains_key(name) {
            return Err(StoreError::AlreadyExists);
        }
        entries.insert(name.to_owned(), Zeroizing::new(value.to_vec()));
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.entries
            .read()
            .get(name)
            .map(|v| v.to_vec())
            .ok_or(StoreError::NotFound)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.entries
            .write()
            .remove(name)
            .map(drop)
            .ok_or(StoreError::NotFound)
    }

    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        // Same contract as `page_from`: limit 0 means 1, never more than a full page.
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        // Names with a given prefix form one contiguous run of the sorted map, so the page is
        // the run that starts at whichever of prefix and continue_at comes later.
        let start = prefix.max(continue_at);
        let entries = self.entries.read();
        let mut names: Vec<String> = entries
            .range::<str, _>((Bound::Included(start), Bound::Unbounded))
            .map(|(name, _)| name)
            .take_while(|name| name.starts_with(prefix))
            .take(limit + 1)
            .cloned()
            .collect();
        drop(entries);
        let continue_at = if names.len() > limit {
            names.pop().unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListPage { names, continue_at })
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        // Taking the lock is the only thing that could be slow.
        let started = Instant::now();
        drop(self.entries.read());
        Ok(StoreStatus {
            latency: started.elapsed(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::page_from;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        crate::conformance::run_all_with(
            Arc::new(MemoryStore::new()),
            crate::conformance::Options::strict(),
        )
        .await;
    }

    #[tokio::test]
    async fn rejects_what_it_cannot_hold() {
        let store = MemoryStore::new();
        assert!(matches!(
            store.create("", b"v").await,
            Err(StoreError::Invalid(_))
        ));
        let too_big = vec![b'a'; MAX_VALUE_LEN + 1];
        assert!(matches!(
            store.create("big", &too_big).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(store.get("big").await, Err(StoreError::NotFound)));
        store
            .create("max", &too_big[..MAX_VALUE_LEN])
            .await
            .unwrap();
        assert_eq!(store.get("max").await.unwrap().len(), MAX_VALUE_LEN);
    }

    fn name() -> impl Strategy<Value = String> {
        // A tiny alphabet makes shared prefixes, and so the interesting range boundaries, common.
        "[ab]{0,4}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The range scan must give exactly the page that sorting everything would.
        #[test]
        fn list_matches_page_from(
            names in proptest::collection::btree_set("[ab]{1,4}", 0..24),
            prefix in name(),
            continue_at in name(),
            limit in 0usize..8,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let store = MemoryStore::new();
            let page = rt.block_on(async {
                for n in &names {
                    store.create(n, n.as_bytes()).await.unwrap();
                }
                store.list(&prefix, &continue_at, limit).await.unwrap()
            });
            prop_assert_eq!(page, page_from(names.iter().cloned(), &prefix, &continue_at, limit));
        }
    }
}
