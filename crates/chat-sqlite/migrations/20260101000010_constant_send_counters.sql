-- Unread counts and inbox order without touching every member's row on each send, as on
-- MySQL (migrations/20251201000010; docs/schema.md, "Unread counts by difference and the
-- activity key"):
--   CONVERSATIONS.counted_total = the countable messages (live, not SYSTEM);
--   CONVERSATIONS.activity_key  = the inbox order: microseconds of the latest activity, past
--                                 every key handed out before (one writer: exact commit order);
--   CONVERSATION_PARTICIPANTS.unread_base = counted_total - the membership's unread count,
--                                 for an active membership.
-- unread_count stays, as the count at the membership's last marker move or join;
-- activity_at is no longer maintained.

ALTER TABLE CONVERSATIONS ADD COLUMN counted_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE CONVERSATIONS ADD COLUMN activity_key INTEGER NOT NULL DEFAULT 0;
ALTER TABLE CONVERSATION_PARTICIPANTS ADD COLUMN unread_base INTEGER NOT NULL DEFAULT 0;

-- The newest key handed out (MAX), read by every write that moves a conversation's key.
CREATE INDEX idx_conversations_activity ON CONVERSATIONS (activity_key);
-- The caller's active memberships with what the badge and the inbox need from them.
CREATE INDEX idx_participants_badge
    ON CONVERSATION_PARTICIPANTS (user_id, left_at, conversation_id, unread_base, is_muted);

-- A counted message leaving the countable set by soft delete (or coming back): the
-- conversation's count -1 (+1), and the same for the bases that hold it: the active members
-- whose marker is at or above it, and its sender (own messages are always in the base).
DROP TRIGGER trg_messages_unread_on_delete;
CREATE TRIGGER trg_messages_unread_on_delete
AFTER UPDATE OF deleted_at ON MESSAGES
FOR EACH ROW
WHEN (OLD.deleted_at IS NULL) <> (NEW.deleted_at IS NULL) AND NEW.is_system_message = 0
BEGIN
    UPDATE CONVERSATIONS
    SET counted_total = counted_total + (CASE WHEN NEW.deleted_at IS NULL THEN 1 ELSE -1 END)
    WHERE id = NEW.conversation_id;
    UPDATE CONVERSATION_PARTICIPANTS
    SET unread_base = unread_base + (CASE WHEN NEW.deleted_at IS NULL THEN 1 ELSE -1 END)
    WHERE conversation_id = NEW.conversation_id AND left_at IS NULL
      AND (last_read_seq >= NEW.seq OR user_id = NEW.sender_id);
END;

-- Backfill (the migration runs alone on the one write connection).
UPDATE CONVERSATIONS
SET counted_total = (SELECT COUNT(*) FROM MESSAGES m
        WHERE m.conversation_id = CONVERSATIONS.id AND m.deleted_at IS NULL
          AND m.is_system_message = 0),
    activity_key = COALESCE(last_message_at, created_at) * 1000000;

UPDATE CONVERSATION_PARTICIPANTS
SET unread_base = (SELECT c.counted_total FROM CONVERSATIONS c
        WHERE c.id = CONVERSATION_PARTICIPANTS.conversation_id)
    - (SELECT COUNT(*) FROM MESSAGES m
        WHERE m.conversation_id = CONVERSATION_PARTICIPANTS.conversation_id
          AND m.seq > CONVERSATION_PARTICIPANTS.last_read_seq
          AND m.sender_id <> CONVERSATION_PARTICIPANTS.user_id AND m.deleted_at IS NULL
          AND m.is_system_message = 0)
WHERE left_at IS NULL;
