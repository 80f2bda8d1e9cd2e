//! Spreading requests over several KES endpoints with kms-go's failover rules (spec 3.3).
//!
//! MinIO clusters are deployed against these rules, so they are reproduced rather than
//! improved: a localhost endpoint is preferred; otherwise a pass over all endpoints starts at a
//! random offset; a network error or a 5xx other than 501 benches the endpoint for 30 s and
//! moves on; a 4xx is final; after 30 s a single request may probe a benched endpoint; and if
//! a pass skipped every endpoint, one more pass ignores the benching.
//!
//! The bookkeeping ([`BalancerState`]) is pure and takes the current time as an argument, so
//! the rules are tested without sockets or sleeping.

use crate::endpoint::is_localhost;
use crate::error::ClientError;
use parking_lot::Mutex;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long an endpoint that failed is skipped.
pub const BENCH_TIME: Duration = Duration::from_secs(30);

/// Whether an endpoint may be used right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Not benched.
    Ready,
    /// Benched long enough ago that this request may probe it.
    Probe,
    /// Benched, or another request is already probing it.
    Benched,
}

#[derive(Clone, Debug)]
struct EndpointState {
    url: String,
    localhost: bool,
    benched_at: Option<Instant>,
    probing: bool,
}

/// The endpoints, localhost ones first, and which of them are benched.
#[derive(Clone, Debug)]
pub struct BalancerState {
    endpoints: Vec<EndpointState>,
}

impl BalancerState {
    /// Orders the (already normalised) endpoints: localhost first, the rest in the given order.
    pub fn new(endpoints: Vec<String>) -> Self {
        let mut endpoints: Vec<EndpointState> = endpoints
            .into_iter()
            .map(|url| EndpointState {
                localhost: is_localhost(&url),
                url,
                benched_at: None,
                probing: false,
            })
            .collect();
        endpoints.sort_by_key(|e| !e.localhost);
        Self { endpoints }
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The endpoints in balancing order.
    pub fn urls(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    pub fn url(&self, i: usize) -> Option<&str> {
        self.endpoints.get(i).map(|e| e.url.as_str())
    }

    pub fn is_localhost(&self, i: usize) -> bool {
        self.endpoints.get(i).is_some_and(|e| e.localhost)
    }

    /// Whether endpoint `i` may be used at `now`. Returning [`Availability::Probe`] reserves
    /// the probe: until [`bench`](Self::bench) or [`clear`](Self::clear) settles it, others
    /// see the endpoint as benched.
    pub fn availability(&mut self, i: usize, now: Instant) -> Availability {
        let Some(e) = self.endpoints.get_mut(i) else {
            return Availability::Benched;
        };
        match e.benched_at {
            None => Availability::Ready,
            Some(at) if now.saturating_duration_since(at) < BENCH_TIME => Availability::Benched,
            Some(_) if !e.probing => {
                e.probing = true;
                Availability::Probe
            }
            Some(_) => Availability::Benched,
        }
    }

    /// Benches endpoint `i` after a failure. A failed probe restarts the bench time; a failure
    /// of an endpoint that is already benched (a full pass) keeps the original time.
    pub fn bench(&mut self, i: usize, as_probe: bool, now: Instant) {
        if let Some(e) = self.endpoints.get_mut(i) {
            if e.benched_at.is_none() || as_probe {
                e.benched_at = Some(now);
            }
            if as_probe {
                e.probing = false;
            }
        }
    }

    /// Returns endpoint `i` to service after a success.
    pub fn clear(&mut self, i: usize) {
        if let Some(e) = self.endpoints.get_mut(i) {
            e.benched_at = None;
            e.probing = false;
        }
    }
}

/// The endpoint indices of one pass over `n` endpoints starting after `offset`, as kms-go
/// computes them: `(try + offset) % n` for `try` in `1..=n`.
pub fn pass_order(n: usize, offset: usize) -> impl Iterator<Item = usize> {
    (1..=n).map(move |t| (t + offset) % n.max(1))
}

/// The HTTP status of an answer, so the failover rules can be applied to real responses and
/// to scripted ones in tests.
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for reqwest::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl HasStatus for u16 {
    fn status_code(&self) -> u16 {
        *self
    }
}

/// Whether an answer makes the client try the next endpoint: any error (the endpoint gave no
/// answer), or a 5xx other than 501 (not implemented is a definitive answer).
fn fails_over<R: HasStatus>(result: &Result<R, ClientError>) -> bool {
    match result {
        Ok(r) => {
            let s = r.status_code();
            s >= 500 && s != 501
        }
        Err(_) => true,
    }
}

/// The shared, locked [`BalancerState`] and the send loop over it.
#[derive(Debug)]
pub struct LoadBalancer {
    state: Mutex<BalancerState>,
}

impl LoadBalancer {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            state: Mutex::new(BalancerState::new(endpoints)),
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.state.lock().urls()
    }

    pub fn len(&self) -> usize {
        self.state.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.lock().is_empty()
    }

    /// Sends one request through the endpoints. `attempt` performs the request against one
    /// endpoint URL (with its own per-endpoint retries) and returns the answer or the network
    /// error; `offset` is where the pass starts (random in production). The result is the
    /// first final answer, or else the last failure seen.
    pub async fn send<R, F, Fut>(&self, offset: usize, mut attempt: F) -> Result<R, ClientError>
    where
        R: HasStatus,
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<R, ClientError>>,
    {
        let n = self.len();
        if n == 0 {
            return Err(ClientError::Config("no server endpoint".into()));
        }
        if n == 1 {
            let url = self.state.lock().url(0).map(str::to_owned);
            return match url {
                Some(url) => attempt(url).await,
                None => Err(ClientError::Config("no server endpoint".into())),
            };
        }

        let mut last: Option<Result<R, ClientError>> = None;

        // A node on this host answers fastest and shares our fate, so it goes first.
        let local = {
            let mut s = self.state.lock();
            if s.is_localhost(0) {
                match s.availability(0, Instant::now()) {
                    Availability::Benched => None,
                    a => s.url(0).map(|u| (u.to_owned(), a == Availability::Probe)),
                }
            } else {
                None
            }
        };
        if let Some((url, probe)) = local {
            let result = attempt(url).await;
            if fails_over(&result) {
                self.state.lock().bench(0, probe, Instant::now());
                last = Some(result);
            } else {
                if probe {
                    self.state.lock().clear(0);
                }
                return result;
            }
        }

        let mut full_pass = false;
        loop {
            for i in pass_order(n, offset) {
                let (url, probe) = {
                    let mut s = self.state.lock();
                    let availability = s.availability(i, Instant::now());
                    if !full_pass && availability == Availability::Benched {
                        continue;
                    }
                    match s.url(i) {
                        Some(u) => (u.to_owned(), availability == Availability::Probe),
                        None => continue,
                    }
                };
                let result = attempt(url).await;
                if fails_over(&result) {
                    self.state.lock().bench(i, probe, Instant::now());
                    last = Some(result);
                    continue;
                }
                if probe || full_pass {
                    self.state.lock().clear(i);
                }
                return result;
            }
            // Every endpoint was skipped: rather than fail without trying, try them all once.
            if !full_pass && last.is_none() {
                full_pass = true;
                continue;
            }
            break;
        }
        last.unwrap_or_else(|| Err(ClientError::Transport("no server endpoint answered".into())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[test]
    fn localhost_sorts_first_and_order_is_kept() {
        let s = BalancerState::new(vec![
            "https://a:7373".into(),
            "https://b:7373".into(),
            "https://127.0.0.1:7373".into(),
            "https://c:7373".into(),
        ]);
        assert_eq!(
            s.urls(),
            vec![
                "https://127.0.0.1:7373",
                "https://a:7373",
                "https://b:7373",
                "https://c:7373"
            ]
        );
        assert!(s.is_localhost(0));
        assert!(!s.is_localhost(1));
    }

    #[test]
    fn pass_order_starts_after_offset_and_covers_all() {
        assert_eq!(pass_order(3, 0).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(pass_order(3, 2).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(pass_order(1, 0).collect::<Vec<_>>(), vec![0]);
        for n in 1..6 {
            for off in 0..n {
                let mut v: Vec<_> = pass_order(n, off).collect();
                v.sort_unstable();
                assert_eq!(v, (0..n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn bench_expires_into_a_single_probe() {
        let t0 = Instant::now();
        let mut s = BalancerState::new(vec!["https://a:1".into(), "https://b:1".into()]);
        assert_eq!(s.availability(0, t0), Availability::Ready);
        s.bench(0, false, t0);
        assert_eq!(
            s.availability(0, t0 + Duration::from_secs(29)),
            Availability::Benched
        );
        let later = t0 + Duration::from_secs(31);
        assert_eq!(s.availability(0, later), Availability::Probe);
        // Only one request probes at a time.
        assert_eq!(s.availability(0, later), Availability::Benched);
        // A failed probe restarts the bench time.
        s.bench(0, true, later);
        assert_eq!(
            s.availability(0, later + Duration::from_secs(29)),
            Availability::Benched
        );
        assert_eq!(
            s.availability(0, later + Duration::from_secs(30)),
            Availability::Probe
        );
        s.clear(0);
        assert_eq!(s.availability(0, later), Availability::Ready);
        // A failure of an already benched endpoint keeps its original bench time.
        s.bench(1, false, t0);
        s.bench(1, false, t0 + Duration::from_secs(20));
        assert_eq!(
            s.availability(1, t0 + Duration::from_secs(31)),
            Availability::Probe
        );
    }

    /// Scripted endpoints: each URL answers with the next status of its script, or a network
    /// error for 0; every call is recorded.
    #[derive(Clone, Default)]
    struct Script {
        answers: Arc<Mutex<HashMap<String, Vec<u16>>>>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Script {
        fn new(answers: &[(&str, &[u16])]) -> Self {
            let s = Self::default();
            for (url, a) in answers {
                s.answers.lock().insert((*url).to_owned(), a.to_vec());
            }
            s
        }

        fn attempt(&self) -> impl FnMut(String) -> std::future::Ready<Result<u16, ClientError>> {
            let me = self.clone();
            move |url: String| {
                me.calls.lock().push(url.clone());
                let mut answers = me.answers.lock();
                let status = answers
                    .get_mut(&url)
                    .and_then(|v| {
                        if v.len() > 1 {
                            Some(v.remove(0))
                        } else {
                            v.first().copied()
                        }
                    })
                    .unwrap_or(0);
                std::future::ready(if status == 0 {
                    Err(ClientError::Transport(format!("{url}: connection refused")))
                } else {
                    Ok(status)
                })
            }
        }

        fn take_calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock())
        }
    }

    const A: &str = "https://a:7373";
    const B: &str = "https://b:7373";
    const C: &str = "https://c:7373";
    const L: &str = "https://localhost:7373";

    fn new_lb(urls: &[&str]) -> LoadBalancer {
        LoadBalancer::new(urls.iter().map(|s| (*s).to_owned()).collect())
    }

    #[tokio::test]
    async fn client_errors_are_final() {
        let lb = new_lb(&[A, B, C]);
        let script = Script::new(&[(A, &[200]), (B, &[404]), (C, &[200])]);
        let r = lb.send(0, script.attempt()).await.unwrap();
        assert_eq!(r, 404);
        assert_eq!(script.take_calls(), vec![B]);
    }

    #[tokio::test]
    async fn server_errors_fail_over_and_bench() {
        let lb = new_lb(&[A, B, C]);
        let script = Script::new(&[(A, &[200]), (B, &[502]), (C, &[0])]);
        assert_eq!(lb.send(0, script.attempt()).await.unwrap(), 200);
        assert_eq!(script.take_calls(), vec![B, C, A]);
        // B and C are benched now: the next request goes straight to A.
        assert_eq!(lb.send(0, script.attempt()).await.unwrap(), 200);
        assert_eq!(script.take_calls(), vec![A]);
    }

    #[tokio::test]
    async fn not_implemented_is_final() {
        let lb = new_lb(&[A, B]);
        let script = Script::new(&[(A, &[200]), (B, &[501])]);
        assert_eq!(lb.send(0, script.attempt()).await.unwrap(), 501);
        assert_eq!(script.take_calls(), vec![B]);
    }

    #[tokio::test]
    async fn last_failure_is_returned_when_all_fail() {
        let lb = new_lb(&[A, B]);
        let script = Script::new(&[(A, &[503]), (B, &[0])]);
        let r = lb.send(1, script.attempt()).await;
        // offset 1: order A, B; B's network error is the last failure.
        assert_eq!(script.take_calls(), vec![A, B]);
        assert!(matches!(r, Err(ClientError::Transport(_))));

        let script = Script::new(&[(A, &[0]), (B, &[503])]);
        let lb2 = new_lb(&[A, B]);
        assert_eq!(lb2.send(1, script.attempt()).await.unwrap(), 503);
    }

    #[tokio::test]
    async fn full_pass_when_everything_is_benched() {
        let lb = new_lb(&[A, B]);
        let script = Script::new(&[(A, &[500, 200]), (B, &[500, 200])]);
        assert_eq!(lb.send(0, script.attempt()).await.unwrap(), 500);
        assert_eq!(script.take_calls(), vec![B, A]);
        // Both benched: one pass skips both, then a full pass ignores the bench.
        assert_eq!(lb.send(0, script.attempt()).await.unwrap(), 200);
        assert_eq!(script.take_calls(), vec![B]);
        // B answered in the full pass and is back in service; A is still benched.
        assert_eq!(lb.send(1, script.attempt()).await.unwrap(), 200);
        assert_eq!(script.take_calls(), vec![B]);
    }

    #[tokio::test]
    async fn localhost_goes_first_then_random_pass() {
        let lb = new_lb(&[A, L, B]);
        let script = Script::new(&[(A, &[200]), (L, &[200]), (B, &[200])]);
        for offset in 0..3 {
            assert_eq!(lb.send(offset, script.attempt()).await.unwrap(), 200);
            assert_eq!(script.take_calls(), vec![L]);
        }
        // A failing localhost is benched and the pass continues over the others.
        let script = Script::new(&[(A, &[200]), (L, &[0]), (B, &[200])]);
        assert_eq!(lb.send(0, script.attempt()).await.unwrap(), 200);
        assert_eq!(script.take_calls(), vec![L, A]);
        assert_eq!(lb.send(1, script.attempt()).await.unwrap(), 200);
        assert_eq!(script.take_calls(), vec![B]);
    }

    #[tokio::test]
    async fn single_endpoint_is_used_directly() {
        let lb = new_lb(&[A]);
        let script = Script::new(&[(A, &[500])]);
        for _ in 0..2 {
            assert_eq!(lb.send(0, script.attempt()).await.unwrap(), 500);
            assert_eq!(script.take_calls(), vec![A]);
        }
        let empty = LoadBalancer::new(vec![]);
        assert!(matches!(
            empty.send(0, script.attempt()).await,
            Err(ClientError::Config(_))
        ));
    }
}
