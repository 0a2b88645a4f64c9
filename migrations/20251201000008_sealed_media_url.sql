-- Encryption at rest (docs/security.md): a sealed media URL is longer than the URL it seals
-- (a 500-byte URL seals to 707 ASCII characters), so it cannot go to the seed's
-- `media_url VARCHAR(500)`. A row sealed under a key (`encryption_key_id` set) keeps its URL
-- here and `media_url` NULL; a plain row keeps using `media_url`, as the previous system does.
-- Additive and online: a nullable column appended with ALGORITHM=INSTANT. ASCII (the sealed
-- alphabet), not binary: sqlx decodes a `_bin` column as bytes, and nothing compares on it.
ALTER TABLE MESSAGES
    ADD COLUMN IF NOT EXISTS media_url_sealed VARCHAR(1024) CHARACTER SET ascii NULL DEFAULT NULL,
    ALGORITHM=INSTANT;
