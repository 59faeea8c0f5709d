-- Posts no longer check their author with a foreign key.
--
-- Each post checked its author twice (its message and its idempotency key), each check a query
-- that share-locks the user's row at the end of the INSERT; concurrent batches by the same
-- authors then share those locks through multixacts. About a tenth of PostgreSQL's time per post
-- went there (`perf record -a` over the bench's chat point: AfterTriggerEndQuery). The checks
-- could never fail: a post is only written by a member of its room (a batch by what its read
-- found, which its guard proves still holds; a single post by its transaction's own check), a
-- membership's foreign key checks its user, and users are never deleted. The rooms' checks went
-- the same way in 0004.
ALTER TABLE messages DROP CONSTRAINT messages_author_id_fkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_user_id_fkey;
