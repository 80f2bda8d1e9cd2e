//! Logging in to Vault (token, AppRole, Kubernetes), the token's lease and its renewal.

use super::*;

/// How the store gets a token.
pub(crate) enum Login {
    /// A fixed token; renewed while renewable, never replaced.
    Token,
    AppRole {
        namespace: Option<String>,
        engine: String,
        role_id: Zeroizing<String>,
        secret_id: Zeroizing<String>,
    },
    Kubernetes {
        namespace: Option<String>,
        engine: String,
        role: String,
        jwt: Jwt,
    },
}

pub(crate) enum Jwt {
    Inline(Zeroizing<String>),
    /// Re-read at every login, because service-account tokens rotate.
    File(PathBuf),
}

impl Login {
    pub(crate) fn namespace(&self) -> Option<&str> {
        match self {
            Login::Token => None,
            Login::AppRole { namespace, .. } | Login::Kubernetes { namespace, .. } => {
                namespace.as_deref()
            }
        }
    }
}

/// The current token and how many logins produced it, so concurrent callers that all saw a
/// token expire log in only once.
pub(crate) struct TokenState {
    pub(crate) token: Arc<Zeroizing<String>>,
    pub(crate) generation: u64,
}

/// A token and its lease, as a login or renewal returns it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub(crate) ttl: Duration,
    pub(crate) renewable: bool,
}

impl Lease {
    pub(crate) fn of(auth: &AuthInfo) -> Self {
        Lease {
            ttl: Duration::from_secs(auth.lease_duration),
            renewable: auth.renewable,
        }
    }
}

impl Inner {
    /// Logs in unless another caller already did since `seen` was the current generation.
    pub(crate) async fn relogin(&self, seen: u64) -> Result<(), StoreError> {
        let _guard = self.login_lock.lock().await;
        if self.token.read().generation != seen {
            return Ok(());
        }
        self.login_now().await.map(|_| ())
    }

    /// Logs in with the configured method (with bounded retries) and installs the new token.
    pub(crate) async fn login_now(&self) -> Result<Lease, StoreError> {
        let auth = (|| self.login_once())
            .retry(self.backoff())
            .when(|e| {
                matches!(
                    e,
                    StoreError::Unavailable {
                        retryable: true,
                        ..
                    }
                )
            })
            .await?;
        check_header("token from vault", &auth.client_token).map_err(|_| {
            StoreError::Invalid("vault issued a token that is not header-safe".into())
        })?;
        let lease = Lease::of(&auth);
        let mut state = self.token.write();
        state.token = Arc::new(Zeroizing::new(auth.client_token.clone()));
        state.generation += 1;
        Ok(lease)
    }

    pub(crate) async fn login_once(&self) -> Result<AuthInfo, StoreError> {
        let call = self.call(self.auth_namespace.as_deref(), "");
        let result = match &self.login {
            Login::Token => {
                return Err(StoreError::Denied(
                    "the vault token was refused and no login method is configured".into(),
                ))
            }
            Login::AppRole {
                engine,
                role_id,
                secret_id,
                ..
            } => vaultrs::auth::approle::login(&call, engine, role_id, secret_id).await,
            Login::Kubernetes {
                engine, role, jwt, ..
            } => {
                let jwt = match jwt {
                    Jwt::Inline(j) => j.clone(),
                    Jwt::File(path) => {
                        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                            StoreError::unavailable(
                                false,
                                format!("reading the kubernetes jwt '{}': {e}", path.display()),
                            )
                        })?;
                        Zeroizing::new(text.trim().to_owned())
                    }
                };
                vaultrs::auth::kubernetes::login(&call, engine, role, &jwt).await
            }
        };
        result.map_err(|e| match bad_request(e) {
            // Vault answers a login with wrong credentials with 400.
            Ok(message) => StoreError::Denied(format!("vault refused the login: {message}")),
            Err(e) => match classify(e, Op::Read) {
                // A missing auth mount is the configuration's fault, not a missing key.
                StoreError::NotFound => StoreError::Denied("vault auth method not found".into()),
                other => other,
            },
        })
    }

    /// The static token's lease, which also proves the token is valid. Read without vaultrs,
    /// whose lookup type requires fields that some tokens (OpenBao's root tokens) lack.
    pub(crate) async fn lookup_self(&self) -> Result<Lease, StoreError> {
        let (token, _) = self.current_token();
        let url = format!("{}/v1/auth/token/lookup-self", self.endpoint);
        let info: Value = (|| async {
            let mut req = self
                .reqwest
                .get(&url)
                .header("X-Vault-Token", token.as_str());
            if let Some(ns) = &self.auth_namespace {
                req = req.header("X-Vault-Namespace", ns.as_str());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| error::from_reqwest(e, Op::Read))?;
            let code = resp.status().as_u16();
            if code != 200 {
                return Err(match error::from_status(code, "token lookup", Op::Read) {
                    StoreError::NotFound => {
                        StoreError::Denied("vault does not know the token".into())
                    }
                    other => other,
                });
            }
            resp.json::<Value>()
                .await
                .map_err(|e| StoreError::Invalid(format!("token lookup: {e}")))
        })
        .retry(self.backoff())
        .when(|e| {
            matches!(
                e,
                StoreError::Unavailable {
                    retryable: true,
                    ..
                }
            )
        })
        .await?;
        let data = &info["data"];
        Ok(Lease {
            ttl: Duration::from_secs(data["ttl"].as_u64().unwrap_or(0)),
            renewable: data["renewable"].as_bool().unwrap_or(false),
        })
    }

    pub(crate) async fn renew_self(&self) -> Result<Lease, StoreError> {
        let (token, _) = self.current_token();
        let call = self.call(self.auth_namespace.as_deref(), &token);
        let auth = vaultrs::token::renew_self(&call, None)
            .await
            .map_err(|e| classify(e, Op::Write))?;
        Ok(Lease::of(&auth))
    }
}

/// KES: an auth namespace of `/` is the root namespace, an empty one is the KV namespace.
pub(crate) fn auth_namespace(configured: &str, kv: &Option<String>) -> Option<String> {
    match configured.trim() {
        "" => kv.clone(),
        other => namespace(other),
    }
}

/// Keeps the token alive: renews at 80% of its TTL and logs in again when renewal fails or
/// the token approaches its maximum TTL (Vault then grants less than half the usual TTL).
/// Ends when the store is dropped or the token never expires.
pub(crate) async fn renew_loop(store: Weak<Inner>, mut lease: Lease) {
    // The TTL a fresh login grants; renewals that return much less mean max_ttl is near.
    let mut full_ttl = lease.ttl;
    let mut delay = lease.ttl.mul_f64(0.8);
    let mut failures: u32 = 0;
    loop {
        tokio::time::sleep(delay).await;
        let Some(inner) = store.upgrade() else { return };
        if lease.renewable {
            match inner.renew_self().await {
                Ok(renewed) if renewed.ttl >= full_ttl / 2 && !renewed.ttl.is_zero() => {
                    tracing::debug!(ttl_s = renewed.ttl.as_secs(), "renewed the vault token");
                    lease = renewed;
                    delay = renewed.ttl.mul_f64(0.8);
                    failures = 0;
                    continue;
                }
                Ok(renewed) => {
                    tracing::debug!(
                        ttl_s = renewed.ttl.as_secs(),
                        "vault token near its max ttl"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "renewing the vault token failed"),
            }
        }
        if matches!(inner.login, Login::Token) {
            tracing::warn!("the static vault token can no longer be renewed");
            return;
        }
        let _guard = inner.login_lock.lock().await;
        match inner.login_now().await {
            Ok(fresh) => {
                tracing::debug!(ttl_s = fresh.ttl.as_secs(), "logged in to vault again");
                lease = fresh;
                full_ttl = fresh.ttl;
                failures = 0;
                if fresh.ttl.is_zero() {
                    return;
                }
                delay = fresh.ttl.mul_f64(0.8);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                // Try again soon, but never hammer an unreachable Vault.
                delay = Duration::from_secs(1u64 << failures.min(5)).min(MAX_LOGIN_RETRY_DELAY);
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "vault login failed");
                lease.renewable = false;
            }
        }
    }
}
