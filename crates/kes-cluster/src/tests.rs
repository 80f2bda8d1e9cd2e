//! Races between the keystore and the replicated state, driven step by step on one node with a
//! keystore whose reads can be held.

use super::*;
use crate::decide::Freshness;
use async_trait::async_trait;
use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::memory::MemoryStore;
use kes_keystore::{ListPage, StoreError, StoreStatus};
use kes_state::{Command, Outcome, State};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A memory keystore whose `get` can be held until released, to order a read against writes.
#[derive(Default)]
struct HeldStore {
    inner: MemoryStore,
    hold: std::sync::atomic::AtomicBool,
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl KeyStore for HeldStore {
    fn kind(&self) -> &'static str {
        "held"
    }
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.create(name, value).await
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if self.hold.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.get(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete(name).await
    }
    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.inner.list(prefix, continue_at, limit).await
    }
    async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.inner.status().await
    }
}

/// A single-node cluster on `store`, running until `cancel` fires.
async fn node(store: Arc<HeldStore>, cancel: &CancellationToken) -> Arc<Cluster> {
    node_with(store, "", cancel).await
}

/// A single-node cluster on `store` with `extra_yaml` added to its configuration.
async fn node_with(
    store: Arc<dyn KeyStore>,
    extra_yaml: &str,
    cancel: &CancellationToken,
) -> Arc<Cluster> {
    node_clocked(store, extra_yaml, SystemClock::shared(), cancel).await
}

/// A single-node cluster on `store` whose decisions read the time from `clock`.
async fn node_clocked(
    store: Arc<dyn KeyStore>,
    extra_yaml: &str,
    clock: Arc<dyn Clock>,
    cancel: &CancellationToken,
) -> Arc<Cluster> {
    let yaml = format!("address: 127.0.0.1:0\nadmin:\n  identity: disabled\ntls:\n  key: unused.key\n  cert: unused.cert\nkeystore:\n  memory: {{}}\n{extra_yaml}");
    let cfg = kes_config::parse(&yaml, &|_| None).unwrap().config;
    let opts = Options {
        cluster: None,
        cache: cfg.cache,
        key_type: KeyType::Aes256,
        seed: Seed::default(),
        clock,
    };
    let cluster = Cluster::open(opts, store).await.unwrap();
    let tasks = Arc::new(Tasks::new(cancel.clone()));
    cluster.start(&tasks);
    {
        let tasks = Arc::clone(&tasks);
        tokio::spawn(async move {
            let why = tasks.failure().await;
            panic!("a cluster task ended: {why}");
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.is_sealed() || !cluster.is_leader() {
        assert!(Instant::now() < deadline, "the node did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster
}

/// A describe whose keystore read runs after a delete removed the key from the keystore but
/// before the delete's tombstone is committed answers from the committed state, as every other
/// node does until the tombstone lands: "not found" there, then "found" elsewhere, would make
/// the one delete appear twice (found by a fault-testing run with slow links).
#[tokio::test]
async fn describe_racing_an_uncommitted_delete_answers_from_the_committed_state() {
    let cancel = CancellationToken::new();
    let store = Arc::new(HeldStore::default());
    let cluster = node(Arc::clone(&store), &cancel).await;
    let name = "racing";
    let version = KeyVersion::generate(KeyType::Aes256, "test");
    let encoded = version.encode();

    // The describe takes its read index before the create commits, so it misses locally and
    // reads the keystore; that read is held.
    store.hold.store(true, Ordering::SeqCst);
    let describing = {
        let c = Arc::clone(&cluster);
        tokio::spawn(async move { c.describe(name).await.map(|k| k.is_stored_as(&encoded)) })
    };
    store.entered.notified().await;

    // Meanwhile the create commits and a delete removes the key from the keystore, its
    // tombstone not committed yet. (Here the key is committed without ever reaching the
    // keystore: the held read cannot tell the two apart.)
    let cck = cluster.cck().unwrap();
    let put = Command::PutKey {
        name: name.to_owned(),
        sealed: cck.seal(name, &version.encode()).unwrap(),
        at_ms: crate::clock::now_ms(),
    };
    cluster.propose(put).await.unwrap();
    store.release.notify_one();

    let answer = tokio::time::timeout(Duration::from_secs(10), describing)
        .await
        .expect("describe hung")
        .unwrap();
    assert!(
        matches!(answer, Ok(true)),
        "the committed state holds the key, so describe must find it: {:?}",
        answer.map_err(|e| e.to_string())
    );

    // Once the delete commits, the key is gone for describe too.
    let tombstone = Command::DeleteKey {
        name: name.to_owned(),
        at_ms: crate::clock::now_ms(),
    };
    cluster.propose(tombstone).await.unwrap();
    assert!(matches!(
        cluster.describe(name).await,
        Err(ClusterError::KeyNotFound)
    ));
    cancel.cancel();
}

/// Waits (up to 10 s) until `check` holds on the node's state.
async fn eventually(cluster: &Cluster, what: &str, check: impl Fn(&State) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.state.read(&check) {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A delete whose tombstone commit fails after the keystore deleted the key is settled like a
/// lost create: the client hears that the key is deleted in the keystore and the cache is
/// being updated (a 5xx), and the tombstone follows, so the key ends up in neither.
#[tokio::test]
async fn a_delete_whose_tombstone_commit_is_lost_is_settled() {
    let cancel = CancellationToken::new();
    let store = Arc::new(HeldStore::default());
    let cluster = node(Arc::clone(&store), &cancel).await;
    let version = KeyVersion::generate(KeyType::Aes256, "test");
    cluster.create("doomed", &version).await.unwrap();

    cluster.fail_tombstone.store(true, Ordering::SeqCst);
    let err = cluster.delete("doomed").await.unwrap_err();
    assert!(
        matches!(err, ClusterError::Indeterminate(StoreOp::Delete)),
        "{err:?}"
    );
    assert!(matches!(
        store.inner.get("doomed").await,
        Err(StoreError::NotFound)
    ));
    // The failure was real: the cache still holds the key for now.
    assert!(cluster.state.read(|s| s.key("doomed").is_some()));

    eventually(&cluster, "the tombstone was never committed", |s| {
        s.key("doomed").is_none() && s.is_tombstoned("doomed")
    })
    .await;
    assert!(matches!(
        cluster.get("doomed").await,
        Err(ClusterError::KeyNotFound)
    ));
    cancel.cancel();
}

/// The settling of a lost tombstone gives up when the name is created again meanwhile: the
/// new key stays in the cache and the keystore.
#[tokio::test]
async fn a_lost_tombstone_is_not_committed_over_a_re_create() {
    let cancel = CancellationToken::new();
    let store = Arc::new(HeldStore::default());
    let cluster = node(Arc::clone(&store), &cancel).await;
    let first = KeyVersion::generate(KeyType::Aes256, "test");
    cluster.create("phoenix", &first).await.unwrap();
    cluster.fail_tombstone.store(true, Ordering::SeqCst);
    assert!(matches!(
        cluster.delete("phoenix").await,
        Err(ClusterError::Indeterminate(StoreOp::Delete))
    ));
    let second = KeyVersion::generate(KeyType::Aes256, "test");
    cluster.create("phoenix", &second).await.unwrap();
    // Past the first settling attempt (and a retry).
    tokio::time::sleep(reconcile::FIRST_RETRY + Duration::from_millis(1500)).await;
    let generation = cluster.state.read(|s| s.generation("phoenix"));
    assert!(!cluster.state.read(|s| s.is_tombstoned("phoenix")));
    assert_eq!(
        cluster.settle_delete("phoenix", generation - 1).await,
        reconcile::SettleDelete::Superseded
    );
    let key = cluster.get("phoenix").await.unwrap();
    assert!(key.is_stored_as(&second.encode()));
    assert_eq!(store.inner.get("phoenix").await.unwrap(), second.encode());
    cancel.cancel();
}

/// The leader prunes the tombstones below the members' applied index as sampled at least the
/// margin ago, and the pruned names stay protected against stale fills.
#[tokio::test]
async fn the_leader_prunes_tombstones_below_an_old_enough_sample() {
    let cancel = CancellationToken::new();
    let store = Arc::new(HeldStore::default());
    let cluster = node(Arc::clone(&store), &cancel).await;
    for i in 0..20 {
        let name = format!("k{i}");
        let version = KeyVersion::generate(KeyType::Aes256, "test");
        cluster.create(&name, &version).await.unwrap();
        cluster.delete(&name).await.unwrap();
    }
    let live = KeyVersion::generate(KeyType::Aes256, "test");
    cluster.create("live", &live).await.unwrap();
    assert_eq!(cluster.state.read(|s| s.tombstone_count()), 20);
    let sampled = cluster.applied_index();

    let margin = Duration::from_secs(60);
    let mut pruner = prune::Pruner::new(margin);
    let t0 = Instant::now();
    assert_eq!(
        pruner.round(&cluster, t0).await,
        prune::PruneRound::Nothing,
        "no sample is old enough yet"
    );
    // A delete after the sample is not pruned by the next round.
    let late = KeyVersion::generate(KeyType::Aes256, "test");
    cluster.create("late", &late).await.unwrap();
    cluster.delete("late").await.unwrap();

    let round = pruner.round(&cluster, t0 + margin).await;
    assert_eq!(
        round,
        prune::PruneRound::Pruned {
            before_index: sampled,
            forgotten: 20
        }
    );
    cluster.state.read(|s| {
        assert_eq!(s.tombstone_count(), 1);
        assert!(s.is_tombstoned("late"));
        assert_eq!(s.name_state("k0"), None);
        assert!(s.key("live").is_some());
        assert_eq!(s.pruned_below(), sampled);
    });
    // A fill whose keystore read began before the prune point is refused although the name's
    // tombstone is gone.
    let cck = cluster.cck().unwrap();
    let stale = Command::FillKey {
        name: "k0".to_owned(),
        sealed: cck.seal("k0", &live.encode()).unwrap(),
        at_ms: crate::clock::now_ms(),
        observed: sampled - 1,
    };
    let (_, outcome) = cluster.propose(stale).await.unwrap();
    assert_eq!(outcome, Outcome::StaleFill);
    assert!(matches!(
        cluster.get("k0").await,
        Err(ClusterError::KeyNotFound)
    ));
    // Nothing left below the point: the next round proposes nothing.
    assert_eq!(
        pruner.round(&cluster, t0 + margin).await,
        prune::PruneRound::Nothing
    );
    cancel.cancel();
}

/// A keystore that stops answering while `hang` is set: a hung KMS, or one a restarted node
/// cannot reach and whose client keeps retrying.
#[derive(Default)]
struct HungStore {
    inner: MemoryStore,
    hang: std::sync::atomic::AtomicBool,
}

impl HungStore {
    async fn answer(&self) {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl KeyStore for HungStore {
    fn kind(&self) -> &'static str {
        "hung"
    }
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.answer().await;
        self.inner.create(name, value).await
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.answer().await;
        self.inner.get(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.answer().await;
        self.inner.delete(name).await
    }
    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.answer().await;
        self.inner.list(prefix, continue_at, limit).await
    }
    async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.answer().await;
        self.inner.status().await
    }
}

/// Expiry for the hung-keystore tests: keys unused for a second need re-confirmation, and an
/// outage is served from the replica for an hour.
const SHORT_UNUSED: &str = "cache:\n  expiry:\n    any: 5m\n    unused: 1s\n    offline: 1h\n";

/// How long the tests below allow a request: [`KMS_WAIT`] plus slack for a busy machine, and
/// still below the 2 s a re-confirmation used to wait (a fetch waited for ever).
fn kms_bound() -> Duration {
    const { assert!(KMS_WAIT.as_millis() <= 500) };
    Duration::from_millis(1200)
}

/// A node whose keystore stops answering does not hold a crypto request longer than
/// [`KMS_WAIT`]: a key due for re-confirmation is served from the replica under the offline
/// window, and the next requests do not wait at all.
#[tokio::test]
async fn a_hung_keystore_holds_a_re_confirmation_at_most_kms_wait() {
    let cancel = CancellationToken::new();
    let store = Arc::new(HungStore::default());
    let cluster = node_with(
        Arc::clone(&store) as Arc<dyn KeyStore>,
        SHORT_UNUSED,
        &cancel,
    )
    .await;
    let version = KeyVersion::generate(KeyType::Aes256, "test");
    cluster.create("k", &version).await.unwrap();
    cluster.get("k").await.unwrap();
    // Unused for longer than `unused`: its next use asks the keystore first.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    store.hang.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let key = tokio::time::timeout(kms_bound(), cluster.get("k"))
            .await
            .expect("the request waited on the hung keystore");
        assert!(key.is_ok(), "served from the replica: {:?}", key.err());
    }
    assert!(cluster.kms.is_down(), "the node knows the keystore is down");
    cancel.cancel();
}

/// A key the node does not hold, read while the keystore hangs, answers 504 (not a 404, so
/// clients retry elsewhere) within [`KMS_WAIT`].
#[tokio::test]
async fn a_hung_keystore_holds_a_miss_at_most_kms_wait() {
    let cancel = CancellationToken::new();
    let store = Arc::new(HungStore::default());
    let cluster = node_with(
        Arc::clone(&store) as Arc<dyn KeyStore>,
        SHORT_UNUSED,
        &cancel,
    )
    .await;
    store.hang.store(true, Ordering::SeqCst);
    let miss = tokio::time::timeout(kms_bound(), cluster.get("never-cached"))
        .await
        .expect("the request waited on the hung keystore");
    assert!(
        matches!(miss, Err(ClusterError::KmsUnreachable)),
        "want 504, got {:?}",
        miss.err()
    );
    cancel.cancel();
}

/// A clock a year ahead cannot make a key fresh for everyone: the leader bounds the times of
/// the commands other members propose by its own clock, and a node takes a confirmation from
/// beyond its own clock (plus `any`) as stale, so even a leader whose clock runs ahead cannot
/// spare a key its re-confirmation.
#[tokio::test]
async fn a_clock_running_ahead_does_not_make_keys_fresh() {
    let cancel = CancellationToken::new();
    let store = Arc::new(HeldStore::default());
    let cluster = node(Arc::clone(&store), &cancel).await;
    let year = 365 * 24 * 3600 * 1000u64;
    let ahead = crate::clock::now_ms() + year;

    let confirm = Command::ConfirmKeys {
        names: vec!["k".into()],
        at_ms: ahead,
    };
    match cluster.admit_proposal(confirm).await.unwrap() {
        Command::ConfirmKeys { at_ms, .. } => {
            assert!(
                at_ms <= crate::clock::now_ms(),
                "confirmation kept its future time"
            )
        }
        other => panic!("{other:?}"),
    }
    let fill = Command::FillKey {
        name: "k".into(),
        sealed: vec![0; 40],
        at_ms: ahead,
        observed: 0,
    };
    match cluster.admit_proposal(fill).await.unwrap() {
        Command::FillKey { at_ms, .. } => {
            assert!(at_ms <= crate::clock::now_ms(), "fill kept its future time")
        }
        other => panic!("{other:?}"),
    }

    // A key confirmed "a year from now" (as a leader with that clock would commit it).
    let version = KeyVersion::generate(KeyType::Aes256, "test");
    cluster.create("k", &version).await.unwrap();
    cluster
        .propose(Command::ConfirmKeys {
            names: vec!["k".into()],
            at_ms: ahead,
        })
        .await
        .unwrap();
    let hit = cluster.local("k").expect("cached");
    assert_eq!(hit.confirmed_at_ms, ahead);
    hit.key.touch(cluster.clock_ms());
    assert_eq!(
        cluster.freshness(&hit, cluster.clock_ms()),
        Freshness::Stale,
        "a confirmation from the future kept the key fresh"
    );
    cancel.cancel();
}

/// A memory keystore that can be made unreachable, and counts its reads.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    down: std::sync::atomic::AtomicBool,
    reads: std::sync::atomic::AtomicU64,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::unavailable(true, "connection refused"))
        } else {
            Ok(())
        }
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeyStore for FlakyStore {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create(name, value).await
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.get(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete(name).await
    }
    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.check()?;
        self.inner.list(prefix, continue_at, limit).await
    }
    async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.check()?;
        self.inner.status().await
    }
}

/// KES's expiry on a running node, driven by a manual clock instead of sleeps: a key is served
/// from the replica until `any` has passed since the KMS confirmed it, then re-confirmed
/// first; while the KMS is unreachable a stale key is served until the outage has lasted
/// `offline`, then refused as "KMS unreachable"; once the KMS answers again it is re-confirmed
/// and served.
#[tokio::test]
async fn expiry_and_the_offline_window_follow_the_clock() {
    let cancel = CancellationToken::new();
    let clock = ManualClock::new(1_800_000_000_000);
    let store = Arc::new(FlakyStore::default());
    let cluster = node_clocked(
        Arc::clone(&store) as Arc<dyn KeyStore>,
        "cache:\n  expiry:\n    any: 5m\n    unused: 1h\n    offline: 10m\n",
        clock.clone(),
        &cancel,
    )
    .await;
    // The node hears from its quorum (itself) every tick; with time moved by hand, it has
    // just heard from it.
    let advance = |d: Duration| {
        clock.advance(d);
        cluster.touch_contact();
    };
    let version = KeyVersion::generate(KeyType::Aes256, "test");
    cluster.create("k", &version).await.unwrap();

    // Not used here since it was unsealed: the first use re-confirms it.
    cluster.get("k").await.unwrap();
    let confirmed = store.reads();
    assert_eq!(confirmed, 1);
    cluster.get("k").await.unwrap();
    advance(Duration::from_secs(180));
    cluster.get("k").await.unwrap();
    assert_eq!(
        store.reads(),
        confirmed,
        "fresh keys are served without the KMS"
    );

    // Past `any` since the confirmation: re-confirmed before it is served, and the
    // confirmation (at the clock's time) is committed.
    advance(Duration::from_secs(121));
    cluster.get("k").await.unwrap();
    assert_eq!(
        store.reads(),
        confirmed + 1,
        "a stale key was not re-confirmed"
    );
    let stamped = clock.wall_ms();
    eventually(&cluster, "the confirmation is committed", |s| {
        s.key("k").is_some_and(|e| e.confirmed_at_ms == stamped)
    })
    .await;

    // The KMS goes away. Past `any` again: the re-confirmation fails, the outage begins, and
    // the key is served under the offline rule.
    store.down.store(true, Ordering::SeqCst);
    advance(Duration::from_secs(301));
    cluster.get("k").await.unwrap();
    assert!(cluster.kms.is_down());
    assert_eq!(cluster.kms.served_offline.load(Ordering::Relaxed), 1);
    advance(Duration::from_secs(9 * 60));
    cluster
        .get("k")
        .await
        .expect("served within the offline window");
    advance(Duration::from_secs(61));
    assert!(
        matches!(cluster.get("k").await, Err(ClusterError::KmsUnreachable)),
        "served after the offline window"
    );

    // The KMS is back: the next probe ends the outage and the key is re-confirmed.
    store.down.store(false, Ordering::SeqCst);
    cluster.kms.probe(cluster.store.as_ref()).await.unwrap();
    assert!(!cluster.kms.is_down());
    assert_eq!(cluster.kms.outage_total(), Duration::from_secs(9 * 60 + 61));
    let reads = store.reads();
    cluster.get("k").await.unwrap();
    assert_eq!(store.reads(), reads + 1);
    cancel.cancel();
}

/// The per-thread views of the crypto path (`view.rs`) serve only the current state: after a
/// delete no thread serves the key, a re-created key is served with its new material, and a
/// copy the decoded map lets go of (an idle key) is let go of by every view, including the
/// view of a thread that serves nothing any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_views_serve_only_the_current_state() {
    let cancel = CancellationToken::new();
    let clock = ManualClock::new(1_800_000_000_000);
    let cluster = node_clocked(
        Arc::new(FlakyStore::default()) as Arc<dyn KeyStore>,
        "cache:\n  expiry:\n    any: 5m\n    unused: 1h\n",
        clock.clone(),
        &cancel,
    )
    .await;
    let here = |c: &Cluster| c.with_fresh("k", |k| k.fingerprint);
    // Another thread, which stays alive and serves only when asked.
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (tell, told) = std::sync::mpsc::channel();
    let helper = {
        let c = Arc::clone(&cluster);
        std::thread::spawn(move || {
            for () in asked {
                tell.send(c.with_fresh("k", |k| k.fingerprint)).unwrap();
            }
        })
    };
    let there = || {
        ask.send(()).unwrap();
        told.recv().unwrap()
    };

    cluster
        .create("k", &KeyVersion::generate(KeyType::Aes256, "test"))
        .await
        .unwrap();
    // Never used here: not served as it is (the first use re-confirms it).
    assert_eq!(here(&cluster), None);
    let first = cluster.get("k").await.unwrap().fingerprint;
    assert_eq!(here(&cluster), Some(first));
    assert_eq!(there(), Some(first));
    assert_eq!(here(&cluster), Some(first), "served again from the view");

    // Deleted: neither view serves it, from the first request after the commit.
    cluster.delete("k").await.unwrap();
    assert_eq!(here(&cluster), None);
    assert_eq!(there(), None);
    assert!(matches!(
        cluster.get("k").await,
        Err(ClusterError::KeyNotFound)
    ));

    // Re-created with other material: served with it.
    cluster
        .create("k", &KeyVersion::generate(KeyType::Aes256, "test"))
        .await
        .unwrap();
    let second = cluster.get("k").await.unwrap();
    assert_ne!(second.fingerprint, first);
    assert_eq!(here(&cluster), Some(second.fingerprint));
    assert_eq!(there(), Some(second.fingerprint));

    // Idle past `unused`: the decoded map drops its copy, and so does every view. Only the
    // test's own reference is left.
    clock.advance(Duration::from_secs(2 * 3600));
    cluster.touch_contact();
    assert!(Arc::strong_count(&second) > 2, "the views hold the key");
    cluster.drop_idle();
    assert_eq!(Arc::strong_count(&second), 1, "a view kept an idle key");

    drop(ask);
    helper.join().unwrap();
    cancel.cancel();
}
