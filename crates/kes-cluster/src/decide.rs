//! Pure decisions: whether a node serves, whether a cached key may be served as it is, whether
//! a stale key may still be served during a KMS outage. Each takes the times it needs as
//! arguments (from the node's [`crate::Clock`]), so its tests set the times instead of
//! waiting for them.

use crate::CONTACT_TIMEOUT;
use kes_config::CacheConfig;
use std::time::Duration;

/// Where a node stands, for `/v1/ready` and the cluster status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    Ok,
    Sealed,
    CutOff,
}

/// A node serves once it has the cache key, and until it has been out of contact with the
/// majority for [`CONTACT_TIMEOUT`] plus the offline window.
pub fn serving(sealed: bool, since_contact: Duration, offline: Duration) -> Serving {
    if sealed {
        Serving::Sealed
    } else if since_contact > CONTACT_TIMEOUT + offline {
        Serving::CutOff
    } else {
        Serving::Ok
    }
}

/// Whether a node counts itself cut off from the majority (within the window or beyond).
pub fn is_cut_off(since_contact: Duration) -> bool {
    since_contact > CONTACT_TIMEOUT
}

/// Whether a cached key may be served as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Fresh, but past three quarters of `any`: served, and re-confirmed in the background.
    Refresh,
    /// Past `any` since its confirmation, or unused here for `unused`: re-confirm first.
    Stale,
}

/// The times a cached key's freshness depends on.
#[derive(Clone, Copy, Debug)]
pub struct KeyTimes {
    /// Monotonic milliseconds of its last use on this node; 0: not used since unsealed here.
    pub last_used: u64,
    /// Wall-clock milliseconds of the KMS's last confirmation (possibly by another node).
    pub confirmed_at_ms: u64,
}

/// KES's cache expiry, applied to the replicated cache: a key unused here for `unused`, or
/// confirmed by the KMS longer than `any` ago, must be re-confirmed before it is served. A
/// confirmation stamped beyond this node's wall clock (another node's clock runs ahead) is
/// not trusted: the key is stale, so a leader whose clock runs ahead cannot make keys fresh
/// for longer than `any` here.
pub fn freshness(expiry: &CacheConfig, key: KeyTimes, now_mono: u64, now_wall: u64) -> Freshness {
    let idle = now_mono.saturating_sub(key.last_used);
    let unused = expiry.unused.as_millis() as u64;
    if unused > 0 && (key.last_used == 0 || idle > unused) {
        return Freshness::Stale;
    }
    let any = expiry.any.as_millis() as u64;
    if any > 0 && key.confirmed_at_ms > now_wall.saturating_add(any) {
        return Freshness::Stale;
    }
    let age = now_wall.saturating_sub(key.confirmed_at_ms);
    if any == 0 || age <= any * 3 / 4 {
        Freshness::Fresh
    } else if age <= any {
        Freshness::Refresh
    } else {
        Freshness::Stale
    }
}

/// A stale key while the KMS is unreachable is served until the outage has lasted `offline`.
pub fn serve_offline(outage: Option<Duration>, offline: Duration) -> bool {
    outage.is_some_and(|d| d < offline)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::kms::KmsHealth;
    use kes_keystore::StoreError;

    const T0: u64 = 1_800_000_000_000;

    fn expiry(any: u64, unused: u64, offline: u64) -> CacheConfig {
        CacheConfig {
            any: Duration::from_secs(any),
            unused: Duration::from_secs(unused),
            offline: Duration::from_secs(offline),
        }
    }

    fn at(clock: &ManualClock, key: KeyTimes, e: &CacheConfig) -> Freshness {
        freshness(e, key, clock.mono_ms(), clock.wall_ms())
    }

    #[test]
    fn any_expiry_refreshes_late_and_re_confirms_past_it() {
        let clock = ManualClock::new(T0);
        let e = expiry(300, 0, 0);
        let key = KeyTimes {
            last_used: 1,
            confirmed_at_ms: clock.wall_ms(),
        };
        assert_eq!(at(&clock, key, &e), Freshness::Fresh);
        clock.advance(Duration::from_secs(225));
        assert_eq!(at(&clock, key, &e), Freshness::Fresh, "at 3/4 of any");
        clock.advance(Duration::from_secs(1));
        assert_eq!(at(&clock, key, &e), Freshness::Refresh);
        clock.advance(Duration::from_secs(74));
        assert_eq!(at(&clock, key, &e), Freshness::Refresh, "at any");
        clock.advance(Duration::from_millis(1));
        assert_eq!(at(&clock, key, &e), Freshness::Stale);
        // A confirmation resets the age.
        let confirmed = KeyTimes {
            confirmed_at_ms: clock.wall_ms(),
            ..key
        };
        assert_eq!(at(&clock, confirmed, &e), Freshness::Fresh);
    }

    #[test]
    fn unused_expiry_counts_from_the_last_use_here() {
        let clock = ManualClock::new(T0);
        clock.advance(Duration::from_secs(1));
        let e = expiry(0, 30, 0);
        let fresh_key = KeyTimes {
            last_used: clock.mono_ms(),
            confirmed_at_ms: clock.wall_ms(),
        };
        assert_eq!(at(&clock, fresh_key, &e), Freshness::Fresh);
        clock.advance(Duration::from_secs(30));
        assert_eq!(at(&clock, fresh_key, &e), Freshness::Fresh);
        clock.advance(Duration::from_millis(1));
        assert_eq!(at(&clock, fresh_key, &e), Freshness::Stale);
        // Never used since it was unsealed here: re-confirmed first.
        let unsealed = KeyTimes {
            last_used: 0,
            ..fresh_key
        };
        assert_eq!(at(&clock, unsealed, &e), Freshness::Stale);
        // Off (0): never stale for lack of use.
        assert_eq!(at(&clock, unsealed, &expiry(0, 0, 0)), Freshness::Fresh);
    }

    #[test]
    fn clock_skew_between_nodes() {
        let e = expiry(60, 0, 0);
        let here = ManualClock::new(T0);
        // Confirmed by a leader whose clock runs 10 s ahead: still within `any` here.
        let ahead = KeyTimes {
            last_used: 1,
            confirmed_at_ms: here.wall_ms() + 10_000,
        };
        assert_eq!(at(&here, ahead, &e), Freshness::Fresh);
        // A leader more than `any` ahead would make the key fresh for too long: stale.
        let far = KeyTimes {
            confirmed_at_ms: here.wall_ms() + 60_001,
            ..ahead
        };
        assert_eq!(at(&here, far, &e), Freshness::Stale);
        // This node's wall clock steps back by an hour: the confirmation now lies beyond it.
        let now = KeyTimes {
            confirmed_at_ms: here.wall_ms(),
            ..ahead
        };
        here.jump_wall(-3_600_000);
        assert_eq!(at(&here, now, &e), Freshness::Stale);
        // ... and forward by an hour: the confirmation is old.
        here.jump_wall(7_200_000);
        assert_eq!(at(&here, now, &e), Freshness::Stale);
    }

    #[test]
    fn offline_window_on_a_cut_off_node() {
        let clock = ManualClock::new(T0);
        let offline = Duration::from_secs(60);
        let last_contact = clock.mono_ms();
        let since = |c: &ManualClock| Duration::from_millis(c.mono_ms() - last_contact);
        assert_eq!(serving(false, since(&clock), offline), Serving::Ok);
        assert!(!is_cut_off(since(&clock)));
        clock.advance(CONTACT_TIMEOUT + Duration::from_millis(1));
        assert!(is_cut_off(since(&clock)));
        assert_eq!(
            serving(false, since(&clock), offline),
            Serving::Ok,
            "cut off, within the window"
        );
        clock.advance(offline);
        assert_eq!(serving(false, since(&clock), offline), Serving::CutOff);
        // A wall-clock jump changes nothing: contact is measured on the monotonic clock.
        clock.jump_wall(-86_400_000);
        assert_eq!(serving(false, since(&clock), offline), Serving::CutOff);
        assert_eq!(serving(true, Duration::ZERO, offline), Serving::Sealed);
    }

    #[test]
    fn outage_start_and_end_bound_offline_serving() {
        let clock = ManualClock::new(T0);
        let kms = KmsHealth::new("test", clock.clone());
        let offline = Duration::from_secs(30);
        assert!(!serve_offline(kms.down_for(), offline), "no outage");
        kms.record_unreachable(&StoreError::unavailable(true, "refused"));
        assert!(kms.is_down());
        assert_eq!(kms.down_for(), Some(Duration::ZERO));
        clock.advance(Duration::from_secs(29));
        assert!(serve_offline(kms.down_for(), offline));
        // A second failure does not restart the outage.
        kms.record_unreachable(&StoreError::unavailable(true, "refused again"));
        clock.advance(Duration::from_secs(1));
        assert_eq!(kms.down_for(), Some(Duration::from_secs(30)));
        assert!(!serve_offline(kms.down_for(), offline), "window over");
        kms.record_answer();
        assert!(!kms.is_down());
        assert_eq!(kms.down_for(), None);
        assert_eq!(kms.outage_total(), Duration::from_secs(30));
        // The next outage starts from zero.
        kms.record_unreachable(&StoreError::unavailable(true, "refused"));
        clock.advance(Duration::from_secs(5));
        assert!(serve_offline(kms.down_for(), offline));
    }
}
