//! Policies, identities, the cluster extensions and the log streams.

use super::*;

impl Client {
    /// `PUT /v1/policy/write/{name}` (admin): creates or replaces a policy, on every node.
    pub async fn write_policy(
        &self,
        name: &str,
        allow: &[String],
        deny: &[String],
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({"allow": allow, "deny": deny});
        self.admin(
            Method::PUT,
            format!("/v1/policy/write/{}", path_escape(name)),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// `PUT /v1/policy/assign/{name}` (admin): assigns an identity to a policy.
    pub async fn assign_policy(&self, name: &str, identity: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({"identity": identity});
        self.admin(
            Method::PUT,
            format!("/v1/policy/assign/{}", path_escape(name)),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// `DELETE /v1/policy/delete/{name}` (admin): deletes a policy and its assignments.
    pub async fn delete_policy(&self, name: &str) -> Result<(), ClientError> {
        self.admin(
            Method::DELETE,
            format!("/v1/policy/delete/{}", path_escape(name)),
            None,
        )
        .await
        .map(drop)
    }

    /// `DELETE /v1/identity/delete/{identity}` (admin): removes an identity's assignment.
    pub async fn delete_identity(&self, identity: &str) -> Result<(), ClientError> {
        self.admin(
            Method::DELETE,
            format!("/v1/identity/delete/{}", path_escape(identity)),
            None,
        )
        .await
        .map(drop)
    }

    /// `GET /v1/cluster/status` (admin).
    pub async fn cluster_status(&self) -> Result<kes_types::wire::ClusterStatus, ClientError> {
        let b = self
            .admin(Method::GET, "/v1/cluster/status".into(), None)
            .await?;
        serde_json::from_slice(&b).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /v1/cluster/metrics` (admin): Prometheus text.
    pub async fn cluster_metrics(&self) -> Result<String, ClientError> {
        let b = self
            .admin(Method::GET, "/v1/cluster/metrics".into(), None)
            .await?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// `PUT /v1/cluster/add/{id}` (admin): adds a node as a learner and, if `voter`, promotes it.
    pub async fn cluster_add(
        &self,
        id: u64,
        address: &str,
        voter: bool,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({"address": address, "voter": voter});
        self.admin(Method::PUT, format!("/v1/cluster/add/{id}"), Some(body))
            .await
            .map(drop)
    }

    /// `DELETE /v1/cluster/remove/{id}` (admin).
    pub async fn cluster_remove(&self, id: u64) -> Result<(), ClientError> {
        self.admin(Method::DELETE, format!("/v1/cluster/remove/{id}"), None)
            .await
            .map(drop)
    }

    /// `PUT /v1/cluster/leader/{id}` (admin): asks node `id` to take over leadership.
    pub async fn cluster_transfer_leader(&self, id: u64) -> Result<(), ClientError> {
        self.admin(Method::PUT, format!("/v1/cluster/leader/{id}"), None)
            .await
            .map(drop)
    }

    /// `PUT /v1/cluster/snapshot` (admin): takes a snapshot on the node answering.
    pub async fn cluster_snapshot(&self) -> Result<(), ClientError> {
        self.admin(Method::PUT, "/v1/cluster/snapshot".into(), None)
            .await
            .map(drop)
    }

    /// `GET /v1/cluster/backup` (admin): a backup file of the replicated state, taken after the
    /// leader's read index (see `kes_state::Backup`).
    pub async fn cluster_backup(&self) -> Result<Vec<u8>, ClientError> {
        let resp = self.send(Request::get("/v1/cluster/backup".into())).await?;
        transport::read_limited(resp, limits::MAX_BACKUP_RESPONSE).await
    }

    /// `GET /v1/policy/describe/{name}`.
    pub async fn describe_policy(&self, name: &str) -> Result<DescribePolicyResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/policy/describe/{}", path_escape(name))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/policy/read/{name}`.
    pub async fn read_policy(&self, name: &str) -> Result<ReadPolicyResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/policy/read/{}", path_escape(name))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/policy/list/{pattern}`.
    pub async fn list_policies(&self, pattern: &str) -> Result<ListPoliciesResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/policy/list/{}", path_escape(pattern))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/identity/describe/{identity}`.
    pub async fn describe_identity(
        &self,
        identity: &str,
    ) -> Result<DescribeIdentityResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/identity/describe/{}", path_escape(identity))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/identity/list/{pattern}`.
    pub async fn list_identities(
        &self,
        pattern: &str,
    ) -> Result<ListIdentitiesResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/identity/list/{}", path_escape(pattern))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/identity/self/describe`: who the server thinks we are.
    pub async fn describe_self(&self) -> Result<SelfDescribeResponse, ClientError> {
        self.json(
            Request::get("/v1/identity/self/describe".into()),
            limits::MAX_RESPONSE,
        )
        .await
    }

    pub(crate) async fn log_stream<T>(&self, path: &str) -> Result<EventStream<T>, ClientError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let mut req = Request::get(path.into());
        req.stream = true;
        let resp = self.send(req).await?;
        let body = resp
            .bytes_stream()
            .map(|r| r.map_err(|e| ClientError::Transport(format!("log stream broke: {e}"))));
        Ok(ndjson(Box::pin(body)))
    }

    /// `GET /v1/log/audit`: audit events as the server produces them, until it closes the
    /// stream or the returned stream is dropped.
    pub async fn audit_log(&self) -> Result<EventStream<AuditEvent>, ClientError> {
        self.log_stream("/v1/log/audit").await
    }

    /// `GET /v1/log/error`: error-log events.
    pub async fn error_log(&self) -> Result<EventStream<ErrorEvent>, ClientError> {
        self.log_stream("/v1/log/error").await
    }
}
