//! Per-user rate limiting: a token bucket per user on each http node (so with N http nodes a
//! user's ceiling is up to N times the setting). Refused requests get 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets of every user seen recently.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refreshed: Instant,
}

/// Above this many tracked users, idle (full) buckets are dropped.
const MAX_TRACKED: usize = 100_000;

impl RateLimiter {
    /// `per_minute` requests per user per minute, in bursts of up to that many; 0 disables.
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `user`; on refusal returns the seconds until one is available.
    pub(crate) fn check(&self, user: i64) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > MAX_TRACKED {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.refreshed).as_secs_f64() * per_second < capacity
            });
        }
        let bucket = buckets.entry(user).or_insert(Bucket {
            tokens: capacity,
            refreshed: now,
        });
        let elapsed = now.duration_since(bucket.refreshed).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.refreshed = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;

    #[test]
    fn refuses_past_the_burst_and_says_when_to_retry() {
        let limiter = RateLimiter::new(3);
        assert!(limiter.check(1).is_ok());
        assert!(limiter.check(1).is_ok());
        assert!(limiter.check(1).is_ok());
        let retry = limiter.check(1).unwrap_err();
        assert!((1..=20).contains(&retry), "{retry}");
        // Other users have buckets of their own.
        assert!(limiter.check(2).is_ok());
    }

    #[test]
    fn zero_disables_limiting() {
        let limiter = RateLimiter::new(0);
        assert!((0..10_000).all(|_| limiter.check(1).is_ok()));
    }
}
