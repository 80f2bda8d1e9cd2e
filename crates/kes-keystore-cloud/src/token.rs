//! Access tokens with a lifetime, shared by every request of a store: fetched on first use,
//! replaced once half their life has passed (so a request never carries one about to expire),
//! fetched once however many requests need a new one at the same moment, and dropped when the
//! KMS refuses them.

use kes_keystore::StoreError;
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Shortest lifetime believed: a KMS that hands out tokens valid for less would be asked for a
/// new one at every request.
const MIN_LIFETIME: Duration = Duration::from_secs(10);
/// Longest lifetime believed, so a token is replaced at least every half hour.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// A token as a login returns it.
pub(crate) struct Issued {
    pub token: Zeroizing<String>,
    /// How long the KMS says it is valid.
    pub lifetime: Duration,
}

struct Current {
    token: Arc<Zeroizing<String>>,
    obtained: Instant,
    lifetime: Duration,
    generation: u64,
}

/// The current token of a store.
pub(crate) struct Tokens {
    current: Mutex<Option<Current>>,
    generation: Mutex<u64>,
    login: tokio::sync::Mutex<()>,
}

/// A token and the generation that identifies it for [`Tokens::invalidate`].
pub(crate) type Token = (Arc<Zeroizing<String>>, u64);

impl Tokens {
    pub fn new() -> Self {
        Self {
            current: Mutex::new(None),
            generation: Mutex::new(0),
            login: tokio::sync::Mutex::new(()),
        }
    }

    /// The current token while it is in the first half of its life.
    fn fresh(&self) -> Option<Token> {
        let cur = self.current.lock();
        let c = cur.as_ref()?;
        (c.obtained.elapsed() < c.lifetime / 2).then(|| (Arc::clone(&c.token), c.generation))
    }

    /// The current token while it has not expired.
    fn valid(&self) -> Option<Token> {
        let cur = self.current.lock();
        let c = cur.as_ref()?;
        (c.obtained.elapsed() < c.lifetime).then(|| (Arc::clone(&c.token), c.generation))
    }

    /// A token for the next request: the current one while fresh, else a new one from
    /// `login`. When a renewal fails and the current token has not expired yet, the current one
    /// is used (a short outage of the token endpoint must not stop the store).
    pub async fn get<F, Fut>(&self, login: F) -> Result<Token, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued, StoreError>>,
    {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _one_login = self.login.lock().await;
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        match login().await {
            Ok(issued) => {
                let generation = {
                    let mut g = self.generation.lock();
                    *g += 1;
                    *g
                };
                let token = Arc::new(issued.token);
                *self.current.lock() = Some(Current {
                    token: Arc::clone(&token),
                    obtained: Instant::now(),
                    lifetime: issued.lifetime.clamp(MIN_LIFETIME, MAX_LIFETIME),
                    generation,
                });
                Ok((token, generation))
            }
            Err(e) => match self.valid() {
                Some(t) if e.is_unavailable() => {
                    tracing::warn!(error = %e, "renewing the keystore token failed; using the current one");
                    Ok(t)
                }
                _ => Err(e),
            },
        }
    }

    /// Forgets the token of `generation` (the KMS refused it), unless a newer one replaced it.
    pub fn invalidate(&self, generation: u64) {
        let mut cur = self.current.lock();
        if cur.as_ref().is_some_and(|c| c.generation == generation) {
            *cur = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn issued(s: &str, secs: u64) -> Issued {
        Issued {
            token: Zeroizing::new(s.to_owned()),
            lifetime: Duration::from_secs(secs),
        }
    }

    #[tokio::test]
    async fn reuses_refreshes_and_invalidates() {
        let t = Tokens::new();
        let logins = AtomicUsize::new(0);
        let login = |s: &'static str| {
            logins.fetch_add(1, Ordering::SeqCst);
            async move { Ok(issued(s, 600)) }
        };
        let (a, g1) = t.get(|| login("a")).await.unwrap();
        let (b, _) = t.get(|| login("b")).await.unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("a", "a"));
        assert_eq!(logins.load(Ordering::SeqCst), 1);
        t.invalidate(g1);
        let (c, g2) = t.get(|| login("c")).await.unwrap();
        assert_eq!(c.as_str(), "c");
        // A stale invalidation does not drop the newer token.
        t.invalidate(g1);
        assert_eq!(t.get(|| login("d")).await.unwrap().1, g2);
    }

    #[tokio::test]
    async fn failed_renewal_keeps_a_valid_token() {
        let t = Tokens::new();
        t.get(|| async { Ok(issued("a", 20)) }).await.unwrap();
        // Age the token past half its life.
        if let Some(c) = t.current.lock().as_mut() {
            c.obtained -= Duration::from_secs(15);
        }
        let (a, _) = t
            .get(|| async { Err(StoreError::unavailable(true, "down")) })
            .await
            .unwrap();
        assert_eq!(a.as_str(), "a");
        // A refusal is not papered over.
        let e = t
            .get(|| async { Err(StoreError::Denied("no".into())) })
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Denied(_)));
    }
}
