//! Per-thread views of the keys a node serves from its replica: the crypto path's cache hit
//! without a shared lock or a shared write.
//!
//! A hit needs the key's state entry (its stamp and confirmation time) and its unsealed copy
//! in the decoded map, each behind a read lock, and a reference to the copy: five atomic
//! read-modify-writes on cache lines that every core writes for every request. A thread's view
//! remembers the hits it made for as long as neither the applied state
//! ([`kes_raft::StateHandle::version`]) nor the decoded map (`Cluster::decoded_version`)
//! changed: the first request after any change (a key written, filled, confirmed, evicted;
//! a key decoded) looks everything up again, so a view never answers from anything but the
//! current state. Whether the hit is fresh is decided on every request, as on the shared path.
//!
//! A view is a slot of its own thread: its lock is taken by that thread alone, except by
//! [`forget_all`], which the decoded map calls whenever it lets go of a key (an idle key
//! dropped, an evicted or replaced copy, a snapshot installed), so that no view, even one of a
//! thread that serves nothing any more, keeps a key longer than the map does.

use crate::decide::Freshness;
use crate::read::Hit;
use crate::{CachedKey, Cluster, WRAPPING_KEY};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// The most names a view holds; beyond it the view starts again.
const MAX_NAMES: usize = 1024;

/// The tags of a view that holds nothing valid: cluster ids start at 1.
const NONE: (u64, u64, u64) = (0, 0, 0);

/// Ids of clusters in this process, so that views of different nodes (tests and the
/// simulation run several in one process) never mix.
static NEXT_CLUSTER: AtomicU64 = AtomicU64::new(1);

/// Every thread's slot, for [`forget_all`].
static SLOTS: std::sync::Mutex<Vec<Weak<Slot>>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    static MINE: Arc<Slot> = register();
}

#[derive(Default)]
struct Slot(Mutex<View>);

#[derive(Default)]
struct View {
    /// (cluster id, state version, decoded-map version) the hits are valid for.
    tags: (u64, u64, u64),
    hits: HashMap<Box<str>, Hit>,
}

fn register() -> Arc<Slot> {
    let slot = Arc::new(Slot::default());
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    slots.retain(|s| s.strong_count() > 0);
    slots.push(Arc::downgrade(&slot));
    slot
}

pub(crate) fn next_cluster_id() -> u64 {
    NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
}

/// Empties every thread's view (see the module documentation).
pub(crate) fn forget_all() {
    let slots: Vec<Arc<Slot>> = {
        let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().filter_map(Weak::upgrade).collect()
    };
    for slot in slots {
        let mut v = slot.0.lock();
        v.tags = NONE;
        v.hits.clear();
    }
}

/// Runs `f` on the hit if it is fresh (touching it).
fn serve<R>(
    c: &Cluster,
    hit: &Hit,
    now: u64,
    f: &mut Option<impl FnOnce(&CachedKey) -> R>,
) -> Option<R> {
    if c.freshness(hit, now) != Freshness::Fresh {
        return None;
    }
    let f = f.take()?;
    hit.key.touch(now);
    Some(f(&hit.key))
}

impl Cluster {
    /// Runs `f` on key `name` if this node serves it from its replica as it is (decoded and
    /// fresh), which is nearly every crypto request. `None` otherwise: [`Cluster::get`] does
    /// the rest (a miss, a refresh, a stale or offline key, an error).
    pub fn with_fresh<R>(&self, name: &str, f: impl FnOnce(&CachedKey) -> R) -> Option<R> {
        if name == WRAPPING_KEY || self.check_serving().is_err() {
            return None;
        }
        let now = self.clock_ms();
        let tags = (
            self.view_id,
            self.state.version(),
            self.decoded_version.load(Ordering::Acquire),
        );
        let mut f = Some(f);
        MINE.try_with(|slot| {
            {
                let mut v = slot.0.lock();
                if v.tags != tags {
                    v.tags = tags;
                    v.hits.clear();
                }
                if let Some(hit) = v.hits.get(name) {
                    return serve(self, hit, now, &mut f);
                }
            }
            // Looked up without the slot's lock, which `forget_all` may need meanwhile.
            let hit = self.local(name)?;
            let mut v = slot.0.lock();
            // Emptied by `forget_all` or moved on meanwhile: serve this once, keep nothing.
            if v.tags != tags {
                return serve(self, &hit, now, &mut f);
            }
            if v.hits.len() >= MAX_NAMES {
                v.hits.clear();
            }
            let hit = v.hits.entry(name.into()).or_insert(hit);
            serve(self, hit, now, &mut f)
        })
        // The thread is exiting: the shared path serves.
        .ok()
        .flatten()
    }
}
