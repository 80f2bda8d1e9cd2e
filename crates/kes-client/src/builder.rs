//! [`ClientBuilder`]: endpoints, the client certificate, trust and timeouts, checked when the
//! client is built.

use super::*;

/// Configures and builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    raw_endpoints: Vec<String>,
    cert: Option<ClientCert>,
    cert_sources: usize,
    trust: Trust,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    error: Option<ClientError>,
}

impl ClientBuilder {
    /// Starts from a list of endpoints; each is normalised with [`normalize_endpoint`].
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let raw_endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        let endpoints = raw_endpoints
            .iter()
            .filter_map(|e| normalize_endpoint(e))
            .collect();
        Self {
            endpoints,
            raw_endpoints,
            cert: None,
            cert_sources: 0,
            trust: Trust {
                system_roots: true,
                ..Trust::default()
            },
            timeout: None,
            connect_timeout: limits::CONNECT_TIMEOUT,
            error: None,
        }
    }

    /// Authenticates with a fresh self-signed certificate for the API key.
    pub fn api_key(mut self, key: &kes_crypto::ApiKey) -> Self {
        match kes_tls::certgen::api_key_certificate(key) {
            Ok(ck) => self.set_cert(ClientCert::Der {
                chain: vec![ck.cert_der],
                key: ck.key_der,
            }),
            Err(e) => {
                self.error = Some(ClientError::Config(format!(
                    "failed to create a certificate for the API key: {e}"
                )))
            }
        }
        self
    }

    /// Authenticates with a certificate and key held in memory.
    pub fn certified_key(mut self, ck: &kes_tls::certgen::CertifiedKey) -> Self {
        self.set_cert(ClientCert::Der {
            chain: vec![ck.cert_der.clone()],
            key: ck.key_der.clone(),
        });
        self
    }

    /// Authenticates with a PEM certificate file and a PEM private key file.
    pub fn cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.set_cert(ClientCert::Files {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    fn set_cert(&mut self, cert: ClientCert) {
        self.cert = Some(cert);
        self.cert_sources += 1;
    }

    /// Also trusts the certificates of a PEM file, or of every file in a directory.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.trust.ca_files.push(path.into());
        self
    }

    /// Also trusts the certificates of a PEM text.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.trust.ca_pems.push(pem.into());
        self
    }

    /// Whether the system's root certificates are trusted (default: yes).
    pub fn system_roots(mut self, on: bool) -> Self {
        self.trust.system_roots = on;
        self
    }

    /// Accepts any server certificate (development servers with self-signed certificates).
    pub fn insecure(mut self, on: bool) -> Self {
        self.trust.insecure = on;
        self
    }

    /// Limits each request, except the log streams, to `timeout` (default: no limit, as in
    /// kms-go).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Limits connection establishment (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Client, ClientError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.cert_sources > 1 {
            return Err(ClientError::Config(
                "an API key cannot be combined with a client certificate".into(),
            ));
        }
        if self.endpoints.is_empty() {
            return Err(ClientError::Config("no server endpoint".into()));
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let ok = reqwest::Url::parse(e)
                .map(|u| u.host_str().is_some_and(|h| !h.is_empty()))
                .unwrap_or(false);
            if !ok {
                let raw = self.raw_endpoints.get(i).map_or(e.as_str(), |s| s.trim());
                return Err(ClientError::Config(format!(
                    "invalid server endpoint '{raw}'"
                )));
            }
        }
        let tls = tls::client_config(&self.trust, self.cert.as_ref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(self.connect_timeout)
            .tcp_keepalive(limits::TCP_KEEPALIVE)
            .pool_idle_timeout(limits::POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(limits::POOL_MAX_IDLE_PER_HOST)
            .build()
            .map_err(|e| ClientError::Config(format!("failed to create HTTP client: {e}")))?;
        Ok(Client {
            http,
            lb: Arc::new(LoadBalancer::new(self.endpoints)),
            timeout: self.timeout,
        })
    }
}
