-- A batch's write also stores each post's activity entry (`message_posted`), in the same
-- statement as the message, so the activity log holds one entry per stored message whatever
-- dies after the commit. The entry's id is derived from the message's, so it is never stored
-- twice. A batch from a node of the previous version carries no `logs` and stores none, as
-- before.
--
-- The rows the batch wrote until now are written by the same function under a new name;
-- `post_batch_write` and `post_batch_write_in_turn` call `post_batch_insert` by name, so they
-- write the entries too.
ALTER FUNCTION post_batch_insert(jsonb) RENAME TO post_batch_insert_rows;

CREATE FUNCTION post_batch_insert(batch jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM post_batch_insert_rows(batch);
    INSERT INTO log_entries (id, at, node, level, kind, message, fields)
    SELECT l.id, l.at, l.node, l.level, l.kind, l.message, l.fields
      FROM jsonb_to_recordset(COALESCE(batch -> 'logs', '[]'::jsonb))
           AS l(id text, at bigint, node text, level text, kind text, message text, fields text)
        ON CONFLICT (id) DO NOTHING;
END
$$;
