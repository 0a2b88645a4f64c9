-- Columns and indexes the chat service needs on top of the seed schema. Every change is
-- additive and online: nullable or defaulted columns appended with ALGORITHM=INSTANT, indexes
-- built with ALGORITHM=INPLACE, LOCK=NONE (the statement fails rather than silently copying the
-- table if the server cannot do that). IF NOT EXISTS makes a re-run after a partial failure safe.

-- Position of a message in its conversation (commit order), and the sender's idempotency key.
-- VARBINARY so that keys compare byte by byte (the table collation is case-insensitive and
-- pads trailing spaces).
ALTER TABLE MESSAGES
    ADD COLUMN IF NOT EXISTS seq BIGINT NULL DEFAULT NULL,
    ADD COLUMN IF NOT EXISTS client_message_id VARBINARY(64) NULL DEFAULT NULL,
    ALGORITHM=INSTANT;

-- The newest seq handed out (the row append locks FOR UPDATE), and the identity of a DIRECT pair.
ALTER TABLE CONVERSATIONS
    ADD COLUMN IF NOT EXISTS last_seq BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS direct_key VARCHAR(41) CHARACTER SET ascii COLLATE ascii_bin NULL DEFAULT NULL,
    ALGORITHM=INSTANT;

-- The newest seq a participant has read.
ALTER TABLE CONVERSATION_PARTICIPANTS
    ADD COLUMN IF NOT EXISTS last_read_seq BIGINT NOT NULL DEFAULT 0,
    ALGORITHM=INSTANT;

-- History by seq keyset; at most one message per position (NULLs, i.e. rows not yet
-- numbered, are exempt from UNIQUE).
ALTER TABLE MESSAGES
    ADD UNIQUE INDEX IF NOT EXISTS uq_messages_conversation_seq (conversation_id, seq),
    ALGORITHM=INPLACE, LOCK=NONE;

-- Idempotent send: one message per (conversation, sender, client_message_id).
ALTER TABLE MESSAGES
    ADD UNIQUE INDEX IF NOT EXISTS uq_messages_client_message_id (conversation_id, sender_id, client_message_id),
    ALGORITHM=INPLACE, LOCK=NONE;

-- Unread counts answered from the index alone (no clustered-row lookups).
ALTER TABLE MESSAGES
    ADD INDEX IF NOT EXISTS idx_messages_unread (conversation_id, seq, sender_id, is_system_message, deleted_at),
    ALGORITHM=INPLACE, LOCK=NONE;

-- Exactly one DIRECT conversation per pair of users.
ALTER TABLE CONVERSATIONS
    ADD UNIQUE INDEX IF NOT EXISTS uq_conversations_direct_key (direct_key),
    ALGORITHM=INPLACE, LOCK=NONE;
