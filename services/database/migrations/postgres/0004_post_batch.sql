-- Group commit's two statements on PostgreSQL (see src/store/post_batch/guarded.rs).
--
-- A batch of posts is one read and one guarded write, each a single autocommit statement, so the
-- room's row lock is held for one statement and its commit instead of for a transaction's worth
-- of round trips. Both take and give JSON because the database node reaches PostgreSQL through
-- sqlx's `Any` driver, which binds scalars only.

-- Messages and events no longer check their room with a foreign key. Every insert of either
-- moves its room's counters in the same transaction (the room exists, and rooms are never
-- deleted), and the check is what made a busy room slow: each one locks the room's row FOR KEY
-- SHARE, a row every batch also updates, so each check walked the row's chain of dead versions
-- and shared its lock through a multixact, twice per post.
ALTER TABLE messages DROP CONSTRAINT messages_room_id_fkey;
ALTER TABLE room_events DROP CONSTRAINT room_events_room_id_fkey;

-- Every lookup below is by primary key, one per row asked about (`LATERAL ... LIMIT 1` keeps the
-- planner from turning one into a join with a scan): PL/pgSQL makes these plans once per
-- connection, often while the tables are still empty, and they must stay right as they grow.

-- Everything a batch needs to decide each post, from one snapshot: the rooms' counters, which of
-- the authors are members of the rooms they post to, the idempotency keys already stored, the
-- authors, and one fresh message id per post.
--   batch: {"rooms": [room ids], "members": [[room, user], ...], "users": [user ids],
--           "keys": [[user, key], ...], "count": n}
CREATE FUNCTION post_batch_read(batch jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_build_object(
        'rooms', COALESCE((
            SELECT jsonb_agg(jsonb_build_array(r.id, r.last_seq, r.last_cursor))
              FROM jsonb_array_elements_text(batch -> 'rooms') AS w,
                   LATERAL (SELECT * FROM rooms WHERE id = w::bigint LIMIT 1) AS r), '[]'),
        'members', COALESCE((
            SELECT jsonb_agg(jsonb_build_array(m.room_id, m.user_id))
              FROM jsonb_array_elements(batch -> 'members') AS w,
                   LATERAL (SELECT * FROM memberships
                             WHERE room_id = (w ->> 0)::bigint AND user_id = (w ->> 1)::bigint
                             LIMIT 1) AS m), '[]'),
        'keys', COALESCE((
            SELECT jsonb_agg(jsonb_build_array(k.user_id, k.key, k.fingerprint,
                                               encode(k.response, 'hex')))
              FROM jsonb_array_elements(batch -> 'keys') AS w,
                   LATERAL (SELECT * FROM idempotency_keys
                             WHERE user_id = (w ->> 0)::bigint AND key = w ->> 1
                             LIMIT 1) AS k), '[]'),
        'users', COALESCE((
            SELECT jsonb_agg(jsonb_build_array(u.id, u.username, u.created_at))
              FROM jsonb_array_elements_text(batch -> 'users') AS w,
                   LATERAL (SELECT * FROM users WHERE id = w::bigint LIMIT 1) AS u), '[]'),
        'ids', COALESCE((
            SELECT jsonb_agg(nextval('messages_id_seq'))
              FROM generate_series(1, (batch ->> 'count')::int)), '[]')
    );
END
$$;

-- Writes a batch decided from `post_batch_read` if no room's counters moved since, and answers
-- whether it did: `seq`/`cursor` are the counters the batch expects, `count` how many posts it
-- adds. The rooms are locked first, in id order (so two batches never wait for each other's
-- rooms), and checked under the lock; a room whose counters moved (another writer got there
-- first) makes it write nothing and answer false, and the database node decides the batch again.
-- An idempotency key stored meanwhile aborts it with unique_violation.
--   batch: {"rooms": [{id, seq, cursor, count}], "messages": [{id, room_id, seq, author_id, body,
--           created_at}], "events": [{room_id, cursor, payload (hex), created_at}],
--           "keys": [{user_id, key, fingerprint, response (hex), created_at}]}
CREATE FUNCTION post_batch_write(batch jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    room record;
BEGIN
    FOR room IN
        SELECT * FROM jsonb_to_recordset(batch -> 'rooms')
                   AS b(id bigint, seq bigint, cursor bigint, count bigint)
         ORDER BY id
    LOOP
        PERFORM 1 FROM rooms
          WHERE id = room.id AND last_seq = room.seq AND last_cursor = room.cursor
            FOR UPDATE;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        UPDATE rooms
           SET last_seq = last_seq + room.count, last_cursor = last_cursor + room.count
         WHERE id = room.id;
    END LOOP;
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
    RETURN true;
END
$$;
