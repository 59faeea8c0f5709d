//! Lost and reset database connections: which errors are a passing condition, and how the pool
//! stops handing out connections that a reset already killed.
//!
//! A PostgreSQL restart ends every session ("terminating connection due to administrator
//! command"), and a failover or a network blip resets connections. The request that met it did
//! nothing wrong: the service retries it on a fresh connection within its deadline (posts carry
//! an idempotency key, so a retry never duplicates). The pool pings a connection before use only
//! after a second idle, which would let each dead connection of the pool fail one more statement
//! after the server is back; so for a while after a reset, every connection older than the reset
//! is pinged on its way out, and a dead one is replaced instead of failing a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long after a reset connections older than it are checked before use: longer than a fast
/// server restart takes, after which every such connection was either pinged or idle long enough
/// to be pinged anyway.
const CHECK_AFTER_RESET: Duration = Duration::from_secs(10);

/// Whether `error` is a lost, reset or refused connection (or a conflict the database resolves
/// by aborting one side), which a retry on a fresh connection can get past.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            // PostgreSQL: class 08 is a connection exception; 57P01-57P03 are the server shutting
            // down, crashing or starting; 53300 too many connections; 40001 and 40P01 are a
            // serialization failure and a deadlock, where the server aborted this side.
            // SQLite: 5 and 6 are SQLITE_BUSY and SQLITE_LOCKED.
            code.starts_with("08")
                || matches!(
                    &*code,
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" | "5" | "6"
                )
        }),
        _ => false,
    }
}

/// When the store last met a reset connection.
#[derive(Debug)]
pub(crate) struct Resets {
    started: Instant,
    /// Milliseconds from `started` to the last reset, plus one; 0 for never.
    last: AtomicU64,
}

impl Default for Resets {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Resets {
    /// Records that a connection was found lost or reset just now.
    pub(crate) fn record(&self) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.last.store(now, Ordering::Relaxed);
    }

    /// Whether a pooled connection of age `age` may have been killed by a recent reset, and so
    /// must be pinged before it is used.
    pub(crate) fn may_have_killed(&self, age: Duration) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let since = self
            .started
            .elapsed()
            .saturating_sub(Duration::from_millis(last - 1));
        since < CHECK_AFTER_RESET && age >= since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connections_older_than_a_recent_reset_are_suspect() {
        let resets = Resets::default();
        assert!(
            !resets.may_have_killed(Duration::from_secs(3600)),
            "no reset yet"
        );
        resets.record();
        assert!(
            resets.may_have_killed(Duration::from_secs(60)),
            "made before it"
        );
        assert!(
            !resets.may_have_killed(Duration::ZERO),
            "made after it (a fresh connection)"
        );
    }

    #[test]
    fn lost_connections_are_transient_and_rule_violations_are_not() {
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::PoolClosed));
    }
}
