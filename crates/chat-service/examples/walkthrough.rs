//! A whole conversation on the in-memory adapter, printed step by step: how another Rust
//! service embeds the domain and service crates with adapters of its own.
//!
//! Run with `cargo run -p chat-service --example walkthrough`.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use chat_domain::{
    ConversationType, Delivery, DisplayName, Emoji, GroupName, MessageBody, MessageContent,
    MessageType, UserId,
};
use chat_memory::MemoryStore;
use chat_ports::{EventPublisher, PublishError, UserDirectory};
use chat_service::{
    ChatService, ConversationUpdate, CreateConversation, HistoryQuery, PageLimit, Ports,
    SendMessage,
};

/// Prints every event instead of pushing it to sockets.
struct PrintEvents;

#[async_trait]
impl EventPublisher for PrintEvents {
    async fn publish(&self, delivery: Delivery) -> Result<(), PublishError> {
        let to: Vec<String> = delivery
            .recipients
            .iter()
            .map(ToString::to_string)
            .collect();
        println!(
            "  event {:<22} -> users {}",
            delivery.event.name(),
            to.join(", ")
        );
        Ok(())
    }
}

fn say(text: &str) -> anyhow::Result<SendMessage> {
    Ok(SendMessage {
        body: MessageBody::from_user(MessageContent::parse(text)?, MessageType::Text, None, None)?,
        reply_to_id: None,
        client_message_id: None,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let store = Arc::new(MemoryStore::new());
    let service =
        ChatService::new(Ports::from_store(store.clone()).with_events(Arc::new(PrintEvents)));
    let (ada, grace, linus) = (UserId::new(1)?, UserId::new(2)?, UserId::new(3)?);
    for (user, name) in [(ada, "Ada"), (grace, "Grace"), (linus, "Linus")] {
        store
            .upsert_user(user, Some(DisplayName::parse(name)?))
            .await?;
    }

    println!("Ada creates a group with Grace and Linus");
    let group = service
        .create_conversation(
            ada,
            CreateConversation {
                kind: ConversationType::Group,
                name: Some(GroupName::parse("Compilers 🦀")?),
                posting_id: None,
                participant_ids: vec![grace, linus],
            },
        )
        .await?;
    let id = group.details.conversation.id;

    println!("Grace says hello; Ada replies");
    let hello = service
        .send_message(grace, id, say("Hello, world! 👋")?)
        .await?
        .view;
    let mut reply = say("Welcome!")?;
    reply.reply_to_id = Some(hello.message.id);
    service.send_message(ada, id, reply).await?;

    println!("Linus reacts, then reads everything");
    service
        .add_reaction(linus, hello.message.id, Emoji::parse("🎉")?)
        .await?;
    println!(
        "  Linus has {} unread",
        service.conversation(linus, id).await?.unread_count
    );
    let read = service.mark_read(linus, id, None).await?;
    println!(
        "  after reading: {} unread, marker at seq {}",
        read.unread_count, read.last_read_seq
    );

    println!("Ada makes Grace an admin, then archives the group");
    service
        .change_role(ada, id, grace, chat_domain::Role::Admin)
        .await?;
    service
        .update_conversation(
            ada,
            id,
            ConversationUpdate {
                name: None,
                is_archived: Some(true),
            },
        )
        .await?;
    let refused = service.send_message(linus, id, say("anyone?")?).await;
    println!(
        "  sending now: {:?}",
        refused.err().context("archived groups are read-only")?
    );

    println!("History, oldest first:");
    let page = service
        .history(
            ada,
            id,
            HistoryQuery::After(chat_domain::Seq::ZERO, PageLimit::new(50)?),
        )
        .await?;
    for item in page.items {
        let m = item.message;
        let reactions: Vec<String> = item
            .reactions
            .iter()
            .map(|r| format!("{}×{}", r.emoji, r.count))
            .collect();
        println!(
            "  #{:<2} {:<6} {:<8} {} {}",
            m.seq,
            item.sender_name.unwrap_or_default(),
            m.message_type,
            m.content,
            reactions.join(" ")
        );
    }
    Ok(())
}
