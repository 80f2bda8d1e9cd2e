//! The requests of each operation for each target, and the set-up that makes them valid: keys
//! exist, and decrypt has a ciphertext per key that the server itself produced.

use crate::config::{limits, Config, Op, TargetKind, N_OPS};
use crate::transport::{Answer, Request, Transport};
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::Method;
use kes_client::path_escape;
use kes_types::b64;
use rand::RngCore;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The prepared requests: `requests[op.index()][key]`, empty for operations not in the mix.
#[derive(Debug, Default)]
pub struct Plan {
    pub target: Option<TargetKind>,
    pub key_names: Vec<String>,
    pub requests: [Vec<Request>; N_OPS],
    key_prefix: String,
    /// Random tag in the names of keys the create operation makes, so runs do not collide.
    run_tag: String,
}

impl Plan {
    pub fn request(&self, op: Op, key: usize) -> Option<&Request> {
        self.requests.get(op.index()).and_then(|v| v.get(key))
    }

    /// The request of one create operation: a fresh key name of its own, kept afterwards.
    pub fn create(&self, worker: usize, n: u64) -> Request {
        let name = format!("{}-{}-{worker}-{n}", self.key_prefix, self.run_tag);
        match self.target {
            Some(TargetKind::Openbao) => Request::post(
                format!("/v1/transit/keys/{}", path_escape(&name)),
                json_body(&json!({ "type": "aes256-gcm96" })),
            ),
            _ => Request::post(format!("/v1/key/create/{}", path_escape(&name)), None),
        }
    }

    /// The two requests of one create-delete operation, on a key name of its own.
    pub fn create_delete(&self, worker: usize, n: u64) -> (Request, Request) {
        let name = format!("{}-tmp-{worker}-{n}", self.key_prefix);
        (
            Request::post(format!("/v1/key/create/{}", path_escape(&name)), None),
            Request {
                method: Method::DELETE,
                path: format!("/v1/key/delete/{}", path_escape(&name)),
                body: None,
                json: false,
            },
        )
    }
}

fn json_body(v: &Value) -> Option<Bytes> {
    Some(Bytes::from(v.to_string()))
}

/// Key names must pass KES's rules with the longest suffix the generator adds.
pub fn check_key_prefix(prefix: &str) -> anyhow::Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 40
        && !prefix.starts_with('-')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        bail!("--key-prefix must be 1 to 40 characters of [0-9A-Za-z_-], not starting with '-'");
    }
    Ok(())
}

fn body_text(a: &Answer) -> String {
    let text = String::from_utf8_lossy(&a.body);
    let text = text.trim();
    let cut: String = text.chars().take(200).collect();
    cut
}

fn expect_ok(what: &str, a: &Answer) -> anyhow::Result<()> {
    if a.is_success() {
        Ok(())
    } else {
        bail!("{what}: server answered {} {}", a.status, body_text(a))
    }
}

async fn send(t: &Transport, req: &Request, what: &str) -> anyhow::Result<Answer> {
    t.send(0, req)
        .await
        .map_err(|f| anyhow!("{what}: {}: {}", f.kind, f.message))
}

/// Waits until the first endpoint answers at all (any status), for at most `cfg.wait`, so the
/// generator can be started together with the servers it measures.
async fn wait_reachable(cfg: &Config, t: &Transport) -> anyhow::Result<()> {
    let probe = match cfg.target {
        TargetKind::Kes => Request::get("/version".into()),
        TargetKind::Openbao => Request::get("/v1/sys/health".into()),
    };
    let deadline = Instant::now() + cfg.wait;
    // Bounded by the deadline and, should the clock misbehave, by a count.
    for _ in 0..100_000u32 {
        match t.send(0, &probe).await {
            Ok(_) => return Ok(()),
            Err(f) if Instant::now() >= deadline => {
                bail!("the server is not reachable: {}: {}", f.kind, f.message)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    bail!("the server is not reachable")
}

/// Creates the keys (if asked to) and prepares every request of the mix.
pub async fn prepare(cfg: &Config, t: &Transport) -> anyhow::Result<Plan> {
    check_key_prefix(&cfg.key_prefix)?;
    wait_reachable(cfg, t).await?;
    let names: Vec<String> = (0..cfg.keys.min(limits::MAX_KEYS))
        .map(|i| format!("{}-{i}", cfg.key_prefix))
        .collect();
    let needs_keys = cfg
        .mix
        .iter()
        .any(|(op, _)| !matches!(op, Op::CreateDelete | Op::Create));
    if cfg.create_keys && needs_keys {
        for name in &names {
            create_key(cfg.target, t, name).await?;
        }
    }

    let mut rng = rand::thread_rng();
    let mut plaintext = vec![0u8; cfg.plaintext_size];
    rng.fill_bytes(&mut plaintext);
    let plaintext = b64::encode(&plaintext);
    let context = b64::encode(&cfg.context);

    let mut plan = Plan {
        target: Some(cfg.target),
        key_names: names.clone(),
        key_prefix: cfg.key_prefix.clone(),
        run_tag: format!("c{:08x}", rng.next_u32()),
        ..Plan::default()
    };
    for (op, _) in &cfg.mix {
        let mut reqs = Vec::with_capacity(names.len());
        for name in &names {
            let n = path_escape(name);
            let req = match (cfg.target, op) {
                (_, Op::CreateDelete | Op::Create) => break,
                (TargetKind::Kes, Op::Generate) => {
                    Request::post(format!("/v1/key/generate/{n}"), generate_body(cfg))
                }
                (TargetKind::Kes, Op::Encrypt) => Request::post(
                    format!("/v1/key/encrypt/{n}"),
                    json_body(&if cfg.context.is_empty() {
                        json!({ "plaintext": plaintext })
                    } else {
                        json!({ "plaintext": plaintext, "context": context })
                    }),
                ),
                // kms-go sends HMAC as PUT without a Content-Type.
                (TargetKind::Kes, Op::Hmac) => Request {
                    method: Method::PUT,
                    path: format!("/v1/key/hmac/{n}"),
                    body: json_body(&json!({ "message": plaintext })),
                    json: false,
                },
                (TargetKind::Kes, Op::Describe) => Request::get(format!("/v1/key/describe/{n}")),
                (TargetKind::Kes, Op::Decrypt) => kes_decrypt_request(cfg, t, name).await?,
                (TargetKind::Openbao, Op::Generate) => Request::post(
                    format!("/v1/transit/datakey/plaintext/{n}"),
                    json_body(&json!({})),
                ),
                (TargetKind::Openbao, Op::Encrypt) => Request::post(
                    format!("/v1/transit/encrypt/{n}"),
                    json_body(&json!({ "plaintext": plaintext })),
                ),
                (TargetKind::Openbao, Op::Hmac) => Request::post(
                    format!("/v1/transit/hmac/{n}"),
                    json_body(&json!({ "input": plaintext })),
                ),
                (TargetKind::Openbao, Op::Describe) => {
                    Request::get(format!("/v1/transit/keys/{n}"))
                }
                (TargetKind::Openbao, Op::Decrypt) => bao_decrypt_request(t, name).await?,
            };
            reqs.push(req);
        }
        if let Some(slot) = plan.requests.get_mut(op.index()) {
            *slot = reqs;
        }
    }
    Ok(plan)
}

fn generate_body(cfg: &Config) -> Option<Bytes> {
    if cfg.context.is_empty() {
        None
    } else {
        json_body(&json!({ "context": b64::encode(&cfg.context) }))
    }
}

async fn create_key(target: TargetKind, t: &Transport, name: &str) -> anyhow::Result<()> {
    let n = path_escape(name);
    match target {
        TargetKind::Kes => {
            let a = send(
                t,
                &Request::post(format!("/v1/key/create/{n}"), None),
                "creating a key",
            )
            .await?;
            // An existing key (from an earlier run) is as good as a new one.
            if a.status == 400 && body_text(&a).contains("key already exists") {
                return Ok(());
            }
            expect_ok(&format!("creating key '{name}'"), &a)
        }
        TargetKind::Openbao => {
            let a = send(
                t,
                &Request::post(
                    format!("/v1/transit/keys/{n}"),
                    json_body(&json!({ "type": "aes256-gcm96" })),
                ),
                "creating a transit key",
            )
            .await?;
            expect_ok(&format!("creating transit key '{name}'"), &a)
        }
    }
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Generates a data key and checks that decrypting its ciphertext gives its plaintext back,
/// so a run never measures a server that answers decrypt with garbage.
async fn kes_decrypt_request(cfg: &Config, t: &Transport, name: &str) -> anyhow::Result<Request> {
    let n = path_escape(name);
    let what = format!("preparing a ciphertext for key '{name}'");
    let a = send(
        t,
        &Request::post(format!("/v1/key/generate/{n}"), generate_body(cfg)),
        &what,
    )
    .await?;
    expect_ok(&what, &a)?;
    let v: Value = serde_json::from_slice(&a.body).with_context(|| what.clone())?;
    let (Some(plaintext), Some(ciphertext)) =
        (field(&v, &["plaintext"]), field(&v, &["ciphertext"]))
    else {
        bail!("{what}: the generate answer has no plaintext or ciphertext");
    };
    let body = if cfg.context.is_empty() {
        json!({ "ciphertext": ciphertext })
    } else {
        json!({ "ciphertext": ciphertext, "context": b64::encode(&cfg.context) })
    };
    let req = Request::post(format!("/v1/key/decrypt/{n}"), json_body(&body));
    let d = send(t, &req, &what).await?;
    expect_ok(&what, &d)?;
    let v: Value = serde_json::from_slice(&d.body).with_context(|| what.clone())?;
    if field(&v, &["plaintext"]) != Some(plaintext) {
        bail!("{what}: decrypt did not return the generated plaintext");
    }
    Ok(req)
}

async fn bao_decrypt_request(t: &Transport, name: &str) -> anyhow::Result<Request> {
    let n = path_escape(name);
    let what = format!("preparing a ciphertext for transit key '{name}'");
    let a = send(
        t,
        &Request::post(
            format!("/v1/transit/datakey/plaintext/{n}"),
            json_body(&json!({})),
        ),
        &what,
    )
    .await?;
    expect_ok(&what, &a)?;
    let v: Value = serde_json::from_slice(&a.body).with_context(|| what.clone())?;
    let (Some(plaintext), Some(ciphertext)) = (
        field(&v, &["data", "plaintext"]),
        field(&v, &["data", "ciphertext"]),
    ) else {
        bail!("{what}: the datakey answer has no plaintext or ciphertext");
    };
    let req = Request::post(
        format!("/v1/transit/decrypt/{n}"),
        json_body(&json!({ "ciphertext": ciphertext })),
    );
    let d = send(t, &req, &what).await?;
    expect_ok(&what, &d)?;
    let v: Value = serde_json::from_slice(&d.body).with_context(|| what.clone())?;
    if field(&v, &["data", "plaintext"]) != Some(plaintext) {
        bail!("{what}: decrypt did not return the generated plaintext");
    }
    Ok(req)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn key_prefix_rules() {
        check_key_prefix("kes-bench").unwrap();
        check_key_prefix("a_b-1").unwrap();
        for bad in ["", "-a", "a/b", "a.b", &"x".repeat(41)] {
            assert!(check_key_prefix(bad).is_err(), "{bad}");
        }
        // The longest generated name stays within KES's 80 bytes.
        let plan = Plan {
            key_prefix: "x".repeat(40),
            ..Plan::default()
        };
        let (create, _) = plan.create_delete(4095, u64::MAX);
        let name = create.path.trim_start_matches("/v1/key/create/");
        assert!(name.len() <= 80, "{}", name.len());
        let plan = Plan {
            key_prefix: "x".repeat(40),
            run_tag: "cffffffff".into(),
            target: Some(TargetKind::Kes),
            ..Plan::default()
        };
        let create = plan.create(4095, u64::MAX);
        let name = create.path.trim_start_matches("/v1/key/create/");
        assert!(name.len() <= 80, "{}", name.len());
        assert_ne!(plan.create(1, 1).path, plan.create(1, 2).path);
        assert_ne!(plan.create(1, 1).path, plan.create(2, 1).path);
    }
}
