-- Fills the columns of 20251201000002 for rows the previous system wrote. Only rows still at
-- their NULL/0 defaults are touched, so re-running is harmless.
--
-- Order of a legacy row within its conversation: created_at, then (for ties inside one second)
-- the time embedded in a version-1 UUID made by the database's UUID() (its hex timestamp is
-- time_hi . time_mid . time_low), else the id itself.

-- 1. Messages get seq = conversation's last_seq + their rank among unnumbered messages. The
--    conversations concerned are locked first (a no-op UPDATE takes the row lock), so that an
--    append running meanwhile waits instead of taking a seq this statement is about to hand out.
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
    COALESCE((SELECT MAX(m.seq) FROM MESSAGES m WHERE m.conversation_id = c.id), 0));

COMMIT;

-- 2. DIRECT conversations get their pair key "min_user:max_user" (one participant: a
--    conversation with oneself). Where the old system's race left several conversations for one
--    pair, the earliest keeps the key; the others stay readable but are no longer returned by
--    get-or-create. Conversations with more than two participants are ambiguous and left NULL.
UPDATE CONVERSATIONS c
JOIN (
    SELECT k.id, k.pair_key,
           ROW_NUMBER() OVER (PARTITION BY k.pair_key ORDER BY k.already_keyed DESC, k.created_at, k.id) AS rank_in_pair,
           k.already_keyed
    FROM (
        SELECT c2.id, c2.created_at,
               c2.direct_key IS NOT NULL AS already_keyed,
               COALESCE(c2.direct_key, CONCAT(MIN(p.user_id), ':', MAX(p.user_id))) AS pair_key
        FROM CONVERSATIONS c2
        JOIN CONVERSATION_PARTICIPANTS p ON p.conversation_id = c2.id
        WHERE c2.type = 'DIRECT'
        GROUP BY c2.id, c2.created_at, c2.direct_key
        HAVING COUNT(DISTINCT p.user_id) IN (1, 2)
    ) k
) keyed ON keyed.id = c.id
SET c.direct_key = keyed.pair_key
WHERE keyed.rank_in_pair = 1 AND keyed.already_keyed = 0 AND c.direct_key IS NULL;

-- 3. Read markers: the newest seq sent at or before last_read_at.
UPDATE CONVERSATION_PARTICIPANTS p
SET p.last_read_seq = COALESCE(
    (SELECT MAX(m.seq) FROM MESSAGES m
     WHERE m.conversation_id = p.conversation_id AND m.created_at <= p.last_read_at), 0)
WHERE p.last_read_at IS NOT NULL AND p.last_read_seq = 0;
