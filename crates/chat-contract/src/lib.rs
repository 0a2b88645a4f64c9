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
use chat_crypto::{KeyRing, StoredFields};
use chat_domain::{MessageId, PostingId};
use chat_ports::{
    ChangeFeed, ConversationStore, MessageStore, PostingDirectory, ReadStateStore, ReencryptStore,
    UserDirectory,
};

pub mod cases;
pub mod feed_cases;
mod fixtures;
pub mod switch;

/// Seeding an adapter needs beyond its ports.
#[async_trait]
pub trait Fixtures: Send + Sync {
    /// Makes the posting exist.
    async fn add_posting(&self, id: PostingId);

    /// Waits until every change committed so far is readable in the change feed. An
    /// adapter that numbers its changes after the commit (MySQL's stamper) waits for the
    /// numbering here, so that the feed cases can tell which write appended what; one
    /// that numbers them in the commit has nothing to wait for.
    async fn feed_settled(&self) {}
}

/// What the encryption-at-rest cases need of an adapter's harness: the same data opened
/// with another key ring (as after a restart with a rotated ring), and raw access to the
/// stored text columns (to check what sits at rest, and to move a ciphertext to another
/// row).
#[async_trait]
pub trait AtRest: Send + Sync {
    /// Ports over the same data whose store seals with `ring` (`None`: plain text).
    async fn reopen(&self, ring: Option<Arc<KeyRing>>) -> AtRestPorts;
    /// The stored text columns of a message and its `encryption_key_id`, as stored.
    async fn stored(&self, id: MessageId) -> StoredFields;
    /// Overwrites the stored text columns and key id of a message, bypassing the codec.
    async fn overwrite(&self, id: MessageId, stored: StoredFields);
}

/// Ports of a reopened store, with its re-encryption.
#[derive(Clone)]
pub struct AtRestPorts {
    pub ports: Ports,
    pub reencrypt: Arc<dyn ReencryptStore>,
}

/// Fresh ports of one adapter, all over the same empty store.
#[derive(Clone)]
pub struct Ports {
    pub conversations: Arc<dyn ConversationStore>,
    pub messages: Arc<dyn MessageStore>,
    pub read_state: Arc<dyn ReadStateStore>,
    pub users: Arc<dyn UserDirectory>,
    pub postings: Arc<dyn PostingDirectory>,
    /// The change feed.
    pub feed: Arc<dyn ChangeFeed>,
    pub fixtures: Arc<dyn Fixtures>,
    /// The encryption-at-rest harness; every adapter's harness provides it.
    pub at_rest: Option<Arc<dyn AtRest>>,
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
            + ChangeFeed
            + 'static,
    {
        Self {
            conversations: store.clone(),
            messages: store.clone(),
            read_state: store.clone(),
            users: store.clone(),
            postings: store.clone(),
            feed: store,
            fixtures,
            at_rest: None,
        }
    }

    /// The same ports with the encryption-at-rest harness.
    #[must_use]
    pub fn with_at_rest(mut self, at_rest: Arc<dyn AtRest>) -> Self {
        self.at_rest = Some(at_rest);
        self
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
            reactions_are_capped_per_message_and_per_user_even_when_racing,
            mark_read_moves_forward_only_and_records_receipts,
            unread_counts_skip_own_deleted_and_system_messages,
            muted_conversations_leave_the_badge_total,
            inbox_orders_by_activity_and_paginates,
            inbox_filters_archived_and_hides_left_conversations,
            inbox_follows_commit_order_within_one_second,
            unread_matches_a_model_under_sends_deletes_marks_and_rejoins,
            adding_participants_reactivates_and_refuses_archived,
            removing_the_last_admin_promotes_the_earliest_member,
            demoting_the_last_admin_is_refused,
            announcements_are_appended_with_changes,
            user_and_posting_directories,
            stored_instants_keep_whole_seconds,
            fixtures_follow_the_key_ring_switch,
            encrypted_messages_round_trip,
            sealed_text_is_bound_to_its_row,
            rotation_keeps_old_rows_readable,
            reencrypt_is_resumable_and_idempotent,
            reencrypt_racing_edits_keeps_every_edit,
            two_admins_removing_each_other_at_once_exactly_one_succeeds,
            a_demoted_admins_changes_are_refused_by_the_store,
            concurrent_adds_never_pass_the_participant_limit,
            change_recipients_exclude_a_participant_removed_before_the_change,
            undecryptable_rows_are_reported_and_the_page_served,
            find_messages_answers_a_page_as_find_message_does,
        );
        $crate::contract_suite!(@cases $factory, feed_cases;
            feed_records_each_message_write,
            feed_records_each_conversation_write,
            feed_entries_per_send_do_not_grow_with_the_group,
            polling_reader_never_misses_a_committed_change,
            reader_sees_exactly_its_membership_windows,
            purge_raises_the_floor_first_and_keeps_the_head,
            feed_identity_is_stable_and_wait_past_wakes_on_commit,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $crate::contract_suite!(@cases $factory, cases; $($case),*);
    };
    (@cases $factory:path, $module:ident; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(ports) = $factory().await {
                    $crate::$module::$case(ports).await;
                }
            }
        )*
    };
}
