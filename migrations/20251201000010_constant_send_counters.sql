-- Unread counts and inbox order without touching every member's row on each send
-- (issue 10, items 1 and 3). Replaces the per-membership counters of 20251201000006 as the
-- source of truth; see docs/schema.md, "Unread counts by difference and the activity key".
--
-- For every conversation, always exactly:
--   counted_total = COUNT(messages WHERE seq IS NOT NULL AND deleted_at IS NULL
--                         AND is_system_message IS NOT TRUE)      (the countable messages)
--   activity_key  > every earlier value of it: microseconds of the latest activity (creation,
--                   a message), taken from the server clock under the conversation's row lock
--                   and at least one more than before, so it orders the inbox exactly.
-- For every ACTIVE membership (left_at IS NULL), always exactly:
--   unread_base   = counted_total - (the membership's unread count), i.e. the countable
--                   messages at or below last_read_seq plus the member's own countable
--                   messages above it.
-- So unread = counted_total - unread_base. A send changes its conversation's row and the
-- sender's membership row only; a marker move changes the reader's row only; a soft delete or
-- undelete (rare) changes the conversation's row and the rows whose base holds the message.
--
-- The columns of 20251201000006 stay (other readers may use them) with a weaker meaning:
--   unread_count  = the unread count as of the membership's last marker move or (re)join;
--   activity_at   = no longer maintained (left as it was).

-- 1. The columns (instant: appended, defaulted).
ALTER TABLE CONVERSATIONS
    ADD COLUMN IF NOT EXISTS counted_total BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS activity_key BIGINT NOT NULL DEFAULT 0,
    ALGORITHM=INSTANT;

ALTER TABLE CONVERSATION_PARTICIPANTS
    ADD COLUMN IF NOT EXISTS unread_base BIGINT NOT NULL DEFAULT 0,
    ALGORITHM=INSTANT;

-- 2. The caller's active memberships with everything the badge and the inbox need from the
--    membership side: both read this range and join each row to its conversation by key.
ALTER TABLE CONVERSATION_PARTICIPANTS
    ADD INDEX IF NOT EXISTS idx_participants_badge (user_id, left_at, conversation_id, unread_base, is_muted),
    ALGORITHM=INPLACE, LOCK=NONE;

-- 3. Triggers, replaced in one statement each (CREATE OR REPLACE), so that the previous
--    system never writes while a trigger is missing. They keep the new columns for the
--    previous system's writes and for every soft delete.

-- A message inserted without seq (the previous system): the next seq under the conversation's
-- row lock, as before; it is counted, moves the activity key, and, being the sender's own,
-- goes into the sender's base (it is never unread for them).
CREATE OR REPLACE TRIGGER trg_messages_assign_seq
BEFORE INSERT ON MESSAGES
FOR EACH ROW
BEGIN
    DECLARE counted INT DEFAULT IF(NEW.deleted_at IS NULL AND NEW.is_system_message IS NOT TRUE, 1, 0);
    IF NEW.seq IS NULL THEN
        UPDATE CONVERSATIONS
        SET last_seq = last_seq + 1,
            counted_total = counted_total + counted,
            activity_key = GREATEST(activity_key + 1, CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED))
        WHERE id = NEW.conversation_id;
        SET NEW.seq = (SELECT last_seq FROM CONVERSATIONS WHERE id = NEW.conversation_id);
        IF counted = 1 THEN
            UPDATE CONVERSATION_PARTICIPANTS SET unread_base = unread_base + 1
            WHERE conversation_id = NEW.conversation_id AND user_id = NEW.sender_id
              AND left_at IS NULL;
        END IF;
    END IF;
END;

-- A read marker moved by last_read_at alone (the previous system) also moves last_read_seq
-- (forward only), as before. When it moved, and when a membership becomes active again (any
-- writer), the base is set from one count above the marker (a range of idx_messages_unread),
-- and unread_count with it.
CREATE OR REPLACE TRIGGER trg_participants_read_seq
BEFORE UPDATE ON CONVERSATION_PARTICIPANTS
FOR EACH ROW
BEGIN
    DECLARE recount BOOLEAN DEFAULT FALSE;
    DECLARE unread BIGINT DEFAULT 0;
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
    END IF;
    IF recount THEN
        SET unread = (SELECT COUNT(*) FROM MESSAGES m
            WHERE m.conversation_id = NEW.conversation_id AND m.seq > NEW.last_read_seq
              AND m.sender_id <> NEW.user_id AND m.deleted_at IS NULL
              AND m.is_system_message IS NOT TRUE);
        SET NEW.unread_count = unread;
        SET NEW.unread_base = (SELECT c.counted_total FROM CONVERSATIONS c
            WHERE c.id = NEW.conversation_id) - unread;
    END IF;
END;

-- A membership inserted by any writer starts with its exact base (for the service's inserts,
-- whose marker is at the newest seq, the count is a probe of an empty range).
CREATE OR REPLACE TRIGGER trg_participants_unread_on_insert
BEFORE INSERT ON CONVERSATION_PARTICIPANTS
FOR EACH ROW
BEGIN
    DECLARE unread BIGINT DEFAULT 0;
    IF NEW.activity_at IS NULL THEN
        SET NEW.activity_at = (SELECT COALESCE(c.last_message_at, c.created_at)
            FROM CONVERSATIONS c WHERE c.id = NEW.conversation_id);
    END IF;
    IF NEW.left_at IS NULL THEN
        SET unread = (SELECT COUNT(*) FROM MESSAGES m
            WHERE m.conversation_id = NEW.conversation_id AND m.seq > NEW.last_read_seq
              AND m.sender_id <> NEW.user_id AND m.deleted_at IS NULL
              AND m.is_system_message IS NOT TRUE);
        SET NEW.unread_count = unread;
        SET NEW.unread_base = (SELECT c.counted_total FROM CONVERSATIONS c
            WHERE c.id = NEW.conversation_id) - unread;
    END IF;
END;

-- A conversation inserted without an activity key (the previous system, and the service,
-- which lets this trigger take the server's clock) gets the current microsecond.
CREATE OR REPLACE TRIGGER trg_conversations_activity_on_insert
BEFORE INSERT ON CONVERSATIONS
FOR EACH ROW
BEGIN
    IF NEW.activity_key = 0 THEN
        SET NEW.activity_key = CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED);
    END IF;
END;

-- The previous system's own "UPDATE CONVERSATIONS SET last_message_at = ..." (the service
-- always moves last_seq and activity_key itself) moves the activity key. This replaces the
-- AFTER UPDATE trigger of 20251201000006 that copied the time to every membership.
CREATE OR REPLACE TRIGGER trg_conversations_activity
BEFORE UPDATE ON CONVERSATIONS
FOR EACH ROW
BEGIN
    IF NEW.last_seq = OLD.last_seq AND NEW.activity_key = OLD.activity_key
       AND NOT (COALESCE(NEW.last_message_at, NEW.created_at)
                <=> COALESCE(OLD.last_message_at, OLD.created_at)) THEN
        SET NEW.activity_key = GREATEST(OLD.activity_key + 1,
            CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED));
    END IF;
END;

-- A counted message leaving the countable set by soft delete (or coming back by undelete),
-- whoever writes it: the conversation's count -1 (+1), and the same for the bases that hold
-- it: the active members whose marker is at or above it, and its sender (own messages are
-- always in the base). O(members): deletes are rare; sends never do this.
CREATE OR REPLACE TRIGGER trg_messages_unread_on_delete
AFTER UPDATE ON MESSAGES
FOR EACH ROW
BEGIN
    DECLARE delta INT DEFAULT IF(NEW.deleted_at IS NULL, 1, -1);
    IF NOT (OLD.deleted_at <=> NEW.deleted_at)
       AND (OLD.deleted_at IS NULL OR NEW.deleted_at IS NULL)
       AND NEW.is_system_message IS NOT TRUE AND NEW.seq IS NOT NULL THEN
        UPDATE CONVERSATIONS SET counted_total = counted_total + delta
        WHERE id = NEW.conversation_id;
        UPDATE CONVERSATION_PARTICIPANTS SET unread_base = unread_base + delta
        WHERE conversation_id = NEW.conversation_id AND left_at IS NULL
          AND (last_read_seq >= NEW.seq OR user_id = NEW.sender_id);
    END IF;
END;

-- A live counted message removed outright (the service never does this): the same -1.
-- Rows removed by ON DELETE CASCADE fire no trigger, but their conversation goes with them.
CREATE OR REPLACE TRIGGER trg_messages_unread_on_purge
AFTER DELETE ON MESSAGES
FOR EACH ROW
BEGIN
    IF OLD.deleted_at IS NULL AND OLD.is_system_message IS NOT TRUE AND OLD.seq IS NOT NULL THEN
        UPDATE CONVERSATIONS SET counted_total = counted_total - 1
        WHERE id = OLD.conversation_id;
        UPDATE CONVERSATION_PARTICIPANTS SET unread_base = unread_base - 1
        WHERE conversation_id = OLD.conversation_id AND left_at IS NULL
          AND (last_read_seq >= OLD.seq OR user_id = OLD.sender_id);
    END IF;
END;

-- 4. Backfill, exact, after the triggers exist (so every later write maintains the columns).
--    Conversations, then active memberships, are locked first in their own statements: a
--    writer that changes either has then committed (the statements below, each with a fresh
--    READ COMMITTED snapshot, see its rows) or waits and applies its change on top. Holds
--    the rows for the statements' duration (see docs/schema.md for large tables).
START TRANSACTION;

UPDATE CONVERSATIONS c SET c.counted_total = c.counted_total;

UPDATE CONVERSATION_PARTICIPANTS p SET p.unread_base = p.unread_base WHERE p.left_at IS NULL;

UPDATE CONVERSATIONS c
SET c.counted_total = (SELECT COUNT(*) FROM MESSAGES m
        WHERE m.conversation_id = c.id AND m.seq IS NOT NULL AND m.deleted_at IS NULL
          AND m.is_system_message IS NOT TRUE),
    c.activity_key = GREATEST(c.activity_key,
        CAST(UNIX_TIMESTAMP(COALESCE(c.last_message_at, c.created_at)) * 1000000 AS SIGNED));

UPDATE CONVERSATION_PARTICIPANTS p JOIN CONVERSATIONS c ON c.id = p.conversation_id
SET p.unread_base = c.counted_total - (SELECT COUNT(*) FROM MESSAGES m
    WHERE m.conversation_id = p.conversation_id AND m.seq > p.last_read_seq
      AND m.sender_id <> p.user_id AND m.deleted_at IS NULL
      AND m.is_system_message IS NOT TRUE)
WHERE p.left_at IS NULL;

COMMIT;
