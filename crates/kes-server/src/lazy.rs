//! A keystore opened on first use, for backends that may be unreachable when the node starts:
//! a node restarted during a KMS outage must still start and serve what the cluster has cached.

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use kes_keystore::{KeyStore, ListPage, StoreError, StoreStatus};
use std::sync::Arc;

type Opener =
    Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn KeyStore>, StoreError>> + Send + Sync>;

pub struct LazyStore {
    kind: &'static str,
    open: Opener,
    store: tokio::sync::OnceCell<Arc<dyn KeyStore>>,
}

impl LazyStore {
    pub fn new<F>(kind: &'static str, open: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<Arc<dyn KeyStore>, StoreError>>
            + Send
            + Sync
            + 'static,
    {
        Self {
            kind,
            open: Box::new(open),
            store: tokio::sync::OnceCell::new(),
        }
    }

    /// The store, opened by this call if no earlier one succeeded. Callers that run into an
    /// outage are not held up here for long: the cluster fails misses at once while the KMS
    /// is down, and bounds its probes.
    async fn store(&self) -> Result<&Arc<dyn KeyStore>, StoreError> {
        self.store
            .get_or_try_init(|| async {
                let s = (self.open)().await?;
                tracing::info!(keystore = self.kind, "keystore opened");
                Ok::<_, StoreError>(s)
            })
            .await
    }
}

#[async_trait]
impl KeyStore for LazyStore {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store().await?.create(name, value).await
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.store().await?.get(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.store().await?.delete(name).await
    }
    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.store().await?.list(prefix, continue_at, limit).await
    }
    async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.store().await?.status().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kes_keystore::MemoryStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn opens_once_the_backend_answers() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let a = Arc::clone(&attempts);
        let store = LazyStore::new("test", move || {
            let n = a.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    Err(StoreError::unavailable(true, "connection refused"))
                } else {
                    Ok(Arc::new(MemoryStore::new()) as Arc<dyn KeyStore>)
                }
            })
        });
        let e = store.get("k").await.unwrap_err();
        assert!(
            e.is_unavailable() && e.to_string().contains("connection refused"),
            "{e}"
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        store.create("k", b"v").await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), b"v");
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }
}
