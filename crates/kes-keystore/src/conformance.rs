//! The behaviour every [`KeyStore`] must show, as a suite the tests of each store run: the
//! in-memory and filesystem stores here, and the Vault and AWS backends against real servers.
//!
//! The server relies on these properties and nothing more, so a store that passes can be swapped
//! for any other. Each check is a public function returning [`Failure`] on the first deviation;
//! [`run_all`] runs them all and panics with the check's name and the store's kind.
//!
//! The suite is safe against shared, long-lived backends: every run uses its own random name
//! prefix (`conf-<16 hex digits>-<check>-`), never lists or deletes outside it, and deletes what
//! it created even when a check fails. Names and, unless [`Options::binary_values`] says
//! otherwise, values are ASCII text, as KES itself stores.
//!
//! Deleting a missing name: the trait allows `Ok` from backends that cannot tell (Vault KV v1
//! deletes are idempotent), so the default [`Options`] accept `Ok` or `NotFound`;
//! [`Options::strict`] requires `NotFound`, for stores that can tell.

// Test-support code: a panic is how a failed suite reports.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use crate::{KeyStore, StoreError, MAX_LIST_PAGE, MAX_VALUE_LEN};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// What the suite may assume about a store.
#[derive(Clone, Debug)]
pub struct Options {
    /// Values may hold arbitrary bytes. Stores that keep text (Vault, AWS `SecretString`) set
    /// this to false; KES only ever stores ASCII, so they lose nothing.
    pub binary_values: bool,
    /// Length of the largest value stored, in bytes. [`MAX_VALUE_LEN`] by default; lower it for
    /// backends with smaller limits (AWS Secrets Manager: 64 KiB).
    pub large_value_len: usize,
    /// Require `NotFound` when deleting a missing name instead of also accepting `Ok`.
    pub delete_missing_is_not_found: bool,
    /// Number of tasks racing to create one name, and of distinct names created concurrently.
    pub concurrency: usize,
    /// Time limit of one check, so a hung backend fails the suite instead of stalling it.
    pub check_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            binary_values: true,
            large_value_len: MAX_VALUE_LEN,
            delete_missing_is_not_found: false,
            concurrency: 32,
            check_timeout: Duration::from_secs(120),
        }
    }
}

impl Options {
    /// The defaults, plus `NotFound` required for deletes of missing names.
    pub fn strict() -> Self {
        Self {
            delete_missing_is_not_found: true,
            ..Self::default()
        }
    }
}

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// Result of one check.
pub type CheckResult = Result<(), Failure>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(Failure(format!($($fmt)+)));
        }
    };
}

/// Turns a store error into a failure that says which call failed.
trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T, Failure>;
}

impl<T> Context<T> for Result<T, StoreError> {
    fn context(self, what: impl fmt::Display) -> Result<T, Failure> {
        self.map_err(|e| Failure(format!("{what}: unexpected error: {e} ({e:?})")))
    }
}

fn expect_not_found<T: fmt::Debug>(
    r: Result<T, StoreError>,
    what: impl fmt::Display,
) -> CheckResult {
    match r {
        Err(StoreError::NotFound) => Ok(()),
        other => Err(Failure(format!("{what}: expected NotFound, got {other:?}"))),
    }
}

fn expect_already_exists(r: Result<(), StoreError>, what: impl fmt::Display) -> CheckResult {
    match r {
        Err(StoreError::AlreadyExists) => Ok(()),
        other => Err(Failure(format!(
            "{what}: expected AlreadyExists, got {other:?}"
        ))),
    }
}

/// Runs every check with the default [`Options`] and panics on the first failure.
pub async fn run_all(store: Arc<dyn KeyStore>) {
    run_all_with(store, Options::default()).await;
}

/// Runs every check and panics on the first failure, after deleting what the run created.
pub async fn run_all_with(store: Arc<dyn KeyStore>, opts: Options) {
    let run = format!("conf-{:016x}-", rand::random::<u64>());
    let s: &dyn KeyStore = &*store;

    macro_rules! check {
        ($name:literal, |$p:ident| $fut:expr) => {{
            let $p = format!("{run}{}-", $name);
            let outcome = tokio::time::timeout(opts.check_timeout, $fut).await;
            settle(s, $name, &$p, outcome).await;
        }};
    }

    check!("status", |_p| status(s));
    check!("create-get", |p| create_then_get(s, &p));
    check!("create-existing", |p| create_existing(s, &p));
    check!("get-missing", |p| get_missing(s, &p));
    check!("delete", |p| delete_then_get(s, &p));
    check!("delete-missing", |p| delete_missing(
        s,
        &p,
        opts.delete_missing_is_not_found
    ));
    check!("list-prefix", |p| list_prefix(s, &p));
    check!("list-paging", |p| list_paging(s, &p));
    check!("list-empty", |p| list_empty(s, &p));
    if opts.binary_values {
        check!("binary-value", |p| binary_value(s, &p));
    }
    check!("large-value", |p| large_value(s, &p, opts.large_value_len));
    check!("create-race", |p| create_race(&store, &p, opts.concurrency));
    check!("create-distinct", |p| create_distinct(
        &store,
        &p,
        opts.concurrency
    ));
}

/// Cleans up after one check and reports its failure, if any.
async fn settle(
    store: &dyn KeyStore,
    check: &str,
    prefix: &str,
    outcome: Result<CheckResult, tokio::time::error::Elapsed>,
) {
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(f)) => Some(f),
        Err(_) => Some(Failure("timed out".into())),
    };
    // Sweep even after success: a check that stopped half-way through its own cleanup must not
    // leave entries on a shared backend.
    let leftovers = sweep(store, prefix).await;
    if let Some(f) = failure {
        panic!(
            "keystore conformance check `{check}` failed against the {} store: {f}",
            store.kind()
        );
    }
    if let Err(f) = leftovers {
        panic!(
            "keystore conformance check `{check}` could not clean up on the {} store: {f}",
            store.kind()
        );
    }
}

/// Deletes every name under `prefix`, best effort. Errors only when listing fails.
pub async fn sweep(store: &dyn KeyStore, prefix: &str) -> CheckResult {
    let mut continue_at = String::new();
    // Bounded, so a store whose listing never ends cannot hang the suite.
    for _ in 0..64 {
        let page = store
            .list(prefix, &continue_at, MAX_LIST_PAGE)
            .await
            .context(format_args!("list {prefix:?} while cleaning up"))?;
        for name in &page.names {
            let _ = store.delete(name).await;
        }
        if page.continue_at.is_empty() {
            return Ok(());
        }
        continue_at = page.continue_at;
    }
    Err(Failure(format!("listing {prefix:?} did not end")))
}

/// Every name under `prefix`, following `continue_at` with pages of `limit`, checking each
/// page's shape on the way.
pub async fn list_all(
    store: &dyn KeyStore,
    prefix: &str,
    limit: usize,
) -> Result<Vec<String>, Failure> {
    let mut all: Vec<String> = Vec::new();
    let mut continue_at = String::new();
    for _ in 0..1024 {
        let page = store
            .list(prefix, &continue_at, limit)
            .await
            .context(format_args!(
                "list {prefix:?} from {continue_at:?} limit {limit}"
            ))?;
        ensure!(
            page.names.len() <= limit.max(1),
            "list {prefix:?} limit {limit} returned {} names",
            page.names.len()
        );
        for name in &page.names {
            ensure!(
                name.starts_with(prefix),
                "list {prefix:?} returned {name:?}, which lacks the prefix"
            );
            ensure!(
                name.as_str() >= continue_at.as_str(),
                "list from {continue_at:?} returned the earlier name {name:?}"
            );
            if let Some(last) = all.last() {
                ensure!(
                    last < name,
                    "list {prefix:?} is not strictly sorted across pages: {last:?} then {name:?}"
                );
            }
            all.push(name.clone());
        }
        if page.continue_at.is_empty() {
            return Ok(all);
        }
        ensure!(
            !page.names.is_empty(),
            "list {prefix:?} returned an empty page that continues at {:?}",
            page.continue_at
        );
        ensure!(
            page.names.last().is_some_and(|l| *l < page.continue_at),
            "list {prefix:?}: continue_at {:?} does not follow the page's last name {:?}",
            page.continue_at,
            page.names.last()
        );
        continue_at = page.continue_at;
    }
    Err(Failure(format!("listing {prefix:?} did not end")))
}

/// A deterministic ASCII value of `len` bytes from the base64 alphabet, different per `seed`.
fn text_value(seed: u64, len: usize) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    // xorshift64: enough to make values differ byte by byte so a store that mixes up
    // offsets or truncates cannot pass by accident.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize]
        })
        .collect()
}

/// The store answers its health probe.
pub async fn status(store: &dyn KeyStore) -> CheckResult {
    store.status().await.context("status")?;
    Ok(())
}

/// A created value reads back byte for byte.
pub async fn create_then_get(store: &dyn KeyStore, prefix: &str) -> CheckResult {
    let name = format!("{prefix}a");
    let value = text_value(1, 100);
    store
        .create(&name, &value)
        .await
        .context(format_args!("create {name:?}"))?;
    let got = store
        .get(&name)
        .await
        .context(format_args!("get {name:?}"))?;
    ensure!(
        got == value,
        "get {name:?} returned other bytes than created"
    );
    store
        .delete(&name)
        .await
        .context(format_args!("delete {name:?}"))?;
    Ok(())
}

/// Creating an existing name fails with `AlreadyExists` and leaves the first value in place.
pub async fn create_existing(store: &dyn KeyStore, prefix: &str) -> CheckResult {
    let name = format!("{prefix}a");
    let first = text_value(2, 64);
    let second = text_value(3, 64);
    store
        .create(&name, &first)
        .await
        .context(format_args!("create {name:?}"))?;
    expect_already_exists(
        store.create(&name, &second).await,
        format_args!("second create of {name:?}"),
    )?;
    let got = store
        .get(&name)
        .await
        .context(format_args!("get {name:?}"))?;
    ensure!(
        got == first,
        "a failed create of {name:?} changed its value"
    );
    store
        .delete(&name)
        .await
        .context(format_args!("delete {name:?}"))?;
    Ok(())
}

/// Reading a name that was never created is `NotFound`.
pub async fn get_missing(store: &dyn KeyStore, prefix: &str) -> CheckResult {
    let name = format!("{prefix}missing");
    expect_not_found(store.get(&name).await, format_args!("get {name:?}"))
}

/// A deleted name reads as `NotFound` and can be created again.
pub async fn delete_then_get(store: &dyn KeyStore, prefix: &str) -> CheckResult {
    let name = format!("{prefix}a");
    store
        .create(&name, &text_value(4, 64))
        .await
        .context(format_args!("create {name:?}"))?;
    store
        .delete(&name)
        .await
        .context(format_args!("delete {name:?}"))?;
    expect_not_found(
        store.get(&name).await,
        format_args!("get {name:?} after delete"),
    )?;
    // KES lets an operator delete a key and create a new one under the same name.
    let again = text_value(5, 64);
    store
        .create(&name, &again)
        .await
        .context(format_args!("create {name:?} after delete"))?;
    let got = store
        .get(&name)
        .await
        .context(format_args!("get {name:?}"))?;
    ensure!(got == again, "re-created {name:?} reads back other bytes");
    store
        .delete(&name)
        .await
        .context(format_args!("delete {name:?}"))?;
    Ok(())
}

/// Deleting a name that does not exist is `NotFound`, or `Ok` unless `strict`.
pub async fn delete_missing(store: &dyn KeyStore, prefix: &str, strict: bool) -> CheckResult {
    let name = format!("{prefix}missing");
    match store.delete(&name).await {
        Err(StoreError::NotFound) => Ok(()),
        Ok(()) if !strict => Ok(()),
        other => Err(Failure(format!(
            "delete of missing {name:?}: expected NotFound{}, got {other:?}",
            if strict { "" } else { " or Ok" }
        ))),
    }
}

/// Listing a prefix returns exactly the names under it, sorted, and nothing that merely shares
/// a shorter prefix.
pub async fn list_prefix(store: &dyn KeyStore, prefix: &str) -> CheckResult {
    let inside = format!("{prefix}in-");
    // Created out of order so a store that returns insertion order fails.
    let mut want: Vec<String> = ["c", "a", "e", "b", "d", "a0"]
        .iter()
        .map(|s| format!("{inside}{s}"))
        .collect();
    // Neighbours on both sides of the listed range.
    let outside = [
        format!("{prefix}im"),
        format!("{prefix}io"),
        format!("{prefix}in"),
    ];
    for (i, name) in want.iter().chain(outside.iter()).enumerate() {
        store
            .create(name, &text_value(10 + i as u64, 16))
            .await
            .context(format_args!("create {name:?}"))?;
    }
    want.sort();
    let got = list_all(store, &inside, MAX_LIST_PAGE).await?;
    ensure!(got == want, "list {inside:?}: want {want:?}, got {got:?}");
    // A single call with room for everything must be complete.
    let page = store
        .list(&inside, "", MAX_LIST_PAGE)
        .await
        .context(format_args!("list {inside:?}"))?;
    ensure!(
        page.names == want && page.continue_at.is_empty(),
        "one list call of {inside:?} should return all {} names and no continue_at, got {page:?}",
        want.len()
    );
    for name in want.iter().chain(outside.iter()) {
        store
            .delete(name)
            .await
            .context(format_args!("delete {name:?}"))?;
    }
    Ok(())
}

/// Paging with a small limit visits every name exactly once, in order, and `continue_at`
/// resumes inclusively.
pub async fn list_paging(store: &dyn KeyStore, prefix: &str) -> CheckResult {
    let mut want: Vec<String> = (0..5).rev().map(|i| format!("{prefix}{i}")).collect();
    for (i, name) in want.iter().enumerate() {
        store
            .create(name, &text_value(20 + i as u64, 16))
            .await
            .context(format_args!("create {name:?}"))?;
    }
    want.sort();
    let got = list_all(store, prefix, 2).await?;
    let unique: BTreeSet<&String> = got.iter().collect();
    ensure!(
        unique.len() == got.len(),
        "paging by 2 returned duplicates: {got:?}"
    );
    ensure!(got == want, "paging by 2: want {want:?}, got {got:?}");
    // Starting at an existing name includes it.
    let from = &want[2];
    let page = store
        .list(prefix, from, MAX_LIST_PAGE)
        .await
        .context(format_args!("list {prefix:?} from {from:?}"))?;
    ensure!(
        page.names == want[2..] && page.continue_at.is_empty(),
        "list from {from:?}: want {:?}, got {page:?}",
        &want[2..]
    );
    for name in &want {
        store
            .delete(name)
            .await
            .context(format_args!("delete {name:?}"))?;
    }
    Ok(())
}

/// Listing a prefix that matches nothing is one empty, complete page.
pub async fn list_empty(store: &dyn KeyStore, prefix: &str) -> CheckResult {
    let nothing = format!("{prefix}nothing-");
    let page = store
        .list(&nothing, "", MAX_LIST_PAGE)
        .await
        .context(format_args!("list {nothing:?}"))?;
    ensure!(
        page.names.is_empty() && page.continue_at.is_empty(),
        "list {nothing:?} should be empty and complete, got {page:?}"
    );
    Ok(())
}

/// Every byte value survives a round trip, including NUL, newlines and invalid UTF-8.
pub async fn binary_value(store: &dyn KeyStore, prefix: &str) -> CheckResult {
    let name = format!("{prefix}a");
    let value: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    store
        .create(&name, &value)
        .await
        .context(format_args!("create {name:?}"))?;
    let got = store
        .get(&name)
        .await
        .context(format_args!("get {name:?}"))?;
    ensure!(
        got == value,
        "binary value of {name:?} came back as {} other bytes",
        got.len()
    );
    store
        .delete(&name)
        .await
        .context(format_args!("delete {name:?}"))?;
    Ok(())
}

/// A value of `len` bytes survives a round trip without truncation.
pub async fn large_value(store: &dyn KeyStore, prefix: &str, len: usize) -> CheckResult {
    let name = format!("{prefix}a");
    let value = text_value(30, len);
    store
        .create(&name, &value)
        .await
        .context(format_args!("create {name:?} with {len} bytes"))?;
    let got = store
        .get(&name)
        .await
        .context(format_args!("get {name:?}"))?;
    ensure!(
        got == value,
        "value of {len} bytes came back as {} bytes{}",
        got.len(),
        if got.len() == len {
            " with other content"
        } else {
            ""
        }
    );
    store
        .delete(&name)
        .await
        .context(format_args!("delete {name:?}"))?;
    Ok(())
}

/// Of `racers` concurrent creates of one name with distinct values, exactly one succeeds, all
/// others get `AlreadyExists`, and the stored value is the winner's.
pub async fn create_race(store: &Arc<dyn KeyStore>, prefix: &str, racers: usize) -> CheckResult {
    let racers = racers.max(2);
    let name = format!("{prefix}contended");
    let barrier = Arc::new(Barrier::new(racers));
    let mut tasks = JoinSet::new();
    for i in 0..racers {
        let (store, barrier, name) = (Arc::clone(store), Arc::clone(&barrier), name.clone());
        tasks.spawn(async move {
            let value = text_value(1000 + i as u64, 64);
            // Start together so the creates really overlap.
            barrier.wait().await;
            let result = store.create(&name, &value).await;
            (value, result)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (value, result) = joined.map_err(|e| Failure(format!("racing task failed: {e}")))?;
        match result {
            Ok(()) => winners.push(value),
            Err(StoreError::AlreadyExists) => {}
            Err(e) => {
                return Err(Failure(format!(
                    "racing create of {name:?}: expected Ok or AlreadyExists, got {e:?}"
                )))
            }
        }
    }
    ensure!(
        winners.len() == 1,
        "{} of {racers} concurrent creates of {name:?} succeeded; exactly one must",
        winners.len()
    );
    let got = store
        .get(&name)
        .await
        .context(format_args!("get {name:?}"))?;
    ensure!(
        winners.first() == Some(&got),
        "{name:?} holds a value other than the winning create's"
    );
    store
        .delete(&name)
        .await
        .context(format_args!("delete {name:?}"))?;
    Ok(())
}

/// Concurrent creates of `count` distinct names all succeed and all read back.
pub async fn create_distinct(store: &Arc<dyn KeyStore>, prefix: &str, count: usize) -> CheckResult {
    let barrier = Arc::new(Barrier::new(count.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..count.max(1) {
        let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
        let name = format!("{prefix}{i:03}");
        tasks.spawn(async move {
            let value = text_value(2000 + i as u64, 64);
            barrier.wait().await;
            let result = store.create(&name, &value).await;
            (name, value, result)
        });
    }
    let mut created = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (name, value, result) =
            joined.map_err(|e| Failure(format!("creating task failed: {e}")))?;
        result.context(format_args!("concurrent create of {name:?}"))?;
        created.push((name, value));
    }
    created.sort();
    for (name, value) in &created {
        let got = store
            .get(name)
            .await
            .context(format_args!("get {name:?}"))?;
        ensure!(
            got == *value,
            "{name:?} reads back another value after concurrent creates"
        );
    }
    let want: Vec<String> = created.iter().map(|(n, _)| n.clone()).collect();
    let got = list_all(&**store, prefix, MAX_LIST_PAGE).await?;
    ensure!(
        got == want,
        "after concurrent creates, list {prefix:?}: want {want:?}, got {got:?}"
    );
    for name in &want {
        store
            .delete(name)
            .await
            .context(format_args!("delete {name:?}"))?;
    }
    Ok(())
}
