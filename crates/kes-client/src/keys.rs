//! The key API: create, import, describe, list, delete, and the crypto operations.

use super::*;

impl Client {
    /// `POST /v1/key/create/{name}`: the server generates the key.
    pub async fn create_key(&self, name: &str) -> Result<(), ClientError> {
        self.empty(Request {
            method: Method::POST,
            path: format!("/v1/key/create/{}", path_escape(name)),
            body: None,
            json: false,
            stream: false,
        })
        .await
    }

    /// `POST /v1/key/import/{name}` with the raw key bytes and a cipher name (`AES256`,
    /// `ChaCha20`, ...).
    pub async fn import_key(
        &self,
        name: &str,
        key: &[u8],
        cipher: &str,
    ) -> Result<(), ClientError> {
        let body = ImportBody {
            key: Bytes64(key.to_vec()),
            cipher,
        };
        let req = Request::with_json(
            Method::POST,
            format!("/v1/key/import/{}", path_escape(name)),
            &body,
        )?;
        self.empty(req).await
    }

    /// `GET /v1/key/describe/{name}`.
    pub async fn describe_key(&self, name: &str) -> Result<DescribeKeyResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/key/describe/{}", path_escape(name))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// One page of `GET /v1/key/list/{prefix}`.
    pub async fn list_keys(&self, prefix: &str) -> Result<ListKeysResponse, ClientError> {
        self.list_keys_page(prefix, "").await
    }

    /// One page of `GET /v1/key/list/{prefix}`, continuing at `continue_at` when not empty.
    pub async fn list_keys_page(
        &self,
        prefix: &str,
        continue_at: &str,
    ) -> Result<ListKeysResponse, ClientError> {
        let mut path = format!("/v1/key/list/{}", path_escape(prefix));
        if !continue_at.is_empty() {
            path.push_str("?continue_at=");
            path.push_str(&query_escape(continue_at));
        }
        self.json(Request::get(path), limits::MAX_RESPONSE).await
    }

    /// Every key name matching `prefix`, following `continue_at` until the server says done.
    pub async fn list_keys_all(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        let mut names = Vec::new();
        let mut continue_at = String::new();
        for _ in 0..limits::MAX_LIST_PAGES {
            let page = self.list_keys_page(prefix, &continue_at).await?;
            names.extend(page.names);
            if page.continue_at.is_empty() {
                return Ok(names);
            }
            if page.continue_at == continue_at {
                return Err(ClientError::Decode(format!(
                    "key listing does not advance past '{continue_at}'"
                )));
            }
            continue_at = page.continue_at;
        }
        Err(ClientError::Decode(format!(
            "key listing exceeded {} pages",
            limits::MAX_LIST_PAGES
        )))
    }

    /// `DELETE /v1/key/delete/{name}`.
    pub async fn delete_key(&self, name: &str) -> Result<(), ClientError> {
        self.empty(Request {
            method: Method::DELETE,
            path: format!("/v1/key/delete/{}", path_escape(name)),
            body: None,
            json: false,
            stream: false,
        })
        .await
    }

    /// `POST /v1/key/generate/{name}`: a new data key, in plaintext and sealed with `name`
    /// under the associated data `context`.
    pub async fn generate_key(
        &self,
        name: &str,
        context: &[u8],
    ) -> Result<GenerateResponse, ClientError> {
        let body = ContextBody {
            context: Bytes64(context.to_vec()),
        };
        let req = Request::with_json(
            Method::POST,
            format!("/v1/key/generate/{}", path_escape(name)),
            &body,
        )?;
        self.json(req, limits::MAX_RESPONSE).await
    }

    /// `POST /v1/key/encrypt/{name}`: the ciphertext of `plaintext`.
    pub async fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let body = EncryptBody {
            plaintext: Bytes64(plaintext.to_vec()),
            context: Bytes64(context.to_vec()),
        };
        let req = Request::with_json(
            Method::POST,
            format!("/v1/key/encrypt/{}", path_escape(name)),
            &body,
        )?;
        let resp: EncryptResponse = self.json(req, limits::MAX_RESPONSE).await?;
        Ok(resp.ciphertext.0)
    }

    /// `POST /v1/key/decrypt/{name}`: the plaintext of `ciphertext`.
    pub async fn decrypt(
        &self,
        name: &str,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let body = DecryptBody {
            ciphertext: Bytes64(ciphertext.to_vec()),
            context: Bytes64(context.to_vec()),
        };
        let req = Request::with_json(
            Method::POST,
            format!("/v1/key/decrypt/{}", path_escape(name)),
            &body,
        )?;
        let resp: DecryptResponse = self.json(req, limits::MAX_RESPONSE).await?;
        Ok(resp.plaintext.0)
    }

    /// `PUT /v1/key/hmac/{name}`: HMAC-SHA256 of `message` under the key's HMAC key. Sent
    /// without a Content-Type, as kms-go does.
    pub async fn hmac(&self, name: &str, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        let body = HmacBody {
            message: Bytes64(message.to_vec()),
        };
        let mut req = Request::with_json(
            Method::PUT,
            format!("/v1/key/hmac/{}", path_escape(name)),
            &body,
        )?;
        req.json = false;
        let resp: HmacResponse = self.json(req, limits::MAX_RESPONSE).await?;
        Ok(resp.hmac.0)
    }
}
