-- A maintained unread counter per membership, and a copy of the conversation's activity time
-- on each membership, so that the badge and the inbox read one index of the caller's
-- memberships instead of counting messages (MariaDB does not use the participant's marker as a
-- range bound in a correlated COUNT, so counting scanned every message of every conversation)
-- and instead of joining and sorting every membership's conversation to cut a page.
--
-- For an ACTIVE membership (left_at IS NULL), always exactly:
--   unread_count = COUNT(messages of the conversation WHERE seq > last_read_seq
--                        AND sender_id <> user_id AND deleted_at IS NULL
--                        AND is_system_message IS NOT TRUE)
--   activity_at  = COALESCE(CONVERSATIONS.last_message_at, CONVERSATIONS.created_at)
-- Inactive memberships are never read; both are set again when they are reactivated.
--
-- Who keeps them exact (see docs/schema.md, "Unread counters and inbox order"):
--   * the service, in the transactions that send, mark read and add participants;
--   * trg_messages_unread_on_delete / _on_purge: soft deletes (and undeletes, hard deletes) by
--     any writer, the service included (both systems' soft delete is the same bare UPDATE);
--   * the rollout triggers, for the previous system's inserts, time-only read markers,
--     last_message_at updates, participant inserts and reactivations.

-- 1. The columns (instant: appended, defaulted/nullable).
ALTER TABLE CONVERSATION_PARTICIPANTS
    ADD COLUMN IF NOT EXISTS unread_count INT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS activity_at TIMESTAMP NULL DEFAULT NULL,
    ALGORITHM=INSTANT;

-- 2. The caller's active memberships, most recent activity first, with everything the badge
--    needs: the inbox page is a range of it read backwards, the badge an index-only read.
ALTER TABLE CONVERSATION_PARTICIPANTS
    ADD INDEX IF NOT EXISTS idx_participants_inbox (user_id, left_at, activity_at, conversation_id, unread_count, is_muted),
    ALGORITHM=INPLACE, LOCK=NONE;

-- 3. Triggers. CREATE OR REPLACE swaps a trigger in one statement, so the previous system
--    never inserts a message while no numbering trigger exists.

-- A message inserted without seq (only the previous system does that) takes the next seq under
-- the conversation's row lock, as before, and now also counts as unread for the other active
-- participants, exactly as append_message does.
CREATE OR REPLACE TRIGGER trg_messages_assign_seq
BEFORE INSERT ON MESSAGES
FOR EACH ROW
BEGIN
    IF NEW.seq IS NULL THEN
        UPDATE CONVERSATIONS SET last_seq = last_seq + 1 WHERE id = NEW.conversation_id;
        SET NEW.seq = (SELECT last_seq FROM CONVERSATIONS WHERE id = NEW.conversation_id);
        IF NEW.deleted_at IS NULL AND NEW.is_system_message IS NOT TRUE THEN
            UPDATE CONVERSATION_PARTICIPANTS SET unread_count = unread_count + 1
            WHERE conversation_id = NEW.conversation_id AND user_id <> NEW.sender_id
              AND left_at IS NULL AND last_read_seq < NEW.seq;
        END IF;
    END IF;
END;

-- A read marker moved by last_read_at alone (the previous system) also moves last_read_seq
-- (forward only), as before, and now recounts. A membership that becomes active again (by any
-- writer) is recounted, and its activity time refreshed: neither is maintained while inactive.
CREATE OR REPLACE TRIGGER trg_participants_read_seq
BEFORE UPDATE ON CONVERSATION_PARTICIPANTS
FOR EACH ROW
BEGIN
    DECLARE recount BOOLEAN DEFAULT FALSE;
    IF NEW.last_read_seq = OLD.last_read_seq
       AND NEW.last_read_at IS NOT NULL
       AND NOT (NEW.last_read_at <=> OLD.last_read_at) THEN
        SET NEW.last_read_seq = GREATEST(OLD.last_read_seq, COALESCE(
            (SELECT MAX(m.seq) FROM MESSAGES m
             WHERE m.conversation_id = NEW.conversation_id AND m.created_at <= NEW.last_read_at), 0));
        SET recount = NEW.last_read_seq <> OLD.last_read_seq;
    END IF;
    IF OLD.left_at IS NOT NULL AND NEW.left_at IS NULL THEN
        SET recount = TRUE;
        SET NEW.activity_at = (SELECT COALESCE(c.last_message_at, c.created_at)
            FROM CONVERSATIONS c WHERE c.id = NEW.conversation_id);
    END IF;
    IF recount THEN
        SET NEW.unread_count = (SELECT COUNT(*) FROM MESSAGES m
            WHERE m.conversation_id = NEW.conversation_id AND m.seq > NEW.last_read_seq
              AND m.sender_id <> NEW.user_id AND m.deleted_at IS NULL
              AND m.is_system_message IS NOT TRUE);
    END IF;
END;

-- A membership inserted by the previous system (marker at its default 0, no activity time)
-- starts with the exact count and the conversation's activity. The service's inserts give the
-- activity and put the marker at the newest seq (or insert before any message), so for them
-- the count is one probe of an empty index range that yields 0.
CREATE OR REPLACE TRIGGER trg_participants_unread_on_insert
BEFORE INSERT ON CONVERSATION_PARTICIPANTS
FOR EACH ROW
BEGIN
    IF NEW.activity_at IS NULL THEN
        SET NEW.activity_at = (SELECT COALESCE(c.last_message_at, c.created_at)
            FROM CONVERSATIONS c WHERE c.id = NEW.conversation_id);
    END IF;
    IF NEW.left_at IS NULL THEN
        SET NEW.unread_count = (SELECT COUNT(*) FROM MESSAGES m
            WHERE m.conversation_id = NEW.conversation_id AND m.seq > NEW.last_read_seq
              AND m.sender_id <> NEW.user_id AND m.deleted_at IS NULL
              AND m.is_system_message IS NOT TRUE);
    END IF;
END;

-- The previous system's own "UPDATE CONVERSATIONS SET last_message_at = ..." (the service
-- always moves last_seq in the same statement and updates the memberships itself) is copied
-- to the active memberships.
CREATE OR REPLACE TRIGGER trg_conversations_activity
AFTER UPDATE ON CONVERSATIONS
FOR EACH ROW
BEGIN
    IF NEW.last_seq = OLD.last_seq
       AND NOT (COALESCE(NEW.last_message_at, NEW.created_at)
                <=> COALESCE(OLD.last_message_at, OLD.created_at)) THEN
        UPDATE CONVERSATION_PARTICIPANTS
        SET activity_at = COALESCE(NEW.last_message_at, NEW.created_at)
        WHERE conversation_id = NEW.id AND left_at IS NULL;
    END IF;
END;

-- A message leaving the unread set by soft delete (or coming back by undelete), whoever writes
-- it: -1 (+1) for the other active participants whose marker is below it. This one is not a
-- rollout trigger: it is how the service's delete_message keeps the counters too.
CREATE OR REPLACE TRIGGER trg_messages_unread_on_delete
AFTER UPDATE ON MESSAGES
FOR EACH ROW
BEGIN
    IF NOT (OLD.deleted_at <=> NEW.deleted_at)
       AND (OLD.deleted_at IS NULL OR NEW.deleted_at IS NULL)
       AND NEW.is_system_message IS NOT TRUE AND NEW.seq IS NOT NULL THEN
        UPDATE CONVERSATION_PARTICIPANTS
        SET unread_count = unread_count + IF(NEW.deleted_at IS NULL, 1, -1)
        WHERE conversation_id = NEW.conversation_id AND user_id <> NEW.sender_id
          AND left_at IS NULL AND last_read_seq < NEW.seq;
    END IF;
END;

-- A live message removed outright (the service never does this; the previous system or an
-- operator might) leaves the unread set too. Rows removed by ON DELETE CASCADE fire no
-- trigger, but their conversation and its memberships go with them.
CREATE OR REPLACE TRIGGER trg_messages_unread_on_purge
AFTER DELETE ON MESSAGES
FOR EACH ROW
BEGIN
    IF OLD.deleted_at IS NULL AND OLD.is_system_message IS NOT TRUE AND OLD.seq IS NOT NULL THEN
        UPDATE CONVERSATION_PARTICIPANTS SET unread_count = unread_count - 1
        WHERE conversation_id = OLD.conversation_id AND user_id <> OLD.sender_id
          AND left_at IS NULL AND last_read_seq < OLD.seq;
    END IF;
END;

-- 4. Backfill, exact, after the triggers exist (so every later write maintains both).
--    The active memberships are locked first, in their own statement: every writer that changes
--    a membership has then either committed (and the statement below, with a fresh READ
--    COMMITTED snapshot, sees its message) or waits and applies its change on top.
START TRANSACTION;

UPDATE CONVERSATION_PARTICIPANTS p
SET p.unread_count = p.unread_count
WHERE p.left_at IS NULL;

UPDATE CONVERSATION_PARTICIPANTS p
SET p.activity_at = (SELECT COALESCE(c.last_message_at, c.created_at)
        FROM CONVERSATIONS c WHERE c.id = p.conversation_id),
    p.unread_count = (SELECT COUNT(*) FROM MESSAGES m
    WHERE m.conversation_id = p.conversation_id AND m.seq > p.last_read_seq
      AND m.sender_id <> p.user_id AND m.deleted_at IS NULL
      AND m.is_system_message IS NOT TRUE)
WHERE p.left_at IS NULL;

COMMIT;
