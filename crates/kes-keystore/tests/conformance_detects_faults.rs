//! The conformance suite is only worth something if it fails broken stores. Each store here
//! breaks one promise of the trait; the suite must name the check that catches it and still
//! leave the backend empty.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use kes_keystore::conformance::{run_all_with, Options};
use kes_keystore::{KeyStore, ListPage, MemoryStore, StoreError, StoreStatus};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Checks for the name, then inserts after a pause: two racers can both win.
    RacyCreate,
    /// A create of an existing name replaces the value but still reports the conflict.
    OverwritingCreate,
    /// Delete reports success and removes nothing.
    DeleteForgets,
    /// Reads return at most 64 KiB.
    TruncatingGet,
    /// Treats continue_at as exclusive, losing one name per page.
    ExclusiveContinue,
    /// Returns pages in reverse order.
    UnsortedList,
    /// Reports a missing entry as an error of the store.
    MissingIsUnavailable,
    /// Mangles a byte that is not ASCII.
    TextOnly,
}

struct Faulty {
    inner: Arc<MemoryStore>,
    fault: Fault,
}

#[async_trait]
impl KeyStore for Faulty {
    fn kind(&self) -> &'static str {
        "faulty"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        match self.fault {
            Fault::RacyCreate => {
                if self.inner.get(name).await.is_ok() {
                    return Err(StoreError::AlreadyExists);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = self.inner.delete(name).await;
                self.inner.create(name, value).await
            }
            Fault::OverwritingCreate if self.inner.get(name).await.is_ok() => {
                self.inner.delete(name).await?;
                self.inner.create(name, value).await?;
                Err(StoreError::AlreadyExists)
            }
            Fault::TextOnly => {
                let text: Vec<u8> = value.iter().map(|b| b & 0x7f).collect();
                self.inner.create(name, &text).await
            }
            _ => self.inner.create(name, value).await,
        }
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        match (self.fault, self.inner.get(name).await) {
            (Fault::TruncatingGet, Ok(mut v)) => {
                v.truncate(64 << 10);
                Ok(v)
            }
            (Fault::MissingIsUnavailable, Err(StoreError::NotFound)) => {
                Err(StoreError::unavailable(true, "no such file"))
            }
            (_, r) => r,
        }
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self.fault {
            Fault::DeleteForgets => Ok(()),
            _ => self.inner.delete(name).await,
        }
    }

    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let mut page = self.inner.list(prefix, continue_at, limit).await?;
        match self.fault {
            Fault::ExclusiveContinue if !continue_at.is_empty() => {
                page.names.retain(|n| n != continue_at);
            }
            Fault::UnsortedList => page.names.reverse(),
            _ => {}
        }
        Ok(page)
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.inner.status().await
    }
}

/// Runs the suite against a store with `fault` and returns the panic message.
async fn failure_of(fault: Fault) -> (String, Arc<MemoryStore>) {
    let inner = Arc::new(MemoryStore::new());
    let store = Arc::new(Faulty {
        inner: Arc::clone(&inner),
        fault,
    });
    let run = tokio::spawn(run_all_with(store, Options::strict()));
    let err = run.await.expect_err("the suite must fail a faulty store");
    let panic = err.into_panic();
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    (message, inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_fault_is_caught_by_its_check_and_cleaned_up() {
    let cases = [
        (Fault::RacyCreate, "`create-race`"),
        (Fault::OverwritingCreate, "`create-existing`"),
        (Fault::DeleteForgets, "`delete`"),
        (Fault::TruncatingGet, "`large-value`"),
        (Fault::ExclusiveContinue, "`list-paging`"),
        (Fault::UnsortedList, "`list-prefix`"),
        (Fault::MissingIsUnavailable, "`get-missing`"),
        (Fault::TextOnly, "`binary-value`"),
    ];
    for (fault, check) in cases {
        let (message, inner) = failure_of(fault).await;
        assert!(
            message.contains(check) && message.contains("faulty store"),
            "{fault:?} should fail {check}, got: {message}"
        );
        // A store that cannot delete cannot be cleaned; every other one must be left empty.
        if !matches!(fault, Fault::DeleteForgets) {
            assert!(inner.is_empty(), "{fault:?} left {} entries", inner.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_stores_pass_without_binary_values() {
    let store = Arc::new(Faulty {
        inner: Arc::new(MemoryStore::new()),
        fault: Fault::TextOnly,
    });
    let opts = Options {
        binary_values: false,
        ..Options::strict()
    };
    run_all_with(store, opts).await;
}

/// A hung backend fails the check instead of stalling the suite.
#[tokio::test]
#[should_panic(expected = "timed out")]
async fn a_hung_store_times_out() {
    struct Hung;
    #[async_trait]
    impl KeyStore for Hung {
        fn kind(&self) -> &'static str {
            "hung"
        }
        async fn create(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn get(&self, _: &str) -> Result<Vec<u8>, StoreError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn list(&self, _: &str, _: &str, _: usize) -> Result<ListPage, StoreError> {
            Ok(ListPage::default())
        }
        async fn status(&self) -> Result<StoreStatus, StoreError> {
            std::future::pending().await
        }
    }
    let opts = Options {
        check_timeout: Duration::from_millis(50),
        ..Options::default()
    };
    run_all_with(Arc::new(Hung), opts).await;
}
