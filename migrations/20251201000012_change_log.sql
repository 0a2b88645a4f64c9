-- The change feed (issue 15; docs/schema.md, "The change feed"). Every write of the service
-- appends its changes to CHANGE_LOG in its own transaction: one row per change, whatever the
-- size of the group (fan-out happens on read). Rows are inserted with pos NULL; the feed
-- position is assigned after the commit by the deployment's single stamper (the node that
-- holds GET_LOCK('<db>.chat_feed_stamper')), in commit-visibility order, gapless from 1.
-- Only stamped rows are read. Rows hold references and small facts only (ids, seq, role,
-- emoji, an instant): no message text, no group name; the feed is hydrated on read.
--
-- Two new tables: invisible to the previous system, created online.
CREATE TABLE IF NOT EXISTS CHANGE_LOG (
    -- Insert order (AUTO_INCREMENT: assigned at insert, NOT at commit; never read as order).
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    -- The feed position, NULL until the stamper numbers the committed row.
    pos BIGINT NULL,
    -- Same type and collation as CONVERSATIONS.id.
    conversation_id CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    -- What changed: 1 message.created, 2 message.updated, 3 message.deleted, 4 reaction.added,
    -- 5 reaction.removed, 6 conversation.read, 7 conversation.created, 8 conversation.updated,
    -- 9 participant.added, 10 participant.removed, 11 participant.updated.
    kind TINYINT UNSIGNED NOT NULL,
    -- References and facts, by kind (NULL where the kind has none).
    message_id CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    user_id BIGINT NULL,
    -- message.deleted: the message's seq; conversation.read: the new last_read_seq.
    seq BIGINT NULL,
    role VARCHAR(20) CHARACTER SET ascii COLLATE ascii_general_ci NULL,
    -- The emoji's bytes (the type of MESSAGE_REACTIONS.emoji_bin).
    emoji VARBINARY(40) NULL,
    -- conversation.read: the marker's time.
    read_at DATETIME(6) NULL,
    -- When the row was written (the server's clock): retention.
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    -- Reading by position, and at most one row per position. NULLs (unstamped rows) do not
    -- collide; the unstamped rows are the range `pos IS NULL` of this index, in id order
    -- (the primary key ends every secondary index entry).
    UNIQUE KEY uq_change_log_pos (pos),
    -- One reader's changes: the positions of each of their conversations.
    INDEX idx_change_log_conversation (conversation_id, pos),
    -- A reader's membership moves (participant.added / .removed about them) per
    -- conversation: kind in the key so that their reactions and read markers are skipped.
    INDEX idx_change_log_user (user_id, conversation_id, kind, pos)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The feed's identity (a token of another database is refused) and its floor (retention:
-- every row above it is kept; purges move it first, then delete at or below it).
CREATE TABLE IF NOT EXISTS CHANGE_FEED (
    singleton TINYINT UNSIGNED NOT NULL PRIMARY KEY DEFAULT 1,
    feed_id BINARY(16) NOT NULL,
    floor BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT chk_change_feed_singleton CHECK (singleton = 1)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- A random identity (RANDOM_BYTES: MariaDB 10.10+), set once.
INSERT IGNORE INTO CHANGE_FEED (singleton, feed_id, floor) VALUES (1, RANDOM_BYTES(16), 0);
