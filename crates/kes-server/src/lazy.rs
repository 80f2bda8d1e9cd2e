//! A keystore opened on first use, for backends that may be unreachable when the node starts:
//! a node restarted during a KMS outage must still start and serve what the cluster has cached.

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use kes_keystore::{KeyStore, ListPage, StoreError, StoreStatus};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Opener =
    Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn KeyStore>, StoreError>> + Send + Sync>;

/// Attempts to open the store are at least this far apart; calls in between fail at once with
/// the last error instead of each waiting for the KMS.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(2);

pub struct LazyStore {
    kind: &'static str,
    open: Opener,
    store: tokio::sync::OnceCell<Arc<dyn KeyStore>>,
    /// When the last attempt failed, and how.
    failed: Mutex<Option<(Instant, String)>>,
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
            failed: Mutex::new(None),
        }
    }

    async fn store(&self) -> Result<&Arc<dyn KeyStore>, StoreError> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        if let Some((at, message)) = &*self.failed.lock() {
            if at.elapsed() < REOPEN_INTERVAL {
                return Err(StoreError::unavailable(true, message.clone()));
            }
        }
        let r = self
            .store
            .get_or_try_init(|| async {
                let s = (self.open)().await?;
                tracing::info!(keystore = self.kind, "keystore opened");
                Ok::<_, StoreError>(s)
            })
            .await;
        if let Err(e) = &r {
            let message = match e {
                StoreError::Unavailable { message, .. } => message.clone(),
                other => other.to_string(),
            };
            *self.failed.lock() = Some((Instant::now(), message));
        }
        r
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
    async fn opens_once_the_backend_answers_and_spaces_out_attempts() {
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
        // Within the interval the last error is returned without a new attempt.
        assert!(store.create("k", b"v").await.unwrap_err().is_unavailable());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        tokio::time::sleep(REOPEN_INTERVAL).await;
        store.create("k", b"v").await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), b"v");
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }
}
