-- Every write of the previous system in the change feed (issue 15; docs/schema.md, "The
-- change feed", "Writes of the previous system"). 20251201000013 covers the two kinds of
-- its writes that no statement of the service resembles (a message inserted without seq, a
-- marker moved by last_read_at alone). Its other writes are the same statements as the
-- service's own, so they are told apart by the session instead: every connection of the
-- service's pool sets `@chat_service_session = 1` when it is opened
-- (`chat_mysql::prepare_session`), and the triggers below append an entry only when that
-- variable is NULL, i.e. for any other writer. The service appends its own entries itself;
-- on its writes each trigger below costs one test of a session variable.
--
-- Each trigger appends exactly the entry the service appends for the same change
-- (`crates/chat-mysql/src/change_log.rs` for the codes and columns), one per row that
-- changed, in the statement's transaction, and nothing for a row whose change the service
-- would not log (a no-op, a duplicate reaction, a role set to what it was):
--   MESSAGES             soft delete (deleted_at NULL -> set)       3 message.deleted (seq)
--                        edit (content bytes or edited_at changed,  2 message.updated
--                        live message), undelete (set -> NULL)
--                        hard DELETE of a live message               3 message.deleted (seq)
--   MESSAGE_REACTIONS    INSERT / DELETE (UPDATE: both)              4 / 5 reaction.added / removed
--   CONVERSATION_PARTICIPANTS
--                        INSERT of an active row, re-join            9 participant.added (role)
--                        (left_at set -> NULL)
--                        removal (left_at NULL -> set), DELETE of    10 participant.removed
--                        an active row
--                        role changed on an active row               11 participant.updated (role)
--   CONVERSATIONS        INSERT                                      7 conversation.created
--                        name (bytes) or archived state changed      8 conversation.updated
-- Rows removed by ON DELETE CASCADE fire no trigger (their conversation or message goes with
-- them). Nested writes of the other triggers (counters, seq) change none of these columns,
-- so they append nothing.
--
-- AFTER triggers: they fire only for rows actually written (a duplicate skipped by INSERT
-- IGNORE or turned into an UPDATE by ON DUPLICATE KEY fires no AFTER INSERT). Each appends
-- with a single-row INSERT ... VALUES (a simple insert: no table-level AUTO-INC lock held
-- to the end of the previous system's statement, whatever innodb_autoinc_lock_mode).
--
-- New triggers beside the existing ones (MariaDB allows several per table and event; they
-- run after those already defined); CREATE OR REPLACE so that a re-run is harmless. No
-- backfill: writes committed before this migration are not in the feed (as before).

CREATE OR REPLACE TRIGGER trg_change_log_messages_update
AFTER UPDATE ON MESSAGES
FOR EACH ROW
IF @chat_service_session IS NULL THEN
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        IF NEW.seq IS NOT NULL THEN
            INSERT INTO CHANGE_LOG (conversation_id, kind, message_id, seq)
            VALUES (NEW.conversation_id, 3, NEW.id, NEW.seq);
        END IF;
    ELSEIF NEW.deleted_at IS NULL
       AND (OLD.deleted_at IS NOT NULL
            OR NOT (NEW.edited_at <=> OLD.edited_at)
            OR NOT (CAST(NEW.content AS BINARY) <=> CAST(OLD.content AS BINARY))) THEN
        -- The message as it is now is what message.updated serves: an edit, or a message
        -- brought back (clients upsert it by id).
        INSERT INTO CHANGE_LOG (conversation_id, kind, message_id)
        VALUES (NEW.conversation_id, 2, NEW.id);
    END IF;
END IF;

CREATE OR REPLACE TRIGGER trg_change_log_messages_delete
AFTER DELETE ON MESSAGES
FOR EACH ROW
IF @chat_service_session IS NULL AND OLD.deleted_at IS NULL AND OLD.seq IS NOT NULL THEN
    INSERT INTO CHANGE_LOG (conversation_id, kind, message_id, seq)
    VALUES (OLD.conversation_id, 3, OLD.id, OLD.seq);
END IF;

CREATE OR REPLACE TRIGGER trg_change_log_reactions_insert
AFTER INSERT ON MESSAGE_REACTIONS
FOR EACH ROW
IF @chat_service_session IS NULL THEN
    INSERT INTO CHANGE_LOG (conversation_id, kind, message_id, user_id, emoji)
    VALUES ((SELECT m.conversation_id FROM MESSAGES m WHERE m.id = NEW.message_id), 4,
            NEW.message_id, NEW.user_id, CAST(NEW.emoji AS BINARY));
END IF;

CREATE OR REPLACE TRIGGER trg_change_log_reactions_update
AFTER UPDATE ON MESSAGE_REACTIONS
FOR EACH ROW
IF @chat_service_session IS NULL
   AND NOT (OLD.message_id <=> NEW.message_id AND OLD.user_id <=> NEW.user_id
            AND CAST(OLD.emoji AS BINARY) <=> CAST(NEW.emoji AS BINARY)) THEN
    INSERT INTO CHANGE_LOG (conversation_id, kind, message_id, user_id, emoji)
    VALUES ((SELECT m.conversation_id FROM MESSAGES m WHERE m.id = OLD.message_id), 5,
            OLD.message_id, OLD.user_id, CAST(OLD.emoji AS BINARY));
    INSERT INTO CHANGE_LOG (conversation_id, kind, message_id, user_id, emoji)
    VALUES ((SELECT m.conversation_id FROM MESSAGES m WHERE m.id = NEW.message_id), 4,
            NEW.message_id, NEW.user_id, CAST(NEW.emoji AS BINARY));
END IF;

CREATE OR REPLACE TRIGGER trg_change_log_reactions_delete
AFTER DELETE ON MESSAGE_REACTIONS
FOR EACH ROW
IF @chat_service_session IS NULL THEN
    INSERT INTO CHANGE_LOG (conversation_id, kind, message_id, user_id, emoji)
    VALUES ((SELECT m.conversation_id FROM MESSAGES m WHERE m.id = OLD.message_id), 5,
            OLD.message_id, OLD.user_id, CAST(OLD.emoji AS BINARY));
END IF;

-- A role is read as the service reads it: ADMIN, else MEMBER (NULL included).
CREATE OR REPLACE TRIGGER trg_change_log_participants_insert
AFTER INSERT ON CONVERSATION_PARTICIPANTS
FOR EACH ROW
IF @chat_service_session IS NULL AND NEW.left_at IS NULL THEN
    INSERT INTO CHANGE_LOG (conversation_id, kind, user_id, role)
    VALUES (NEW.conversation_id, 9, NEW.user_id,
            IF(UPPER(NEW.role) <=> 'ADMIN', 'ADMIN', 'MEMBER'));
END IF;

CREATE OR REPLACE TRIGGER trg_change_log_participants_update
AFTER UPDATE ON CONVERSATION_PARTICIPANTS
FOR EACH ROW
IF @chat_service_session IS NULL THEN
    IF OLD.left_at IS NULL AND NEW.left_at IS NOT NULL THEN
        INSERT INTO CHANGE_LOG (conversation_id, kind, user_id)
        VALUES (NEW.conversation_id, 10, NEW.user_id);
    ELSEIF OLD.left_at IS NOT NULL AND NEW.left_at IS NULL THEN
        INSERT INTO CHANGE_LOG (conversation_id, kind, user_id, role)
        VALUES (NEW.conversation_id, 9, NEW.user_id,
                IF(UPPER(NEW.role) <=> 'ADMIN', 'ADMIN', 'MEMBER'));
    ELSEIF NEW.left_at IS NULL
       AND (UPPER(OLD.role) <=> 'ADMIN') <> (UPPER(NEW.role) <=> 'ADMIN') THEN
        INSERT INTO CHANGE_LOG (conversation_id, kind, user_id, role)
        VALUES (NEW.conversation_id, 11, NEW.user_id,
                IF(UPPER(NEW.role) <=> 'ADMIN', 'ADMIN', 'MEMBER'));
    END IF;
END IF;

CREATE OR REPLACE TRIGGER trg_change_log_participants_delete
AFTER DELETE ON CONVERSATION_PARTICIPANTS
FOR EACH ROW
IF @chat_service_session IS NULL AND OLD.left_at IS NULL THEN
    INSERT INTO CHANGE_LOG (conversation_id, kind, user_id)
    VALUES (OLD.conversation_id, 10, OLD.user_id);
END IF;

CREATE OR REPLACE TRIGGER trg_change_log_conversations_insert
AFTER INSERT ON CONVERSATIONS
FOR EACH ROW
IF @chat_service_session IS NULL THEN
    INSERT INTO CHANGE_LOG (conversation_id, kind) VALUES (NEW.id, 7);
END IF;

-- Archived is read as the service reads it: NULL is not archived.
CREATE OR REPLACE TRIGGER trg_change_log_conversations_update
AFTER UPDATE ON CONVERSATIONS
FOR EACH ROW
IF @chat_service_session IS NULL
   AND (NOT (CAST(NEW.name AS BINARY) <=> CAST(OLD.name AS BINARY))
        OR (COALESCE(NEW.is_archived, FALSE) <> FALSE)
           <> (COALESCE(OLD.is_archived, FALSE) <> FALSE)) THEN
    INSERT INTO CHANGE_LOG (conversation_id, kind) VALUES (NEW.id, 8);
END IF;
