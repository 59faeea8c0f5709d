//! What batch reads told this node that stays true for a while: who is a member of which room
//! (while the room sees nothing but posts) and who the authors are (for good). With it, a batch
//! whose every fact is known skips its read and goes straight to its write.
//!
//! Why it is safe: the guarded write checks the room counters it expects, and every change to a
//! room's memberships moves `last_cursor` without `last_seq`, so `last_cursor - last_seq` only
//! grows, and grows exactly when memberships may have changed (see `guarded`). A membership is
//! remembered with the difference its read saw, and used only for a write that expects counters
//! with that same difference: if the write succeeds, nothing but posts happened in between. A
//! user's name and creation time never change. Stored idempotency keys are not remembered: a
//! batch that skipped its read and carries a key already stored fails on the key's unique
//! constraint, writes nothing, and is decided again from a read, which finds the key.

use std::collections::HashMap;

use switchboard_proto::v1 as wire;

/// Entries kept at most, per kind; past that the memory starts over (it is only a shortcut).
const REMEMBERED: usize = 100_000;

/// Facts from earlier reads.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// `(room, user)` -> (the room's `last_cursor - last_seq` when read, member or not).
    members: HashMap<(i64, i64), (i64, bool)>,
    authors: HashMap<i64, wire::User>,
}

impl Known {
    /// Remembers that `user` is (or is not) a member of `room`, as read when the room's counters
    /// were `(seq, cursor)`.
    pub(super) fn membership(
        &mut self,
        room: i64,
        user: i64,
        (seq, cursor): (i64, i64),
        member: bool,
    ) {
        if self.members.len() >= REMEMBERED {
            self.members.clear();
        }
        self.members.insert((room, user), (cursor - seq, member));
    }

    pub(super) fn author(&mut self, user: wire::User) {
        if self.authors.len() >= REMEMBERED {
            self.authors.clear();
        }
        self.authors.insert(user.id, user);
    }

    /// Whether `user` is a member of `room`, if known for a room at counters `(seq, cursor)`.
    pub(super) fn is_member(
        &self,
        room: i64,
        user: i64,
        (seq, cursor): (i64, i64),
    ) -> Option<bool> {
        match self.members.get(&(room, user)) {
            Some(&(difference, member)) if difference == cursor - seq => Some(member),
            _ => None,
        }
    }

    pub(super) fn author_of(&self, user: i64) -> Option<&wire::User> {
        self.authors.get(&user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_holds_only_while_the_room_sees_nothing_but_posts() {
        let mut known = Known::default();
        known.membership(1, 7, (10, 12), true);
        known.membership(1, 8, (10, 12), false);
        assert_eq!(known.is_member(1, 7, (10, 12)), Some(true));
        // Posts moved both counters by the same amount: still known.
        assert_eq!(known.is_member(1, 7, (25, 27)), Some(true));
        assert_eq!(known.is_member(1, 8, (25, 27)), Some(false));
        // Something else happened in the room (a join, a leave, an edit): unknown again.
        assert_eq!(known.is_member(1, 7, (25, 28)), None);
        // Never read.
        assert_eq!(known.is_member(2, 7, (10, 12)), None);
    }
}
