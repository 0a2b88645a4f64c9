//! The port contract suite: the behaviour every adapter of `chat-ports` must show,
//! written once and run unchanged against the in-memory and the MySQL adapter.
//!
//! An adapter's test file names a factory that makes fresh, empty ports (or `None` when
//! its server is absent and the run may skip) and invokes [`contract_suite!`]:
//!
//! ```ignore
//! async fn fresh() -> Option<chat_contract::Ports> { /* … */ }
//! chat_contract::contract_suite!(fresh);
//! ```
//!
//! This is test-support code: a failed expectation panics, as in any test.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use async_trait::async_trait;
use chat_domain::PostingId;
use chat_ports::{
    ConversationStore, MessageStore, PostingDirectory, ReadStateStore, UserDirectory,
};

pub mod cases;
mod fixtures;

/// Seeding an adapter needs beyond its ports.
#[async_trait]
pub trait Fixtures: Send + Sync {
    /// Makes the posting exist.
    async fn add_posting(&self, id: PostingId);
}

/// Fresh ports of one adapter, all over the same empty store.
#[derive(Clone)]
pub struct Ports {
    pub conversations: Arc<dyn ConversationStore>,
    pub messages: Arc<dyn MessageStore>,
    pub read_state: Arc<dyn ReadStateStore>,
    pub users: Arc<dyn UserDirectory>,
    pub postings: Arc<dyn PostingDirectory>,
    pub fixtures: Arc<dyn Fixtures>,
}

impl Ports {
    /// Every port on `store` (an adapter that implements all five, as each adapter
    /// does), seeded through `fixtures`.
    pub fn from_store<S>(store: Arc<S>, fixtures: Arc<dyn Fixtures>) -> Self
    where
        S: ConversationStore
            + MessageStore
            + ReadStateStore
            + UserDirectory
            + PostingDirectory
            + 'static,
    {
        Self {
            conversations: store.clone(),
            messages: store.clone(),
            read_state: store.clone(),
            users: store.clone(),
            postings: store,
            fixtures,
        }
    }
}

/// Generates one `#[tokio::test]` per contract case, each on fresh ports from `$factory`
/// (an `async fn() -> Option<Ports>`; `None` skips, and the factory says so loudly).
#[macro_export]
macro_rules! contract_suite {
    ($factory:path) => {
        $crate::contract_suite!(@cases $factory;
            direct_conversation_is_found_in_either_direction,
            direct_get_or_create_race_creates_exactly_one,
            direct_with_oneself_is_its_own_conversation,
            group_creation_stores_roles_and_announcement,
            append_assigns_consecutive_seq_in_commit_order,
            concurrent_appends_get_gap_free_unique_seqs,
            append_is_idempotent_per_sender_and_client_message_id,
            idempotent_append_race_stores_one_message,
            append_refuses_archived_and_unknown_conversations,
            append_names_recipients_and_refuses_outsiders,
            sending_marks_read_for_the_sender,
            history_pages_by_seq_and_skips_deleted,
            edit_and_delete_only_touch_live_messages,
            reactions_are_idempotent_and_distinct_per_emoji,
            reactions_on_deleted_messages_are_not_found,
            mark_read_moves_forward_only_and_records_receipts,
            unread_counts_skip_own_deleted_and_system_messages,
            muted_conversations_leave_the_badge_total,
            inbox_orders_by_activity_and_paginates,
            inbox_filters_archived_and_hides_left_conversations,
            adding_participants_reactivates_and_refuses_archived,
            removing_the_last_admin_promotes_the_earliest_member,
            demoting_the_last_admin_is_refused,
            announcements_are_appended_with_changes,
            user_and_posting_directories,
            stored_instants_keep_whole_seconds,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(ports) = $factory().await {
                    $crate::cases::$case(ports).await;
                }
            }
        )*
    };
}
