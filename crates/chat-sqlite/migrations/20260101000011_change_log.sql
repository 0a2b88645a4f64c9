-- The change feed (docs/schema.md, "The change feed on SQLite"): one CHANGE_LOG row per
-- durable change, written by the use case's own write request (same transaction), a fixed
-- number of rows per change whatever the group size. Additive: two new tables.
--
-- pos is the rowid. SQLite has one writer at a time and this adapter has one write
-- connection (src/writer.rs), so rows are numbered in commit order: a batch's rows get
-- head+1.. and become visible together at its COMMIT; a request rolled back to its
-- savepoint, or a batch rolled back, takes its numbers (and sqlite_sequence's update) back
-- with it. No stamper is needed. AUTOINCREMENT: a number is never handed out twice, also
-- after a purge deleted the newest rows.
--
-- Entries hold references and small facts, never message text or a group name:
--   kind         1 message.created     2 message.updated     3 message.deleted
--                4 reaction.added      5 reaction.removed    6 conversation.read
--                7 conversation.created 8 conversation.updated
--                9 participant.added   10 participant.removed 11 participant.updated
--   message_id   message.*, reaction.*
--   user_id      reaction.* (who), conversation.read (the reader), participant.* (the user)
--   seq          message.deleted (its seq), conversation.read (the newest seq read)
--   role         participant.added / participant.updated ('ADMIN' / 'MEMBER')
--   emoji        reaction.* (as stored in MESSAGE_REACTIONS)
--   read_at      conversation.read (whole seconds since the epoch, UTC)
--   created_at   when the entry was written (the commit's second), for retention
CREATE TABLE CHANGE_LOG (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 11),
    message_id TEXT DEFAULT NULL,
    user_id INTEGER DEFAULT NULL,
    seq INTEGER DEFAULT NULL,
    role TEXT DEFAULT NULL CHECK (role IS NULL OR role IN ('ADMIN', 'MEMBER')),
    emoji TEXT DEFAULT NULL,
    read_at INTEGER DEFAULT NULL,
    created_at INTEGER NOT NULL DEFAULT (unixepoch())
);
-- A conversation's entries after a position (reader_changes: one range per conversation
-- of the reader).
CREATE INDEX idx_change_log_conversation ON CHANGE_LOG (conversation_id, pos);
-- A reader's membership moves in a conversation after a position (the windows of
-- reader_changes). Partial: only participant.added / participant.removed rows are in it,
-- so sends, reactions and read markers do not pay for it.
CREATE INDEX idx_change_log_membership ON CHANGE_LOG (user_id, conversation_id, pos)
    WHERE kind IN (9, 10);

-- The feed itself, one row: its identity (random when the table is created: positions of
-- another database mean nothing here) and its floor (every entry above it is kept;
-- retention raises it before deleting anything at or below it).
CREATE TABLE CHANGE_FEED (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    feed_id BLOB NOT NULL CHECK (length(feed_id) = 16),
    floor INTEGER NOT NULL DEFAULT 0
);
INSERT INTO CHANGE_FEED (id, feed_id, floor) VALUES (1, randomblob(16), 0);
