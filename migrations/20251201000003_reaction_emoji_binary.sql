-- Under utf8mb4_unicode_ci every supplementary-plane character (most emoji) compares equal to
-- every other ('🍣' = '🍺'), so the seed's UNIQUE (message_id, user_id, emoji) refuses a second,
-- different emoji from the same user. Uniqueness moves to the emoji's bytes: a VIRTUAL generated
-- column (instant, stores nothing) with a UNIQUE index built online, then the old key is dropped
-- (in place, metadata only). Identical emoji from one user are still refused, as before.

ALTER TABLE MESSAGE_REACTIONS
    ADD COLUMN IF NOT EXISTS emoji_bin VARBINARY(40) AS (CAST(emoji AS BINARY)) VIRTUAL,
    ALGORITHM=INSTANT;

ALTER TABLE MESSAGE_REACTIONS
    ADD UNIQUE INDEX IF NOT EXISTS uq_reactions_message_user_emoji_bin (message_id, user_id, emoji_bin),
    ALGORITHM=INPLACE, LOCK=NONE;

ALTER TABLE MESSAGE_REACTIONS
    DROP INDEX IF EXISTS unique_message_user_emoji,
    ALGORITHM=NOCOPY, LOCK=NONE;
