//! Keystores on KMSes reached over their REST APIs, each storing keys exactly where and how
//! MinIO KES stores them, so a KES deployment keeps its `keystore:` section and its keys: GCP
//! Secret Manager (`gcp`), Azure Key Vault (`azure`), Fortanix DSM (`fortanix`), Thales
//! CipherTrust Manager / Gemalto KeySecure (`keysecure`), Entrust KeyControl (`entrust`), and Bitwarden Secrets Manager
//! (`bitwarden`), which KES never had.
//!
//! One crate rather than one per backend: the backends share everything but their API
//! mapping (the HTTPS client with its CA option, bounded retries honouring `Retry-After`, the
//! classification of failures into [`kes_keystore::StoreError`], access tokens renewed at half
//! their life), and the server depends on one crate. Each backend is a module behind a cargo
//! feature of the same name, all on by default, so a build can leave out the ones it does not
//! need. No cloud SDK is used: every backend speaks plain HTTPS through `reqwest`.
//!
//! Every store is built by an async `connect`, which validates the configuration and logs in
//! once: refused credentials are [`kes_keystore::StoreError::Denied`] (the server stops with
//! that message), an unreachable KMS is [`kes_keystore::StoreError::Unavailable`] (the server
//! starts and opens the store once the KMS answers).

// Without any backend the shared plumbing has no user.
#![cfg_attr(
    not(any(
        feature = "gcp",
        feature = "azure",
        feature = "fortanix",
        feature = "keysecure",
        feature = "entrust",
        feature = "bitwarden"
    )),
    allow(dead_code, unused_imports)
)]

mod http;
mod token;

#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "bitwarden")]
pub mod bitwarden;
#[cfg(feature = "fortanix")]
pub mod fortanix;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(feature = "entrust")]
pub mod keycontrol;
#[cfg(feature = "keysecure")]
pub mod keysecure;

pub use http::{
    Limits, DEFAULT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_REQUEST_TIMEOUT, MAX_RESPONSE_LEN,
};
