//! Sends into one group of 1000 members, every member in turn (the benchmark's big-group
//! shape): each send passes the ~999 messages sent since the sender's previous one, so each
//! records ~999 receipts. The receipts stay exactly one per reader per message (who, and
//! when they first passed it), and a send's cost does not grow with the receipts already on
//! each passed message (the time per send is printed; run with `--nocapture`).
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

use std::time::Instant;

use chat_domain::{
    ConversationId, ConversationType, GroupName, MediaMetadata, MessageBody, MessageContent,
    MessageId, MessageType, UserId,
};
use chat_memory::MemoryStore;
use chat_ports::{ConversationStore, MessageStore, NewConversation, NewMessage};
use time::OffsetDateTime;

const MEMBERS: i64 = 1000;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn at(second: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).unwrap()
}

fn text(conversation: ConversationId, sender: i64, second: i64) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body: MessageBody::from_user(
            MessageContent::parse("hello").unwrap(),
            MessageType::Text,
            None,
            None,
        )
        .unwrap(),
        reply_to_id: None,
        client_message_id: None,
        created_at: at(second),
    }
}

#[tokio::test]
async fn receipts_stay_one_per_reader_when_every_member_of_a_big_group_sends_in_turn() {
    let store = MemoryStore::new();
    let id = ConversationId::new();
    store
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse("big").unwrap()),
                posting_id: None,
                created_by: user(1),
                members: (2..=MEMBERS).map(user).collect(),
                created_at: at(0),
            },
            NewMessage {
                body: MessageBody::system(
                    MessageContent::parse("created").unwrap(),
                    MediaMetadata::parse(r#"{"event":"created"}"#).unwrap(),
                ),
                ..text(id, 1, 0)
            },
        )
        .await
        .unwrap();

    // Two rounds: in the second, each sender passes the 999 messages of the others since
    // their own, each of which already holds up to 998 receipts.
    let mut sent = Vec::new();
    let mut timings = Vec::new();
    for round in 0..2 {
        let began = Instant::now();
        for sender in 1..=MEMBERS {
            let appended = store
                .append_message(text(id, sender, 1 + round * MEMBERS + sender))
                .await
                .unwrap();
            sent.push((sender, appended.view.message.id));
        }
        timings.push(began.elapsed() / u32::try_from(MEMBERS).unwrap());
    }
    println!(
        "time per send into a group of {MEMBERS}, first / second round: {:?} / {:?}",
        timings[0], timings[1]
    );

    // Message k of the first round (sender k) was passed by senders k+1..=1000 in the first
    // round, at their send, and by senders 1..k in the second round: every other member,
    // exactly once, at the first pass.
    for (index, (sender, message)) in sent
        .iter()
        .take(usize::try_from(MEMBERS).unwrap())
        .enumerate()
    {
        if index % 97 != 0 {
            continue;
        }
        let receipts = store.receipts(*message).await.unwrap();
        let mut readers: Vec<i64> = receipts.iter().map(|r| r.user_id.get()).collect();
        readers.sort_unstable();
        let expected: Vec<i64> = (1..=MEMBERS).filter(|u| u != sender).collect();
        assert_eq!(readers, expected, "readers of the message of {sender}");
        for receipt in &receipts {
            let reader = receipt.user_id.get();
            let first_pass = if reader > *sender {
                1 + reader
            } else {
                1 + MEMBERS + reader
            };
            assert_eq!(receipt.read_at, at(first_pass), "when {reader} passed it");
        }
    }
}
