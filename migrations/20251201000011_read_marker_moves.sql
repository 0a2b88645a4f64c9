-- Receipts off the send's critical path (issue 10, item 2). A send or mark_read that moves a
-- read marker records the move here, one row per move, in its own transaction (one row,
-- whatever the number of messages passed); a background task of the service turns the
-- moves into MESSAGE_READ_RECEIPTS rows after the commit, in batches, idempotently (the
-- receipts' unique key), and deletes them. Moves not yet turned into receipts (the lag, or
-- a crash) are read together with the receipts by "seen by", and are turned into receipts
-- by the next run of the task, after a restart too. See docs/schema.md, "Receipts from
-- marker moves".
--
-- A new table: invisible to the previous system, and created online.
CREATE TABLE IF NOT EXISTS READ_MARKER_MOVES (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    conversation_id CHAR(36) NOT NULL,
    user_id BIGINT NOT NULL,
    -- The marker before and after the move: the reader passed the others' live messages
    -- with seq in (after_seq, up_to_seq].
    after_seq BIGINT NOT NULL,
    up_to_seq BIGINT NOT NULL,
    -- The time of the move: the receipts' read_at.
    moved_at TIMESTAMP NOT NULL,
    -- "Seen by" of one message: the pending moves of its conversation that reach it.
    INDEX idx_moves_conversation (conversation_id, up_to_seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
