//! The calls of one link waiting for their replies: a slab of slots reused call after call, each
//! holding the waiting task's waker until the reply (or the reason there is none) takes its place.
//!
//! A call used to make a oneshot channel (an allocation) and a hash-map entry keyed by its id; at
//! hundreds of thousands of calls a second both showed in profiles. Here the call id *is* the
//! slot's address: its index in the low 32 bits and the slot's generation in the high 32, bumped
//! whenever the slot is given up. A reply is delivered with one lock and an index, and a late
//! reply to a call that gave up, whose slot may have been reused since, finds another generation
//! and is dropped. A caller that stops waiting gives its slot back as its future is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::time::Instant;

use crate::error::NodeError;

/// What a waiting call gets: the reply's payload, or why there is none.
pub(crate) type Outcome = Result<Bytes, NodeError>;

/// The reply slots of one link.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Slot>,
    /// Indices of the slots no call holds.
    free: Vec<u32>,
    /// The link closed: no new call may wait.
    closed: bool,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    state: State,
}

#[derive(Debug)]
enum State {
    Free,
    /// A call waits until `deadline`; `waker` is its task once it has been polled.
    Waiting {
        deadline: Instant,
        waker: Option<Waker>,
    },
    /// The outcome, not yet taken by the call.
    Done(Outcome),
}

fn id(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn split(id: u64) -> (usize, u32) {
    ((id & u64::from(u32::MAX)) as usize, (id >> 32) as u32)
}

impl Slots {
    /// The slot call `id` holds, if it still holds it.
    fn held(&mut self, id: u64) -> Option<&mut Slot> {
        let (index, generation) = split(id);
        self.slots
            .get_mut(index)
            .filter(|slot| slot.generation == generation && !matches!(slot.state, State::Free))
    }

    /// Gives up the slot call `id` holds, if it still holds it.
    fn release(&mut self, id: u64) {
        if self.held(id).is_some() {
            self.free_slot(split(id).0);
        }
    }

    fn free_slot(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.state = State::Free;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
    }

    /// Ends every call waiting on a slot `pick` selects with `outcome`; returns their tasks,
    /// to be woken once the lock is released.
    fn finish(
        &mut self,
        mut pick: impl FnMut(Instant) -> bool,
        outcome: impl Fn() -> NodeError,
    ) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for slot in &mut self.slots {
            if let State::Waiting { deadline, waker } = &mut slot.state
                && pick(*deadline)
            {
                wakers.extend(waker.take());
                slot.state = State::Done(Err(outcome()));
            }
        }
        wakers
    }
}

impl Replies {
    /// Reserves a slot for a call whose caller waits until `deadline`: the call's id, and the
    /// future of its reply. `None` once the link has closed.
    pub(crate) fn register(&self, deadline: Instant) -> Option<(u64, Reply<'_>)> {
        let mut slots = self.lock();
        if slots.closed {
            return None;
        }
        let index = match slots.free.pop() {
            Some(index) => index,
            None => {
                // More calls in flight than ever before on this link: the slab grows by one.
                // Ids carry the index in 32 bits; the in-flight bound keeps far below that.
                let index = u32::try_from(slots.slots.len()).ok()?;
                slots.slots.push(Slot {
                    generation: 0,
                    state: State::Free,
                });
                index
            }
        };
        let slot = &mut slots.slots[index as usize];
        slot.state = State::Waiting {
            deadline,
            waker: None,
        };
        let id = id(index, slot.generation);
        Some((
            id,
            Reply {
                replies: self,
                id,
                done: false,
            },
        ))
    }

    /// Hands `outcome` to call `id`; dropped if that call no longer waits.
    pub(crate) fn complete(&self, id: u64, outcome: Outcome) {
        let waker = {
            let mut slots = self.lock();
            let Some(slot) = slots.held(id) else {
                return;
            };
            let State::Waiting { waker, .. } = &mut slot.state else {
                return;
            };
            let waker = waker.take();
            slot.state = State::Done(outcome);
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Fails every call whose deadline has passed with `Timeout`.
    pub(crate) fn expire(&self, now: Instant) {
        let wakers = self.lock().finish(
            |deadline| deadline <= now,
            || NodeError::Timeout {
                service: String::new(),
                timeout: std::time::Duration::ZERO,
            },
        );
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Fails every waiting call with `error()` and refuses new ones: the link closed.
    pub(crate) fn close(&self, error: impl Fn() -> NodeError) {
        let wakers = {
            let mut slots = self.lock();
            slots.closed = true;
            slots.finish(|_| true, error)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A poisoned lock only means a thread panicked while holding it; the slots are intact.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The reply to one call; dropping it before it is ready gives the slot up.
#[derive(Debug)]
pub(crate) struct Reply<'a> {
    replies: &'a Replies,
    id: u64,
    done: bool,
}

impl Future for Reply<'_> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = &mut *self;
        let mut slots = this.replies.lock();
        let Some(slot) = slots.held(this.id) else {
            // Only a reply already taken leaves a slot behind, and then this is not polled.
            this.done = true;
            return Poll::Ready(Err(NodeError::Transport(
                "reply polled after it ended".into(),
            )));
        };
        match std::mem::replace(&mut slot.state, State::Free) {
            State::Waiting {
                deadline,
                mut waker,
            } => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    waker = Some(cx.waker().clone());
                }
                slot.state = State::Waiting { deadline, waker };
                Poll::Pending
            }
            State::Done(outcome) => {
                slots.free_slot(split(this.id).0);
                this.done = true;
                Poll::Ready(outcome)
            }
            State::Free => unreachable!("a held slot is never free"),
        }
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.replies.lock().release(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn a_reply_reaches_its_call() {
        let replies = Replies::default();
        let (id, mut reply) = replies.register(later()).unwrap();
        assert!((&mut reply).now_or_never().is_none(), "nothing arrived yet");
        replies.complete(id, Ok(Bytes::from_static(b"pong")));
        assert_eq!(reply.await.unwrap(), Bytes::from_static(b"pong"));
    }

    #[tokio::test]
    async fn a_late_reply_never_completes_the_next_call_in_its_slot() {
        let replies = Replies::default();
        let (old, reply) = replies.register(later()).unwrap();
        drop(reply);
        let (new, reply) = replies.register(later()).unwrap();
        assert_ne!(old, new, "the slot is reused under another generation");
        replies.complete(old, Ok(Bytes::from_static(b"stale")));
        replies.complete(new, Ok(Bytes::from_static(b"fresh")));
        assert_eq!(reply.await.unwrap(), Bytes::from_static(b"fresh"));
    }

    #[test]
    fn ids_nobody_holds_are_ignored() {
        let replies = Replies::default();
        for id in [0, 1, u64::MAX, 1 << 32] {
            replies.complete(id, Ok(Bytes::new()));
        }
        let (id, _reply) = replies.register(later()).unwrap();
        replies.complete(id + (1 << 32), Ok(Bytes::new()));
    }

    #[tokio::test]
    async fn calls_past_their_deadline_time_out() {
        let replies = Replies::default();
        let now = Instant::now();
        let (_, due) = replies.register(now).unwrap();
        let (_, pending) = replies.register(later()).unwrap();
        replies.expire(now);
        assert!(matches!(due.await, Err(NodeError::Timeout { .. })));
        assert!(pending.now_or_never().is_none());
    }

    #[tokio::test]
    async fn closing_fails_waiting_calls_and_refuses_new_ones() {
        let replies = Replies::default();
        let (_, reply) = replies.register(later()).unwrap();
        replies.close(|| NodeError::Transport("closed".into()));
        assert!(matches!(reply.await, Err(NodeError::Transport(_))));
        assert!(replies.register(later()).is_none());
    }

    #[test]
    fn slots_are_reused() {
        let replies = Replies::default();
        for _ in 0..100 {
            let taken: Vec<_> = (0..8).map(|_| replies.register(later()).unwrap()).collect();
            drop(taken);
        }
        assert_eq!(replies.lock().slots.len(), 8);
    }
}
