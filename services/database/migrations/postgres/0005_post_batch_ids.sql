-- Message ids for the next batches, fetched by the write of this one.
--
-- `post_batch_read` hands out a batch's message ids with `nextval`, and a transaction whose
-- `nextval` writes WAL (one in 32 does) takes a transaction id, so its commit waits for a WAL
-- flush: half the batch reads waited on WALSync, and their flushes queued with the writes' own
-- (sampled from pg_stat_activity under the chat benchmark). The write transaction flushes
-- anyway, so the ids the node will need next are fetched there, in the same commit, and the
-- read asks for ids only when the node has none in hand (its first batch, or a batch larger
-- than its stock).

-- As `post_batch_write`, and on success also `batch ->> 'refill'` fresh message ids: answers
-- NULL if the room counters moved (nothing written), else {"ids": [...]}.
CREATE FUNCTION post_batch_write_refill(batch jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT post_batch_write(batch) THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object('ids', COALESCE((
        SELECT jsonb_agg(nextval('messages_id_seq'))
          FROM generate_series(1, COALESCE((batch ->> 'refill')::int, 0))), '[]'));
END
$$;

