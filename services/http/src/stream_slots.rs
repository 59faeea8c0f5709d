//! A cap on the live streams one user holds open on this http node. Each stream holds a task, a
//! channel and a socket: without a cap, one token could open thousands and take the node's
//! memory for itself. A stream takes a [`StreamSlot`] when it opens and gives it back when its
//! task ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use crate::error::ApiError;

/// The streams each user holds open now.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    cap: usize,
    held: Mutex<HashMap<i64, usize>>,
}

/// One open stream of one user; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    user: i64,
}

impl StreamSlots {
    /// At most `cap` streams per user; 0 for no cap.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            held: Mutex::default(),
        })
    }

    /// A slot for one more stream of `user`, or 429 `too_many_streams` at the cap.
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
        let slots = StreamSlots::new(2);
        let first = slots.take(1).unwrap();
        let _second = slots.take(1).unwrap();
        let refused = slots.take(1).unwrap_err();
        assert_eq!(refused.code, "too_many_streams");
        // Others are not affected.
        let _other = slots.take(2).unwrap();
        drop(first);
        assert!(slots.take(1).is_ok());
    }
}
