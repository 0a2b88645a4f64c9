-- The badge and the inbox without 1000 collation-aware key comparisons (issue 10, the inbox
-- and badge regression after 20251201000010). Both join each of the caller's memberships to
-- its conversation's `counted_total` and `activity_key`; on `CONVERSATIONS` that is a probe
-- of a `CHAR(36) utf8mb4_unicode_ci` primary key (every comparison goes through the Unicode
-- collation) into the table's wide rows. This narrow copy is keyed by the same text in
-- `ascii_bin` (comparisons are memcmp) and holds only what the read side needs. See
-- docs/schema.md, "The conversation counters".
--
-- For every row of CONVERSATIONS, always exactly (same transaction, under the conversation's
-- row lock): one row here with the same id and the same counted_total, activity_key and
-- is_archived (NULL as FALSE). Kept by triggers on CONVERSATIONS, so every writer (the
-- service's sends, archives and creates, the other triggers that move the counters, the
-- previous system) keeps it without knowing it. A send still writes O(1) rows: this one more.
--
-- A new table (invisible to the previous system, created online) and triggers on
-- CONVERSATIONS, which had no AFTER triggers.
CREATE TABLE IF NOT EXISTS CONVERSATION_COUNTERS (
    conversation_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    counted_total BIGINT NOT NULL DEFAULT 0,
    activity_key BIGINT NOT NULL DEFAULT 0,
    is_archived BOOLEAN NOT NULL DEFAULT FALSE
) ENGINE=InnoDB;

-- Upserts, so that a row missing for any reason is written by the conversation's next change.
CREATE OR REPLACE TRIGGER trg_conversations_counters_insert
AFTER INSERT ON CONVERSATIONS
FOR EACH ROW
    INSERT INTO CONVERSATION_COUNTERS (conversation_id, counted_total, activity_key, is_archived)
    VALUES (NEW.id, NEW.counted_total, NEW.activity_key, COALESCE(NEW.is_archived, FALSE))
    ON DUPLICATE KEY UPDATE counted_total = VALUES(counted_total),
        activity_key = VALUES(activity_key), is_archived = VALUES(is_archived);

CREATE OR REPLACE TRIGGER trg_conversations_counters_update
AFTER UPDATE ON CONVERSATIONS
FOR EACH ROW
    INSERT INTO CONVERSATION_COUNTERS (conversation_id, counted_total, activity_key, is_archived)
    VALUES (NEW.id, NEW.counted_total, NEW.activity_key, COALESCE(NEW.is_archived, FALSE))
    ON DUPLICATE KEY UPDATE counted_total = VALUES(counted_total),
        activity_key = VALUES(activity_key), is_archived = VALUES(is_archived);

-- Rows removed by ON DELETE CASCADE (a posting's conversations) fire no trigger: their copy
-- stays, unreferenced (no membership joins it any more).
CREATE OR REPLACE TRIGGER trg_conversations_counters_delete
AFTER DELETE ON CONVERSATIONS
FOR EACH ROW
    DELETE FROM CONVERSATION_COUNTERS WHERE conversation_id = OLD.id;

-- Backfill, exact and race-free: a no-op UPDATE of every conversation fires the update trigger
-- under each row's lock, so a writer either committed before (its values are copied) or waits
-- and copies its own. Holds the rows for the statement's duration (see docs/schema.md for
-- large tables).
UPDATE CONVERSATIONS SET counted_total = counted_total;
