//! Sessions this http node has checked recently, so an active client's requests do not each
//! cost a database call to learn who they are.
//!
//! A token's session is trusted from the cache for at most `SWITCHBOARD_SESSION_CACHE_MS`
//! (default 5 s; 0 turns the cache off). Logout must still end a token everywhere at once, so the
//! node that logs a session out calls the `http.sessions` service of every http node it can see
//! and answers the client only once they have all dropped it; the short lifetime only bounds how
//! long a node that could not be told (cut off at that moment) could go on accepting the token.
//!
//! Keys are token *hashes*: the cache, the broadcast and any log line never hold a usable token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchboard::{Bytes, Request, ServiceError};
use switchboard_proto::names;

use crate::model::User;

/// Entries kept at most; past it, expired ones are swept and, if that is not enough, all go.
const CAPACITY: usize = 100_000;

/// Recently checked sessions by token hash.
#[derive(Debug)]
pub(crate) struct SessionCache {
    entries: Mutex<HashMap<String, (User, Instant)>>,
    lifetime: Duration,
}

impl SessionCache {
    /// A cache trusting a check for `lifetime`; zero disables it.
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            lifetime,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (User, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user of `token_hash` if it was checked within the lifetime.
    pub(crate) fn get(&self, token_hash: &str) -> Option<User> {
        if self.lifetime.is_zero() {
            return None;
        }
        let entries = self.entries();
        let (user, checked) = entries.get(token_hash)?;
        (checked.elapsed() < self.lifetime).then(|| user.clone())
    }

    /// Remembers that `token_hash` belongs to `user`, as the database just said.
    pub(crate) fn insert(&self, token_hash: &str, user: &User) {
        if self.lifetime.is_zero() {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= CAPACITY {
            let lifetime = self.lifetime;
            entries.retain(|_, (_, checked)| checked.elapsed() < lifetime);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(token_hash.to_owned(), (user.clone(), Instant::now()));
    }

    /// Forgets `token_hash` (it was logged out).
    pub(crate) fn revoke(&self, token_hash: &str) {
        self.entries().remove(token_hash);
    }

    /// Serves a revocation from another http node (or this one).
    pub(crate) fn serve(&self, request: &Request) -> Result<Bytes, ServiceError> {
        match &*request.method {
            names::SESSION_REVOKED => {
                let token_hash = std::str::from_utf8(&request.payload).map_err(|_| {
                    ServiceError::new("invalid_request", "a token hash is ASCII hex")
                })?;
                self.revoke(token_hash);
                Ok(Bytes::new())
            }
            other => Err(ServiceError::new(
                "unknown_method",
                format!("{} has no method {other}", names::HTTP_SESSIONS),
            )),
        }
    }

    /// The payload of a revocation.
    pub(crate) fn revocation(token_hash: &str) -> Bytes {
        Bytes::copy_from_slice(token_hash.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            id: 7,
            username: "alice".into(),
        }
    }

    #[test]
    fn a_checked_session_is_trusted_until_revoked() {
        let cache = SessionCache::new(Duration::from_secs(60));
        assert!(cache.get("hash").is_none());
        cache.insert("hash", &alice());
        assert_eq!(cache.get("hash").map(|u| u.id), Some(7));
        cache
            .serve(&Request {
                method: names::SESSION_REVOKED.into(),
                payload: SessionCache::revocation("hash"),
                trace_id: Default::default(),
            })
            .unwrap();
        assert!(cache.get("hash").is_none());
    }

    #[test]
    fn a_zero_lifetime_caches_nothing() {
        let cache = SessionCache::new(Duration::ZERO);
        cache.insert("hash", &alice());
        assert!(cache.get("hash").is_none());
    }

    #[test]
    fn entries_expire() {
        let cache = SessionCache::new(Duration::from_nanos(1));
        cache.insert("hash", &alice());
        // The lifetime passes before the lookup reads the clock again.
        assert!(cache.get("hash").is_none());
    }
}
