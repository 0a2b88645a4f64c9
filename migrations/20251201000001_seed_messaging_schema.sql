-- The messaging schema exactly as `messaging-schema.md` v1.0 describes it, preceded by minimal
-- versions of the two platform tables it references. Every statement is CREATE TABLE IF NOT
-- EXISTS: on a database that already holds the platform and the seed schema (the upgrade case)
-- this migration changes nothing.

-- Owned by the platform; only created here so that a fresh database can host the FKs.
CREATE TABLE IF NOT EXISTS app_users (
    id BIGINT PRIMARY KEY AUTO_INCREMENT,
    first_name VARCHAR(100) DEFAULT NULL,
    last_name VARCHAR(100) DEFAULT NULL,
    email VARCHAR(255) DEFAULT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Owned by the platform; only created here so that a fresh database can host the FKs.
CREATE TABLE IF NOT EXISTS POSTINGS (
    id CHAR(36) PRIMARY KEY DEFAULT (UUID()),
    title VARCHAR(255) DEFAULT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS CONVERSATIONS (
    id CHAR(36) PRIMARY KEY DEFAULT (UUID()),
    type VARCHAR(20) NOT NULL CHECK (type IN ('DIRECT', 'GROUP', 'POST_LINKED')),
    name VARCHAR(200) DEFAULT NULL,
    posting_id CHAR(36) DEFAULT NULL,
    created_by BIGINT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    last_message_at TIMESTAMP NULL DEFAULT NULL,
    is_archived BOOLEAN DEFAULT FALSE,
    archived_at TIMESTAMP NULL DEFAULT NULL,

    FOREIGN KEY (posting_id) REFERENCES POSTINGS(id) ON DELETE CASCADE,
    FOREIGN KEY (created_by) REFERENCES app_users(id) ON DELETE RESTRICT,

    INDEX idx_conversations_type (type),
    INDEX idx_conversations_posting (posting_id),
    INDEX idx_conversations_created_by (created_by),
    INDEX idx_conversations_last_message (last_message_at DESC)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS CONVERSATION_PARTICIPANTS (
    id CHAR(36) PRIMARY KEY DEFAULT (UUID()),
    conversation_id CHAR(36) NOT NULL,
    user_id BIGINT NOT NULL,
    role VARCHAR(20) DEFAULT 'MEMBER' CHECK (role IN ('ADMIN', 'MEMBER')),
    joined_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    left_at TIMESTAMP NULL DEFAULT NULL,
    last_read_at TIMESTAMP NULL DEFAULT NULL,
    is_muted BOOLEAN DEFAULT FALSE,

    FOREIGN KEY (conversation_id) REFERENCES CONVERSATIONS(id) ON DELETE CASCADE,
    FOREIGN KEY (user_id) REFERENCES app_users(id) ON DELETE CASCADE,

    UNIQUE KEY unique_user_conversation (conversation_id, user_id),

    INDEX idx_participants_user (user_id),
    INDEX idx_participants_conversation (conversation_id),
    INDEX idx_participants_active (conversation_id, user_id, left_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS MESSAGES (
    id CHAR(36) PRIMARY KEY DEFAULT (UUID()),
    conversation_id CHAR(36) NOT NULL,
    sender_id BIGINT NOT NULL,
    content TEXT NOT NULL,
    encryption_key_id VARCHAR(100) DEFAULT NULL,
    message_type VARCHAR(20) DEFAULT 'TEXT' CHECK (message_type IN ('TEXT', 'IMAGE', 'FILE', 'LINK', 'SYSTEM')),
    media_url VARCHAR(500) DEFAULT NULL,
    media_metadata JSON DEFAULT NULL,
    reply_to_id CHAR(36) DEFAULT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    edited_at TIMESTAMP NULL DEFAULT NULL,
    deleted_at TIMESTAMP NULL DEFAULT NULL,
    is_system_message BOOLEAN DEFAULT FALSE,

    FOREIGN KEY (conversation_id) REFERENCES CONVERSATIONS(id) ON DELETE CASCADE,
    FOREIGN KEY (sender_id) REFERENCES app_users(id) ON DELETE RESTRICT,
    FOREIGN KEY (reply_to_id) REFERENCES MESSAGES(id) ON DELETE SET NULL,

    INDEX idx_messages_conversation_time (conversation_id, created_at DESC),
    INDEX idx_messages_sender (sender_id),
    INDEX idx_messages_type (message_type),
    INDEX idx_messages_deleted (deleted_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS MESSAGE_REACTIONS (
    id CHAR(36) PRIMARY KEY DEFAULT (UUID()),
    message_id CHAR(36) NOT NULL,
    user_id BIGINT NOT NULL,
    emoji VARCHAR(10) NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,

    FOREIGN KEY (message_id) REFERENCES MESSAGES(id) ON DELETE CASCADE,
    FOREIGN KEY (user_id) REFERENCES app_users(id) ON DELETE CASCADE,

    UNIQUE KEY unique_message_user_emoji (message_id, user_id, emoji),

    INDEX idx_reactions_message (message_id),
    INDEX idx_reactions_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS MESSAGE_READ_RECEIPTS (
    id CHAR(36) PRIMARY KEY DEFAULT (UUID()),
    message_id CHAR(36) NOT NULL,
    user_id BIGINT NOT NULL,
    read_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,

    FOREIGN KEY (message_id) REFERENCES MESSAGES(id) ON DELETE CASCADE,
    FOREIGN KEY (user_id) REFERENCES app_users(id) ON DELETE CASCADE,

    UNIQUE KEY unique_message_user_read (message_id, user_id),

    INDEX idx_receipts_message (message_id),
    INDEX idx_receipts_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
