//! The HTTP side: the reqwest client with Vault's TLS settings, one vaultrs client per
//! request, and bounded retries of retryable failures.

use super::*;

/// A vaultrs client for one request: the shared connection pool with this request's token and
/// namespace. vaultrs keeps both in the client, so the store makes one per request rather than
/// locking a shared client while the token changes.
pub(crate) struct Call {
    pub(crate) http: rustify::clients::reqwest::Client,
    pub(crate) middle: EndpointMiddleware,
    pub(crate) settings: Arc<VaultClientSettings>,
}

impl vaultrs::client::Client for Call {
    fn http(&self) -> &rustify::clients::reqwest::Client {
        &self.http
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        &self.settings
    }

    fn set_token(&mut self, token: &str) {
        self.middle.token = token.to_owned();
    }
}

pub(crate) type CallFuture<T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send>>;

/// Separates Vault's `400 Bad Request` answers (their error texts) from every other failure.
pub(crate) fn bad_request(e: ClientError) -> Result<String, ClientError> {
    match e {
        ClientError::APIError { code: 400, errors } => Ok(errors.join("; ")),
        other => Err(other),
    }
}

/// The HTTPS client: rustls on ring, Vault's CA from `tls.ca` (else the system roots), and the
/// client certificate when configured. HTTP/1.1 only, since Vault requests are small and
/// independent.
pub(crate) fn http_client(
    cfg: &VaultConfig,
    limits: &Limits,
) -> Result<reqwest::Client, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.tls.ca {
        Some(ca) => {
            kes_tls::add_ca(&mut roots, ca).map_err(|e| invalid_config(format!("tls.ca: {e}")))?
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system store with one unparsable certificate must not break the others.
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(kes_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid_config(format!("tls: {e}")))?
        .with_root_certificates(roots);
    let mut tls = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(cert), Some(key)) => {
            let certs =
                kes_tls::load_certs(cert).map_err(|e| invalid_config(format!("tls.cert: {e}")))?;
            let key = kes_tls::load_key(key, None)
                .map_err(|e| invalid_config(format!("tls.key: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| invalid_config(format!("tls.cert/tls.key: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(invalid_config("tls.cert and tls.key must be set together")),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .timeout(limits.request_timeout)
        .connect_timeout(limits.connect_timeout)
        // A bounded idle pool: connections to a restarted Vault go stale, and a small pool
        // limits how many a request may find dead.
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(32)
        .build()
        .map_err(|e| invalid_config(format!("http client: {e}")))
}

impl Inner {
    pub(crate) fn call(&self, namespace: Option<&str>, token: &str) -> Call {
        Call {
            http: rustify::clients::reqwest::Client::new(&self.endpoint, self.reqwest.clone()),
            middle: EndpointMiddleware {
                token: token.to_owned(),
                version: "v1".to_owned(),
                wrap: None,
                namespace: namespace.map(str::to_owned),
            },
            settings: Arc::clone(&self.settings),
        }
    }

    pub(crate) fn current_token(&self) -> (Arc<Zeroizing<String>>, u64) {
        let state = self.token.read();
        (Arc::clone(&state.token), state.generation)
    }

    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(self.limits.attempts.saturating_sub(1))
            .with_jitter()
    }

    /// Runs one KV or transit request with bounded retries of retryable failures, and one new
    /// login if Vault refuses the current token.
    pub(crate) async fn run<T, F>(&self, op: Op, f: F) -> Result<T, StoreError>
    where
        T: Send,
        F: Fn(Call) -> CallFuture<T> + Send + Sync,
    {
        // A refused connection means nothing listens at the endpoint: Vault is down or
        // restarting, and a retry 100 ms later is refused as well. Failing at once lets the
        // server count the outage and serve from its replica instead of waiting out the
        // backoff; other failures (timeouts, a sealed Vault, 5xx) are retried as before.
        let refused = AtomicBool::new(false);
        (|| self.attempt(op, &f, &refused))
            .retry(self.backoff())
            .when(|e| {
                !refused.load(Ordering::Relaxed)
                    && matches!(
                        e,
                        StoreError::Unavailable {
                            retryable: true,
                            ..
                        }
                    )
            })
            .await
    }

    pub(crate) async fn attempt<T, F>(
        &self,
        op: Op,
        f: &F,
        refused: &AtomicBool,
    ) -> Result<T, StoreError>
    where
        F: Fn(Call) -> CallFuture<T>,
    {
        let (token, generation) = self.current_token();
        let err = match f(self.call(self.kv_namespace.as_deref(), &token)).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                refused.store(error::is_refused(&e), Ordering::Relaxed);
                classify(e, op)
            }
        };
        if !matches!(err, StoreError::Denied(_)) || matches!(self.login, Login::Token) {
            return Err(err);
        }
        // The token may have expired while renewal could not reach Vault: log in again and
        // retry once. A second 403 is a real refusal by Vault's policy.
        self.relogin(generation).await?;
        let (token, _) = self.current_token();
        f(self.call(self.kv_namespace.as_deref(), &token))
            .await
            .map_err(|e| classify(e, op))
    }
}
