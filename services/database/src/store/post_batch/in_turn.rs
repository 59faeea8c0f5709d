//! The order of a database node's batch writes on PostgreSQL, which lets them pipeline.
//!
//! Each batch takes its place in the order when it reserves its rooms' counters (see
//! `guarded.rs`). Its write is sent as soon as the write before it is on its way, rather than once
//! that write has answered, so the next write already waits at the room's row lock while the one
//! before it commits. It publishes its events, and so answers its callers, only once the batch
//! before it has finished, so live clients still see every room's events in commit order.
//!
//! A write that arrives at PostgreSQL before the one sent ahead of it finds its rooms short of
//! the counters it expects (migration `0006_post_batch_in_turn.sql` answers 'behind'), and is sent
//! again once the write before it has finished, if that one was written.

use tokio::sync::watch;

/// How a batch's write is doing, as the batch after it sees it. A batch dropped before it is
/// written counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteState {
    /// Deciding, not yet sent.
    Deciding,
    /// Sent to PostgreSQL, not yet answered.
    Sent,
    /// Written and its events published.
    Written,
}

/// The end of a node's write order, where the next batch takes its place.
#[derive(Debug, Default)]
pub(super) struct WriteOrder {
    last: Option<watch::Receiver<WriteState>>,
}

impl WriteOrder {
    /// Puts a new batch at the end of the order.
    pub(super) fn join(&mut self) -> InTurn {
        let (me, last) = watch::channel(WriteState::Deciding);
        InTurn {
            before: self.last.replace(last),
            me,
        }
    }
}

/// A batch's place in its node's write order.
#[derive(Debug)]
pub(super) struct InTurn {
    /// The batch before this one, if it was still around when this one joined.
    before: Option<watch::Receiver<WriteState>>,
    me: watch::Sender<WriteState>,
}

impl InTurn {
    /// Waits until the write before this one is on its way, or finished.
    pub(super) async fn before_sent(&mut self) {
        self.before_reaches(|state| state != WriteState::Deciding)
            .await;
    }

    /// Waits until the batch before this one has finished; whether it was written.
    pub(super) async fn before_finished(&mut self) -> bool {
        self.before_reaches(|state| state == WriteState::Written)
            .await
    }

    /// Waits until the batch before this one reaches a state `reached` accepts; false if it
    /// finished without, i.e. failed.
    async fn before_reaches(&mut self, reached: impl Fn(WriteState) -> bool) -> bool {
        let Some(before) = &mut self.before else {
            return true;
        };
        before.wait_for(|state| reached(*state)).await.is_ok()
    }

    /// This batch's write is on its way.
    pub(super) fn sent(&self) {
        self.me.send_replace(WriteState::Sent);
    }

    /// This batch is written and its events are published.
    pub(super) fn written(self) {
        self.me.send_replace(WriteState::Written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_batch_waits_for_the_one_before_it() {
        let mut order = WriteOrder::default();
        let first = order.join();
        let mut second = order.join();
        let mut third = order.join();
        assert!(
            futures::FutureExt::now_or_never(second.before_finished()).is_none(),
            "the first batch has not finished"
        );
        first.sent();
        second.before_sent().await;
        first.written();
        assert!(second.before_finished().await);
        // A batch dropped before it was written failed: the one after it is told so.
        drop(second);
        assert!(!third.before_finished().await);
    }

    #[tokio::test]
    async fn the_first_batch_waits_for_nothing() {
        let mut order = WriteOrder::default();
        let mut first = order.join();
        first.before_sent().await;
        assert!(first.before_finished().await);
    }
}
