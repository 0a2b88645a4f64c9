-- While the previous system still writes during the rollout, its rows lack the new columns.
-- Two triggers keep them consistent at the moment they are written; both do nothing for rows
-- this service writes (it always sets seq, and always moves last_read_seq with last_read_at).
-- They can be dropped once the previous system no longer writes.

-- A message inserted without seq takes the next one under the conversation's row lock, exactly
-- as append_message does.
CREATE TRIGGER IF NOT EXISTS trg_messages_assign_seq
BEFORE INSERT ON MESSAGES
FOR EACH ROW
BEGIN
    IF NEW.seq IS NULL THEN
        UPDATE CONVERSATIONS SET last_seq = last_seq + 1 WHERE id = NEW.conversation_id;
        SET NEW.seq = (SELECT last_seq FROM CONVERSATIONS WHERE id = NEW.conversation_id);
    END IF;
END;

-- A read marker moved by last_read_at alone also moves last_read_seq (forward only).
CREATE TRIGGER IF NOT EXISTS trg_participants_read_seq
BEFORE UPDATE ON CONVERSATION_PARTICIPANTS
FOR EACH ROW
BEGIN
    IF NEW.last_read_seq = OLD.last_read_seq
       AND NEW.last_read_at IS NOT NULL
       AND NOT (NEW.last_read_at <=> OLD.last_read_at) THEN
        SET NEW.last_read_seq = GREATEST(OLD.last_read_seq, COALESCE(
            (SELECT MAX(m.seq) FROM MESSAGES m
             WHERE m.conversation_id = NEW.conversation_id AND m.created_at <= NEW.last_read_at), 0));
    END IF;
END;

-- Catch-up: messages the previous system inserted between the backfill of 20251201000004 and
-- the trigger above. Same statements as there.
START TRANSACTION;

UPDATE CONVERSATIONS c
SET c.last_seq = c.last_seq
WHERE EXISTS (SELECT 1 FROM MESSAGES m WHERE m.conversation_id = c.id AND m.seq IS NULL);

UPDATE MESSAGES m
JOIN (
    SELECT x.id,
           c.last_seq + ROW_NUMBER() OVER (
               PARTITION BY x.conversation_id
               ORDER BY x.created_at,
                        IF(SUBSTRING(x.id, 15, 1) = '1',
                           CONCAT(SUBSTRING(x.id, 16, 3), SUBSTRING(x.id, 10, 4), SUBSTRING(x.id, 1, 8)),
                           x.id)
           ) AS new_seq
    FROM MESSAGES x
    JOIN CONVERSATIONS c ON c.id = x.conversation_id
    WHERE x.seq IS NULL
) numbered ON numbered.id = m.id
SET m.seq = numbered.new_seq;

UPDATE CONVERSATIONS c
SET c.last_seq = GREATEST(c.last_seq,
    COALESCE((SELECT MAX(m.seq) FROM MESSAGES m WHERE m.conversation_id = c.id), 0))
WHERE EXISTS (SELECT 1 FROM MESSAGES m WHERE m.conversation_id = c.id AND m.seq > c.last_seq);

COMMIT;
