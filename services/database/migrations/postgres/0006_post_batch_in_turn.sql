-- A node's batch writes pipeline: the next one is sent while the one before it commits.
--
-- Until now a database node sent a batch's write only once the write before it had answered, so
-- a busy room's writes were one round trip, one wake-up of the node and one encoding of the next
-- batch apart, with the row unlocked in between. Now the next write is sent as soon as the one
-- before it is on its way, and waits at the room's row lock, taking it the moment the first
-- commits. Two writes on their way over two connections can still arrive in the wrong order: the
-- later one then finds the room's counters *behind* what it expects (only posts missing, not yet
-- landed), lets go of the row and waits for the earlier one rather than failing; if that one
-- does not come soon, it answers 'behind', and the node sends it again once the write before it
-- has answered. See src/store/post_batch/in_turn.rs.
--
-- The guard is split out of `post_batch_write`, and it now checks every room before bumping any:
-- the old function bumped each room as it checked it, so a batch whose second room had moved
-- answered false after bumping the first, and the autocommit kept that bump, a gap in the first
-- room's seqs. Nodes of the previous version keep calling `post_batch_write_refill`, which now
-- uses the fixed guard.

-- Locks the batch's rooms in id order and checks that each holds the counters the batch expects;
-- only if all do, moves each by its count. Answers 'written' (counters moved), 'behind' (some
-- room stayed short of them by posts alone: a write sent before this one has not landed) or
-- 'moved' (anything else; nothing was changed).
--
-- A room short by posts alone usually means the write sent just before this one is a moment
-- behind it on its way here. Holding the row lock while waiting for it would keep it out, so
-- the locks are taken in a subtransaction, which `behind_by_posts` rolls back, releasing them;
-- the guard then waits 0.2 ms and tries again, up to 20 times, before answering 'behind'.
CREATE FUNCTION post_batch_guard(batch jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    room record;
    held record;
BEGIN
    FOR attempt IN 1..20 LOOP
        BEGIN
            FOR room IN
                SELECT * FROM jsonb_to_recordset(batch -> 'rooms')
                           AS b(id bigint, seq bigint, cursor bigint, count bigint)
                 ORDER BY id
            LOOP
                SELECT last_seq, last_cursor INTO held FROM rooms WHERE id = room.id FOR UPDATE;
                IF NOT FOUND THEN
                    RETURN 'moved';
                END IF;
                IF held.last_seq <> room.seq OR held.last_cursor <> room.cursor THEN
                    IF held.last_seq < room.seq
                       AND held.last_cursor - held.last_seq = room.cursor - room.seq THEN
                        RAISE EXCEPTION USING ERRCODE = 'SBBHD', MESSAGE = 'behind_by_posts';
                    END IF;
                    RETURN 'moved';
                END IF;
            END LOOP;
            FOR room IN
                SELECT * FROM jsonb_to_recordset(batch -> 'rooms')
                           AS b(id bigint, seq bigint, cursor bigint, count bigint)
            LOOP
                UPDATE rooms
                   SET last_seq = last_seq + room.count, last_cursor = last_cursor + room.count
                 WHERE id = room.id;
            END LOOP;
            RETURN 'written';
        EXCEPTION WHEN SQLSTATE 'SBBHD' THEN
            PERFORM pg_sleep(0.0002);
        END;
    END LOOP;
    RETURN 'behind';
END
$$;

-- The batch's rows, once its guard has moved the counters.
CREATE FUNCTION post_batch_insert(batch jsonb) RETURNS void
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
END
$$;

-- The previous version's write, on the fixed guard.
CREATE OR REPLACE FUNCTION post_batch_write(batch jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF post_batch_guard(batch) <> 'written' THEN
        RETURN false;
    END IF;
    PERFORM post_batch_insert(batch);
    RETURN true;
END
$$;

-- Writes a batch if its rooms hold the counters it expects, and then also fetches
-- `batch ->> 'refill'` fresh message ids for the batches to come. Answers
-- {"status": "written", "ids": [...]}, or {"status": "behind"} / {"status": "moved"} having
-- written nothing.
CREATE FUNCTION post_batch_write_in_turn(batch jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    status text;
BEGIN
    status := post_batch_guard(batch);
    IF status <> 'written' THEN
        RETURN jsonb_build_object('status', status);
    END IF;
    PERFORM post_batch_insert(batch);
    RETURN jsonb_build_object('status', status, 'ids', COALESCE((
        SELECT jsonb_agg(nextval('messages_id_seq'))
          FROM generate_series(1, COALESCE((batch ->> 'refill')::int, 0))), '[]'));
END
$$;
