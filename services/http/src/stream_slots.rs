//! A cap on the live streams one user holds open on this http node, and on how often they open
//! them. Each stream holds a task, a channel and a socket: without a cap, one token could open
//! thousands and take the node's memory for itself. Each opening subscribes and reads the room's
//! log: without a rate, one token opening and closing streams as fast as the node answers could
//! keep the database busy for everyone. A stream takes a [`StreamSlot`] when it opens and gives it
//! back when its task ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use crate::error::ApiError;
use crate::rate_limit::KeyedLimit;

/// The streams each user holds open now, and the openings each may still make.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    cap: usize,
    held: Mutex<HashMap<i64, usize>>,
    openings: KeyedLimit<i64>,
}

/// One open stream of one user; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    user: i64,
}

impl StreamSlots {
    /// At most `cap` streams per user (0 for no cap), opened at most `openings_per_minute` times
    /// a minute per user, in bursts of up to that many (0 for no limit).
    pub(crate) fn new(cap: usize, openings_per_minute: u32) -> Arc<Self> {
        Arc::new(Self {
            cap,
            held: Mutex::default(),
            openings: KeyedLimit::new(openings_per_minute),
        })
    }

    /// A slot for one more stream of `user`, or 429: `too_many_streams` at the cap, or
    /// `too_many_stream_openings` (with `Retry-After`) past the rate. A refusal at the cap does
    /// not use up an opening.
    pub(crate) fn take(self: &Arc<Self>, user: i64) -> Result<StreamSlot, ApiError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(user).or_default();
        if self.cap != 0 && *count >= self.cap {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "this user already holds {} live streams on this node; close one first",
                    self.cap
                ),
            ));
        }
        if let Err(retry_after) = self.openings.check(&user) {
            return Err(ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_stream_openings",
                    "this user opened live streams too often on this node; retry after the \
                     time in Retry-After",
                )
            });
        }
        *count += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            user,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StreamSlots;

    #[test]
    fn a_user_at_the_cap_is_refused_until_a_stream_closes() {
        let slots = StreamSlots::new(2, 0);
        let first = slots.take(1).unwrap();
        let _second = slots.take(1).unwrap();
        let refused = slots.take(1).unwrap_err();
        assert_eq!(refused.code, "too_many_streams");
        // Others are not affected.
        let _other = slots.take(2).unwrap();
        drop(first);
        assert!(slots.take(1).is_ok());
    }

    #[test]
    fn a_user_opening_too_often_is_refused_with_a_time_to_retry() {
        let slots = StreamSlots::new(2, 3);
        for _ in 0..3 {
            drop(slots.take(1).unwrap());
        }
        let refused = slots.take(1).unwrap_err();
        assert_eq!(refused.code, "too_many_stream_openings");
        assert!(refused.retry_after.is_some_and(|s| s >= 1));
        // Others are not affected.
        assert!(slots.take(2).is_ok());
        // A refusal at the cap uses no opening.
        let _a = slots.take(3).unwrap();
        let _b = slots.take(3).unwrap();
        assert_eq!(slots.take(3).unwrap_err().code, "too_many_streams");
        drop(_a);
        assert!(slots.take(3).is_ok());
    }
}
