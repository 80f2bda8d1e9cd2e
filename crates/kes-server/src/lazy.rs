//! A keystore opened on first use, for backends that may be unreachable when the node starts.

use async_trait::async_trait;
use kes_keystore::{KeyStore, ListPage, StoreError, StoreStatus};
use std::sync::{Arc, OnceLock};

type Opener = Box<dyn Fn() -> Result<Arc<dyn KeyStore>, StoreError> + Send + Sync>;

pub struct LazyStore {
    kind: &'static str,
    open: Opener,
    store: OnceLock<Arc<dyn KeyStore>>,
}

impl LazyStore {
    pub fn new<F>(kind: &'static str, open: F) -> Self
    where
        F: Fn() -> Result<Arc<dyn KeyStore>, StoreError> + Send + Sync + 'static,
    {
        Self {
            kind,
            open: Box::new(open),
            store: OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&Arc<dyn KeyStore>, StoreError> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = (self.open)()?;
        Ok(self.store.get_or_init(|| s))
    }
}

#[async_trait]
impl KeyStore for LazyStore {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.get()?.create(name, value).await
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        LazyStore::get(self)?.get(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.get()?.delete(name).await
    }
    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.get()?.list(prefix, continue_at, limit).await
    }
    async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.get()?.status().await
    }
}
