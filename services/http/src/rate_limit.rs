//! Rate limits, each a keyed GCRA limiter (`governor`) on this http node, with idle keys
//! evicted so that memory stays bounded however many keys a client sprays:
//! - per user, on every authenticated request (with N http nodes a user's ceiling is up to N
//!   times the setting);
//! - before authentication, per client address on `register` and `login`, and per username on
//!   `login`: password guessing is slowed whether it comes from one address or from many against
//!   one account.
//!
//! Refused requests get 429 with `Retry-After`.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

/// Above this many tracked keys, keys back at a full allowance are dropped.
const MAX_TRACKED: usize = 100_000;
/// How often (in checks) the key count is compared with [`MAX_TRACKED`].
const EVICTION_CHECK_EVERY: u64 = 1024;

/// One keyed limit: `per_minute` requests per key per minute, in bursts of up to that many.
#[derive(Debug)]
pub(crate) struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// A limit of `per_minute` per key; 0 disables it.
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one request's allowance for `key`; on refusal returns the seconds until one is
    /// available.
    pub(crate) fn check(&self, key: &K) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(EVICTION_CHECK_EVERY)
            && limiter.len() > MAX_TRACKED
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }

    /// Keys tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// Every limit of an http node.
#[derive(Debug)]
pub(crate) struct RateLimits {
    /// Authenticated requests per user.
    pub(crate) users: KeyedLimit<i64>,
    /// `register` and `login` attempts per client address.
    pub(crate) addresses: KeyedLimit<IpAddr>,
    /// `login` attempts per username.
    pub(crate) usernames: KeyedLimit<String>,
}

impl RateLimits {
    /// `per_user` authenticated requests per minute, `per_client` attempts to log in or
    /// register per minute per address and per username; 0 disables either.
    pub(crate) fn new(per_user: u32, per_client: u32) -> Self {
        Self {
            users: KeyedLimit::new(per_user),
            addresses: KeyedLimit::new(per_client),
            usernames: KeyedLimit::new(per_client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedLimit;

    #[test]
    fn refuses_past_the_burst_and_says_when_to_retry() {
        let limit = KeyedLimit::new(3);
        assert!(limit.check(&1).is_ok());
        assert!(limit.check(&1).is_ok());
        assert!(limit.check(&1).is_ok());
        let retry = limit.check(&1).unwrap_err();
        assert!((1..=20).contains(&retry), "{retry}");
        // Other keys have allowances of their own.
        assert!(limit.check(&2).is_ok());
    }

    #[test]
    fn zero_disables_limiting() {
        let limit = KeyedLimit::new(0);
        assert!((0..10_000).all(|_| limit.check(&1).is_ok()));
    }

    #[test]
    fn a_spray_of_keys_stays_bounded() {
        let limit = KeyedLimit::new(600);
        for key in 0..(super::MAX_TRACKED as u64 * 2) {
            limit.check(&key).unwrap();
        }
        // Each key used one request of a 600-per-minute allowance, refilled within 100 ms: by
        // the time the spray is over, eviction has found most of them back at a full allowance.
        assert!(
            limit.tracked() <= super::MAX_TRACKED + super::EVICTION_CHECK_EVERY as usize * 2,
            "{} keys tracked",
            limit.tracked()
        );
    }
}
