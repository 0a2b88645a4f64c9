-- The previous system's writes in the change feed, where a trigger can tell them from the
-- service's own (docs/schema.md, "The change feed", "Writes of the previous system"): the
-- two rollout triggers of 20251201000010 already single them out, and now also append the
-- entry the service appends for the same change, in the same statement (so in the same
-- transaction as the write):
--   * a message inserted without seq (only the previous system does that): message.created;
--   * a read marker moved by last_read_at alone (only the previous system does that):
--     conversation.read, when the marker's seq moved.
-- The service's own writes never take these branches, so nothing is appended twice. Other
-- writes of the previous system (edits, deletes, reactions, memberships) are the same
-- statements as the service's and are not in the feed; see docs/schema.md.
--
-- Replaced in one statement each (CREATE OR REPLACE), bodies otherwise exactly those of
-- 20251201000010: no moment without a numbering trigger.

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
        IF NEW.id IS NULL THEN
            SET NEW.id = UUID();
        END IF;
        INSERT INTO CHANGE_LOG (conversation_id, kind, message_id)
        VALUES (NEW.conversation_id, 1, NEW.id);
    END IF;
END;

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
        IF recount THEN
            INSERT INTO CHANGE_LOG (conversation_id, kind, user_id, seq, read_at)
            VALUES (NEW.conversation_id, 6, NEW.user_id, NEW.last_read_seq, NEW.last_read_at);
        END IF;
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
