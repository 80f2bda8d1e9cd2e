//! The random bytes of data keys, IVs and nonces: a per-thread ChaCha20 generator with fast key
//! erasure, seeded from the OS.
//!
//! A `getrandom` system call per generate request was the one system call the server made
//! beyond the transport's (about 3–4 % of its CPU per operation). The design is the one the
//! Linux kernel's CRNG, its vDSO `getrandom` and OpenBSD's `arc4random` use:
//!
//! - Each thread holds a 256-bit ChaCha20 key. A refill runs ChaCha20 under that key over a
//!   buffer of [`BUF_LEN`] bytes; the first 32 bytes of the output replace the key at once (the
//!   old key is gone, so the bytes already served cannot be computed again: backtracking
//!   resistance), the rest are served.
//! - Every byte served is wiped from the buffer as it is handed out, so the state a memory
//!   disclosure could find never holds output that was or will be used.
//! - The key is replaced by 32 fresh bytes from the OS RNG on the first use of a thread and
//!   after every [`RESEED_REFILLS`] refills (about 46 KiB of output, a few hundred generate
//!   requests), so a compromise of the state recovers from the OS at that pace.
//!
//! The process never forks (a forked child would share the parent's state); threads each have
//! their own. An OS RNG failure while seeding is reported, never replaced by weaker bytes.

use std::cell::RefCell;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

const KEY_LEN: usize = 32;
/// Output per refill, the next key included: 12 ChaCha20 blocks.
const BUF_LEN: usize = 12 * 64;
/// Refills between two seeds from the OS RNG.
const RESEED_REFILLS: u32 = 64;

/// Requests larger than this are served straight from the OS RNG.
const MAX_DIRECT: usize = BUF_LEN - KEY_LEN;

/// The OS RNG failed while the generator needed a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomError;

struct Generator {
    key: Zeroizing<[u8; KEY_LEN]>,
    buf: Zeroizing<[u8; BUF_LEN]>,
    /// Next unserved byte of `buf`; `BUF_LEN` when it is used up.
    pos: usize,
    /// Refills left before the key is taken from the OS RNG again; 0 means seed first.
    refills_left: u32,
}

impl Generator {
    fn new() -> Self {
        Self {
            key: Zeroizing::new([0u8; KEY_LEN]),
            buf: Zeroizing::new([0u8; BUF_LEN]),
            pos: BUF_LEN,
            refills_left: 0,
        }
    }

    fn refill(&mut self) -> Result<(), RandomError> {
        if self.refills_left == 0 {
            OsRng
                .try_fill_bytes(self.key.as_mut())
                .map_err(|_| RandomError)?;
            self.refills_left = RESEED_REFILLS;
        }
        self.refills_left -= 1;
        // Each key is used for exactly one keystream, so a fixed nonce is safe.
        self.buf.zeroize();
        let mut cipher = ChaCha20::new((&*self.key).into(), &chacha20::Nonce::default());
        cipher.apply_keystream(self.buf.as_mut());
        drop(cipher);
        self.key.copy_from_slice(&self.buf[..KEY_LEN]);
        self.buf[..KEY_LEN].zeroize();
        self.pos = KEY_LEN;
        Ok(())
    }

    fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError> {
        let mut done = 0;
        while done < out.len() {
            if self.pos == BUF_LEN {
                self.refill()?;
            }
            let n = (out.len() - done).min(BUF_LEN - self.pos);
            let served = &mut self.buf[self.pos..self.pos + n];
            out[done..done + n].copy_from_slice(served);
            served.zeroize();
            self.pos += n;
            done += n;
        }
        Ok(())
    }
}

thread_local! {
    static GENERATOR: RefCell<Generator> = RefCell::new(Generator::new());
}

/// Fills `out` with random bytes for keys, IVs and nonces.
pub fn fill(out: &mut [u8]) -> Result<(), RandomError> {
    if out.len() > MAX_DIRECT {
        return OsRng.try_fill_bytes(out).map_err(|_| RandomError);
    }
    GENERATOR.with(|g| match g.try_borrow_mut() {
        Ok(mut g) => g.fill(out),
        // Not reachable (nothing here re-enters), but never hand out the same bytes twice.
        Err(_) => OsRng.try_fill_bytes(out).map_err(|_| RandomError),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn draws_never_repeat_across_refills_and_reseeds() {
        // More than RESEED_REFILLS refills' worth, so several seeds and many refills.
        let mut seen = HashSet::new();
        for _ in 0..(RESEED_REFILLS as usize * 3 * BUF_LEN / 48) {
            let mut b = [0u8; 48];
            fill(&mut b).unwrap();
            assert!(seen.insert(b), "a 48-byte draw repeated");
        }
    }

    #[test]
    fn served_bytes_are_wiped_and_the_key_moves_on() {
        let mut g = Generator::new();
        let mut a = [0u8; 60];
        g.fill(&mut a).unwrap();
        let key_after_first = *g.key;
        assert!(
            g.buf[..g.pos].iter().all(|&b| b == 0),
            "served bytes left in the buffer"
        );
        assert!(g.buf[g.pos..].iter().any(|&b| b != 0));
        // Use up the buffer: the next draw refills under a new key.
        let mut rest = vec![0u8; BUF_LEN - g.pos];
        g.fill(&mut rest).unwrap();
        let mut b = [0u8; 60];
        g.fill(&mut b).unwrap();
        assert_ne!(*g.key, key_after_first);
        assert_ne!(a, b);
        assert!(g.buf[..g.pos].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_next_key_is_never_served() {
        // The key is the first 32 bytes of each refill; served output starts after it.
        let mut g = Generator::new();
        g.refills_left = 0;
        g.refill().unwrap();
        let next_key = *g.key;
        let mut out = vec![0u8; BUF_LEN - KEY_LEN];
        g.fill(&mut out).unwrap();
        assert!(!out.windows(KEY_LEN).any(|w| w == next_key));
    }

    #[test]
    fn the_os_rng_seeds_again_after_the_set_number_of_refills() {
        let mut g = Generator::new();
        let mut out = [0u8; 16];
        g.fill(&mut out).unwrap();
        assert_eq!(g.refills_left, RESEED_REFILLS - 1);
        let mut rest = vec![0u8; BUF_LEN - g.pos];
        g.fill(&mut rest).unwrap();
        // Each whole buffer's worth is one refill.
        let mut whole = vec![0u8; MAX_DIRECT];
        for _ in 0..RESEED_REFILLS - 1 {
            g.fill(&mut whole).unwrap();
        }
        assert_eq!(g.refills_left, 0);
        g.fill(&mut out).unwrap();
        assert_eq!(g.refills_left, RESEED_REFILLS - 1);
    }

    #[test]
    fn large_requests_come_from_the_os() {
        let mut a = vec![0u8; MAX_DIRECT + 1];
        fill(&mut a).unwrap();
        assert!(a.iter().any(|&b| b != 0));
    }

    #[test]
    fn output_is_not_obviously_biased() {
        // A coarse check that the keystream is used at all: bit balance over 64 KiB.
        let mut buf = vec![0u8; 64 * 1024];
        for chunk in buf.chunks_mut(64) {
            fill(chunk).unwrap();
        }
        let ones: u32 = buf.iter().map(|b| b.count_ones()).sum();
        let bits = (buf.len() * 8) as f64;
        let ratio = f64::from(ones) / bits;
        assert!((0.49..0.51).contains(&ratio), "ones ratio {ratio}");
    }
}
