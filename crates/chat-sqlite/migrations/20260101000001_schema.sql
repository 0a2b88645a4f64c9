-- The chat schema on SQLite: the same tables, columns and meanings as the MySQL schema after
-- all of its migrations (see docs/schema.md), in SQLite's types. There is no previous system
-- writing here, so none of MySQL's rollout triggers or backfills exist.
--
-- Types: ids of conversations, messages and postings are their UUID text (lowercase,
-- hyphenated); user ids are INTEGER; timestamps are INTEGER seconds since the Unix epoch, UTC
-- (the MySQL columns are TIMESTAMP, whole seconds: the adapters return the same instants);
-- booleans are INTEGER 0/1; text compares byte for byte (SQLite's BINARY collation), so
-- idempotency keys and emoji need no binary shadow columns. Row ids of memberships,
-- reactions and receipts are INTEGER rowids: their order is insertion order, the tie-breaker
-- where MySQL orders by the time inside the UUID.

-- Owned by the platform on MySQL; here the adapter is the platform's only store.
CREATE TABLE app_users (
    id INTEGER PRIMARY KEY,
    first_name TEXT DEFAULT NULL,
    last_name TEXT DEFAULT NULL,
    email TEXT DEFAULT NULL,
    created_at INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE POSTINGS (
    id TEXT PRIMARY KEY,
    title TEXT DEFAULT NULL,
    created_at INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE CONVERSATIONS (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL CHECK (type IN ('DIRECT', 'GROUP', 'POST_LINKED')),
    name TEXT DEFAULT NULL,
    posting_id TEXT DEFAULT NULL REFERENCES POSTINGS(id) ON DELETE CASCADE,
    created_by INTEGER NOT NULL REFERENCES app_users(id) ON DELETE RESTRICT,
    created_at INTEGER NOT NULL,
    last_message_at INTEGER DEFAULT NULL,
    is_archived INTEGER NOT NULL DEFAULT 0,
    archived_at INTEGER DEFAULT NULL,
    -- The newest seq handed out.
    last_seq INTEGER NOT NULL DEFAULT 0,
    -- "min_user:max_user" for DIRECT conversations, NULL otherwise: one DIRECT per pair.
    direct_key TEXT DEFAULT NULL
);
CREATE UNIQUE INDEX uq_conversations_direct_key ON CONVERSATIONS (direct_key);
CREATE INDEX idx_conversations_posting ON CONVERSATIONS (posting_id);
CREATE INDEX idx_conversations_created_by ON CONVERSATIONS (created_by);

CREATE TABLE CONVERSATION_PARTICIPANTS (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES CONVERSATIONS(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES app_users(id) ON DELETE CASCADE,
    role TEXT NOT NULL DEFAULT 'MEMBER' CHECK (role IN ('ADMIN', 'MEMBER')),
    joined_at INTEGER NOT NULL,
    left_at INTEGER DEFAULT NULL,
    last_read_at INTEGER DEFAULT NULL,
    is_muted INTEGER NOT NULL DEFAULT 0,
    -- The newest seq read.
    last_read_seq INTEGER NOT NULL DEFAULT 0,
    -- For an active membership, always exactly: the messages of others above the marker,
    -- live and not SYSTEM (kept by the adapter's sends, read markers and joins, and by
    -- trg_messages_unread_on_delete).
    unread_count INTEGER NOT NULL DEFAULT 0,
    -- For an active membership, always its conversation's COALESCE(last_message_at, created_at).
    activity_at INTEGER DEFAULT NULL,
    UNIQUE (conversation_id, user_id)
);
-- The caller's memberships, active ones (left_at IS NULL) most recent activity first, with
-- everything the badge needs: the inbox page is a backwards range of it, the badge an
-- index-only read. Also the index of user_id for foreign keys.
CREATE INDEX idx_participants_inbox
    ON CONVERSATION_PARTICIPANTS (user_id, left_at, activity_at, conversation_id, unread_count, is_muted);

CREATE TABLE MESSAGES (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES CONVERSATIONS(id) ON DELETE CASCADE,
    -- The position in the conversation, in commit order, gap-free.
    seq INTEGER NOT NULL,
    sender_id INTEGER NOT NULL REFERENCES app_users(id) ON DELETE RESTRICT,
    content TEXT NOT NULL,
    encryption_key_id TEXT DEFAULT NULL,
    message_type TEXT NOT NULL DEFAULT 'TEXT'
        CHECK (message_type IN ('TEXT', 'IMAGE', 'FILE', 'LINK', 'SYSTEM')),
    media_url TEXT DEFAULT NULL,
    media_metadata TEXT DEFAULT NULL CHECK (media_metadata IS NULL OR json_valid(media_metadata)),
    reply_to_id TEXT DEFAULT NULL REFERENCES MESSAGES(id) ON DELETE SET NULL,
    -- The sender's idempotency key (compared byte for byte).
    client_message_id TEXT DEFAULT NULL,
    created_at INTEGER NOT NULL,
    edited_at INTEGER DEFAULT NULL,
    deleted_at INTEGER DEFAULT NULL,
    is_system_message INTEGER NOT NULL DEFAULT 0
);
-- History by seq keyset, and at most one message per position.
CREATE UNIQUE INDEX uq_messages_conversation_seq ON MESSAGES (conversation_id, seq);
-- Idempotent send: one message per (conversation, sender, key); NULL keys are exempt.
CREATE UNIQUE INDEX uq_messages_client_message_id
    ON MESSAGES (conversation_id, sender_id, client_message_id);
-- Unread counts and the newest live message from the index alone.
CREATE INDEX idx_messages_unread
    ON MESSAGES (conversation_id, seq, sender_id, is_system_message, deleted_at);
CREATE INDEX idx_messages_sender ON MESSAGES (sender_id);
CREATE INDEX idx_messages_reply_to ON MESSAGES (reply_to_id);

CREATE TABLE MESSAGE_REACTIONS (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES MESSAGES(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES app_users(id) ON DELETE CASCADE,
    -- Byte-exact: different emoji (skin tones included) are different reactions.
    emoji TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (message_id, user_id, emoji)
);
CREATE INDEX idx_reactions_user ON MESSAGE_REACTIONS (user_id);

CREATE TABLE MESSAGE_READ_RECEIPTS (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES MESSAGES(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES app_users(id) ON DELETE CASCADE,
    read_at INTEGER NOT NULL,
    UNIQUE (message_id, user_id)
);
CREATE INDEX idx_receipts_user ON MESSAGE_READ_RECEIPTS (user_id);

-- A message leaving the unread set by soft delete (or coming back by undelete): -1 (+1) for
-- the other active participants whose marker is below it. As on MySQL, the one place that
-- sees every soft delete.
CREATE TRIGGER trg_messages_unread_on_delete
AFTER UPDATE OF deleted_at ON MESSAGES
FOR EACH ROW
WHEN (OLD.deleted_at IS NULL) <> (NEW.deleted_at IS NULL) AND NEW.is_system_message = 0
BEGIN
    UPDATE CONVERSATION_PARTICIPANTS
    SET unread_count = unread_count + (CASE WHEN NEW.deleted_at IS NULL THEN 1 ELSE -1 END)
    WHERE conversation_id = NEW.conversation_id AND user_id <> NEW.sender_id
      AND left_at IS NULL AND last_read_seq < NEW.seq;
END;
