//! A [`KeyStore`] on AWS Secrets Manager, storing each key exactly as MinIO KES does (its
//! `internal/keystore/aws`): one secret per key, named by the key, holding the value as
//! `SecretString`, optionally encrypted with a customer KMS key.
//!
//! * Create is `CreateSecret{Name, SecretString, KmsKeyId?}`, atomic in Secrets Manager;
//!   `ResourceExistsException` is [`StoreError::AlreadyExists`]. KES only stores ASCII text;
//!   a value that is not UTF-8 goes into `SecretBinary`, which KES reads as well.
//! * Get is `GetSecretValue`, reading `SecretString` or `SecretBinary`.
//! * Delete is `DeleteSecret{ForceDeleteWithoutRecovery: true}`, after a `DescribeSecret`
//!   that turns a missing secret into [`StoreError::NotFound`] (the forced delete itself
//!   succeeds for missing secrets). Secrets Manager finishes a forced delete asynchronously, so on
//!   real AWS a create of the same name right after a delete can fail for a few seconds.
//! * List is `ListSecrets` over all pages (narrowed by a name filter when the prefix allows),
//!   then KES's common paging.
//! * Status is a `ListSecrets` of one entry, which checks reachability and credentials.
//!
//! Credentials: the configured access key, secret key and session token, or, when none is
//! set, the SDK's default chain (environment, shared config and credentials files, web
//! identity, ECS and EC2 instance metadata). The SDK's SSO and credential-process providers
//! are compiled out to keep the build small.
//!
//! Limits: every request attempt has a deadline, the SDK's standard retry mode retries
//! transient failures a bounded number of times (with the idempotency token CreateSecret
//! carries, so a retried create cannot collide with itself), and a whole operation has a
//! deadline ([`Limits`]).
//!
//! Wiring into the server:
//! ```ignore
//! KeystoreConfig::AwsSecretsManager(cfg) => Arc::new(AwsStore::connect(cfg).await?) as Arc<dyn KeyStore>,
//! ```

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use aws_sdk_secretsmanager::Client;
use kes_config::AwsConfig;
use kes_keystore::{page_from, KeyStore, ListPage, StoreError, StoreStatus, MAX_VALUE_LEN};
use std::fmt;
use std::time::{Duration, Instant};

/// Deadline of one request attempt.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of opening a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of one request, the first included, when failures are transient.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Largest secret Secrets Manager stores, in bytes.
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// Names per `ListSecrets` page, the API's maximum.
const LIST_PAGE_SIZE: i32 = 100;
/// Pages one listing may fetch: 100,000 secrets, so a listing always ends.
const MAX_LIST_PAGES: usize = 1000;
/// Longest secret name Secrets Manager accepts.
const MAX_NAME_LEN: usize = 512;

/// Time limits of an [`AwsStore`]. [`Limits::default`] is what [`AwsStore::connect`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of one request attempt ([`DEFAULT_ATTEMPT_TIMEOUT`]).
    pub attempt_timeout: Duration,
    /// Deadline of opening a connection ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Tries of a request with transient failures, at least 1 ([`DEFAULT_ATTEMPTS`]).
    pub attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

impl Limits {
    /// Deadline of one whole operation: every attempt plus the SDK's backoff between them
    /// (at most 20 s each in standard mode, usually well under a second).
    pub fn operation_timeout(&self) -> Duration {
        self.attempt_timeout * self.attempts + Duration::from_secs(2) * self.attempts
    }
}

/// A KES keystore on AWS Secrets Manager. Cheap to share behind an `Arc`.
pub struct AwsStore {
    client: Client,
    kms_key: Option<String>,
    endpoint: String,
}

impl fmt::Debug for AwsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsStore")
            .field("endpoint", &self.endpoint)
            .field("kms_key", &self.kms_key)
            .finish_non_exhaustive()
    }
}

/// Whether a failed request had side effects that forbid sending it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

fn invalid_config(message: impl fmt::Display) -> StoreError {
    StoreError::unavailable(
        false,
        format!("invalid aws keystore configuration: {message}"),
    )
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl AwsStore {
    /// Connects with the default [`Limits`]; see [`AwsStore::connect_with`].
    pub async fn connect(cfg: &AwsConfig) -> Result<AwsStore, StoreError> {
        Self::connect_with(cfg, Limits::default()).await
    }

    /// Builds the client. This sends no request (credentials from the default chain are
    /// resolved at the first call); use [`KeyStore::status`] to probe the service.
    pub async fn connect_with(cfg: &AwsConfig, limits: Limits) -> Result<AwsStore, StoreError> {
        let endpoint = cfg.endpoint.trim().trim_end_matches('/');
        if endpoint.is_empty() {
            return Err(invalid_config("endpoint is empty"));
        }
        // KES (aws-sdk-go v1) takes a bare host name and speaks HTTPS to it.
        let endpoint = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("https://{endpoint}")
        };
        let region = cfg.region.trim();
        if region.is_empty() {
            return Err(invalid_config("region is empty"));
        }
        let attempts = limits.attempts.max(1);
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(region.to_owned()))
            .endpoint_url(&endpoint)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(limits.connect_timeout)
                    .operation_attempt_timeout(limits.attempt_timeout)
                    .operation_timeout(limits.operation_timeout())
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(attempts));
        let access_key = non_empty(&cfg.access_key);
        let secret_key = non_empty(&cfg.secret_key);
        let session_token = non_empty(&cfg.session_token);
        match (access_key, secret_key) {
            (Some(ak), Some(sk)) => {
                loader = loader.credentials_provider(Credentials::new(
                    ak,
                    sk,
                    session_token.map(str::to_owned),
                    None,
                    "kes-config",
                ));
            }
            (None, None) if session_token.is_none() => {}
            _ => {
                return Err(invalid_config(
                    "credentials need both accesskey and secretkey, or none of the three",
                ))
            }
        }
        let sdk = loader.load().await;
        tracing::info!(%endpoint, region, kms_key = ?cfg.kms_key, "aws secrets manager keystore");
        Ok(AwsStore {
            client: Client::new(&sdk),
            kms_key: non_empty(&cfg.kms_key).map(str::to_owned),
            endpoint,
        })
    }
}

/// Classifies a failed SDK call by who failed and whether it may be sent again.
fn classify<E>(err: SdkError<E, HttpResponse>, op: Op) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let read = op == Op::Read;
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or_default();
            let message = format!(
                "secrets manager answered {status} {code}: {}",
                ctx.err().message().unwrap_or_default()
            );
            match code {
                "ResourceNotFoundException" => StoreError::NotFound,
                "ResourceExistsException" => StoreError::AlreadyExists,
                "AccessDeniedException"
                | "AccessDenied"
                | "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "IncompleteSignature"
                | "MissingAuthenticationToken"
                | "ExpiredToken"
                | "ExpiredTokenException" => StoreError::Denied(message),
                // The SDK already retried these; the next call of the server may try again.
                "ThrottlingException" | "Throttling" | "TooManyRequestsException" => {
                    StoreError::unavailable(true, message)
                }
                _ if status == 401 || status == 403 => StoreError::Denied(message),
                _ if status >= 500 => StoreError::unavailable(read, message),
                // Any other refusal (a disabled KMS key, a malformed request, a secret still
                // being deleted) is the keystore failing in a way retries do not fix.
                _ => StoreError::unavailable(false, message),
            }
        }
        SdkError::TimeoutError(_) => {
            StoreError::unavailable(read, "secrets manager did not answer in time")
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => StoreError::unavailable(
            read,
            format!("secrets manager unreachable: {}", DisplayErrorContext(&err)),
        ),
        // Building the request failed, e.g. no credentials found in the default chain.
        _ => StoreError::unavailable(
            false,
            format!(
                "secrets manager request failed: {}",
                DisplayErrorContext(&err)
            ),
        ),
    }
}

/// Whether the service-side name filter may narrow a listing: it matches prefixes without
/// regard to case, a superset of the exact prefix match applied afterwards, and accepts only
/// some characters (a leading `!` would negate it).
fn filterable_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 512
        && prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b'.'))
}

#[async_trait]
impl KeyStore for AwsStore {
    fn kind(&self) -> &'static str {
        "aws"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(StoreError::Invalid(format!("invalid key name '{name}'")));
        }
        if value.len() > MAX_VALUE_LEN.min(MAX_SECRET_LEN) {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds secrets manager's limit of {MAX_SECRET_LEN}",
                value.len()
            )));
        }
        let mut req = self
            .client
            .create_secret()
            .name(name)
            .set_kms_key_id(self.kms_key.clone());
        req = match std::str::from_utf8(value) {
            Ok(text) => req.secret_string(text),
            Err(_) => req.secret_binary(Blob::new(value)),
        };
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, Op::Write))
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(StoreError::NotFound);
        }
        let out = self
            .client
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| classify(e, Op::Read))?;
        let value = if let Some(s) = out.secret_string() {
            s.as_bytes().to_vec()
        } else if let Some(b) = out.secret_binary() {
            b.as_ref().to_vec()
        } else {
            return Err(StoreError::Invalid("the secret has no value".into()));
        };
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "the secret holds {} bytes, more than the limit of {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        Ok(value)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(StoreError::NotFound);
        }
        // A forced delete of a missing secret succeeds, so existence is checked first: KES
        // clients expect 404 for deleting a key that does not exist.
        self.client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| classify(e, Op::Read))?;
        self.client
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await
            .map(|_| ())
            // A forced delete sent twice ends the same way, so it may be retried like a read.
            .map_err(|e| classify(e, Op::Read))
    }

    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let filter = filterable_prefix(prefix).then(|| {
            Filter::builder()
                .key(FilterNameStringType::Name)
                .values(prefix)
                .build()
        });
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let out = self
                .client
                .list_secrets()
                .max_results(LIST_PAGE_SIZE)
                .set_filters(filter.clone().map(|f| vec![f]))
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| classify(e, Op::Read))?;
            names.extend(
                out.secret_list()
                    .iter()
                    .filter_map(|s| s.name())
                    .filter(|n| n.starts_with(prefix) && *n >= continue_at)
                    .map(str::to_owned),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => return Ok(page_from(names, prefix, continue_at, limit)),
            }
        }
        Err(StoreError::unavailable(
            false,
            format!("listing stopped after {MAX_LIST_PAGES} pages of secrets"),
        ))
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let start = Instant::now();
        self.client
            .list_secrets()
            .max_results(1)
            .send()
            .await
            .map_err(|e| classify(e, Op::Read))?;
        Ok(StoreStatus {
            latency: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_filter() {
        assert!(filterable_prefix("conf-0123-list-"));
        assert!(filterable_prefix("a"));
        for no in ["", "-a", "!a", "a b", "a*"] {
            assert!(!filterable_prefix(no), "{no:?}");
        }
    }

    #[test]
    fn operation_deadline_covers_all_attempts() {
        let l = Limits::default();
        assert!(l.operation_timeout() > l.attempt_timeout * l.attempts);
    }
}
