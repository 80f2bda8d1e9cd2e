//! Transit wrapping: values sealed by a Vault transit key before they are stored, as KES does.

use super::*;

/// A transit ciphertext, `vault:v<N>:…`. KES writes `v1`; later key versions appear after a
/// rotation of the transit key and decrypt the same way.
pub(crate) fn is_transit_ciphertext(value: &str) -> bool {
    value
        .strip_prefix("vault:v")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(version, _)| {
            !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())
        })
}

impl Inner {
    /// The stored string for `value`: the value itself, or its transit ciphertext.
    pub(crate) async fn wrap(&self, value: &[u8]) -> Result<String, StoreError> {
        let Some((engine, key)) = self.transit.clone() else {
            return String::from_utf8(value.to_vec()).map_err(|_| {
                StoreError::Invalid("vault stores text and the value is not UTF-8".into())
            });
        };
        let plaintext = base64::engine::general_purpose::STANDARD.encode(value);
        let out = self
            .run(Op::Write, move |c| {
                let (engine, key, plaintext) = (engine.clone(), key.clone(), plaintext.clone());
                Box::pin(async move {
                    vaultrs::transit::data::encrypt(&c, &engine, &key, &plaintext, None).await
                })
            })
            .await
            .map_err(|e| match e {
                // Encrypting has no side effect, so it may always be retried; and a missing
                // transit key is a configuration problem, not a missing entry.
                StoreError::NotFound => {
                    StoreError::unavailable(false, "vault transit key not found")
                }
                other => other,
            })?;
        Ok(out.ciphertext)
    }

    /// The value for a stored string, decrypting transit ciphertexts.
    pub(crate) async fn unwrap(&self, stored: String) -> Result<Vec<u8>, StoreError> {
        if !is_transit_ciphertext(&stored) {
            return Ok(stored.into_bytes());
        }
        let Some((engine, key)) = self.transit.clone() else {
            return Err(StoreError::Invalid(
                "the entry is wrapped by vault transit, but no transit key is configured".into(),
            ));
        };
        let stored = Arc::new(stored);
        let out = self
            .run(Op::Read, move |c| {
                let (engine, key, ct) = (engine.clone(), key.clone(), Arc::clone(&stored));
                Box::pin(async move {
                    // Transit answers 400 for a ciphertext it cannot decrypt: an answer about
                    // the entry, kept apart from failures of the request.
                    match vaultrs::transit::data::decrypt(&c, &engine, &key, &ct, None).await {
                        Ok(out) => Ok(Ok(out)),
                        Err(e) => bad_request(e).map(Err),
                    }
                })
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    StoreError::unavailable(false, "vault transit key not found")
                }
                other => other,
            })?
            .map_err(|message| {
                StoreError::Invalid(format!("vault transit cannot decrypt the entry: {message}"))
            })?;
        let plaintext = Zeroizing::new(out.plaintext);
        base64::engine::general_purpose::STANDARD
            .decode(plaintext.as_bytes())
            .map_err(|e| StoreError::Invalid(format!("vault transit returned invalid base64: {e}")))
    }
}
