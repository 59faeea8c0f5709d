-- A batch's write also stores each post's activity entry (`message_posted`), in the same
-- statement as the message, so the activity log holds one entry per stored message whatever
-- dies after the commit. The entry's id is derived from the message's, so it is never stored
-- twice. A batch from a node of the previous version carries no `logs` and stores none, as
-- before.
CREATE OR REPLACE FUNCTION post_batch_insert(batch jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO messages (id, room_id, seq, author_id, body, created_at)
    SELECT m.id, m.room_id, m.seq, m.author_id, m.body, m.created_at
      FROM jsonb_to_recordset(batch -> 'messages') AS m(id bigint, room_id bigint, seq bigint,
                                                        author_id bigint, body text,
                                                        created_at bigint);
    INSERT INTO room_events (room_id, cursor, payload, created_at)
    SELECT e.room_id, e.cursor, decode(e.payload, 'hex'), e.created_at
      FROM jsonb_to_recordset(batch -> 'events') AS e(room_id bigint, cursor bigint,
                                                      payload text, created_at bigint);
    INSERT INTO idempotency_keys (user_id, key, fingerprint, response, created_at)
    SELECT k.user_id, k.key, k.fingerprint, decode(k.response, 'hex'), k.created_at
      FROM jsonb_to_recordset(batch -> 'keys') AS k(user_id bigint, key text, fingerprint text,
                                                    response text, created_at bigint);
    INSERT INTO log_entries (id, at, node, level, kind, message, fields)
    SELECT l.id, l.at, l.node, l.level, l.kind, l.message, l.fields
      FROM jsonb_to_recordset(COALESCE(batch -> 'logs', '[]'::jsonb))
           AS l(id text, at bigint, node text, level text, kind text, message text, fields text)
        ON CONFLICT (id) DO NOTHING;
END
$$;
