//! `ChatService` on an embedded SQLite file, in a few lines: how a Rust service that embeds
//! the crates gets a chat that survives restarts, with nothing to install or run beside it.
//!
//! Run with `cargo run -p chat-sqlite --example embed [path/to/chat.db]` (default: a file in
//! the system's temporary directory). Run it twice: the second run reads back the first
//! run's messages.

use std::sync::Arc;

use chat_domain::{DisplayName, MessageBody, MessageContent, MessageType, UserId};
use chat_ports::UserDirectory;
use chat_service::{ChatService, HistoryQuery, PageLimit, Ports, SendMessage};
use chat_sqlite::{SqliteSettings, SqliteStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("chat-embed-example.db")
            .display()
            .to_string()
    });

    // The whole setup: open (creates the file), migrate, wire the ports.
    let store = Arc::new(SqliteStore::open(&path, SqliteSettings::default()).await?);
    store.migrate().await?;
    // No sockets here: events are discarded (a real embedder adds `.with_events(…)`).
    let service = ChatService::new(Ports::from_store(store.clone()));

    let (ada, grace) = (UserId::new(1)?, UserId::new(2)?);
    store
        .upsert_user(ada, Some(DisplayName::parse("Ada")?))
        .await?;
    store
        .upsert_user(grace, Some(DisplayName::parse("Grace")?))
        .await?;
    let direct = service.open_direct(ada, grace).await?;
    let id = direct.item.details.conversation.id;
    println!(
        "{} conversation {id} in {}",
        if direct.created { "created" } else { "found" },
        store.path().display()
    );

    let body = MessageBody::from_user(
        MessageContent::parse(format!("hello at {}", time::OffsetDateTime::now_utc()))?,
        MessageType::Text,
        None,
        None,
    )?;
    service
        .send_message(
            ada,
            id,
            SendMessage {
                body,
                reply_to_id: None,
                client_message_id: None,
            },
        )
        .await?;

    let page = service
        .history(grace, id, HistoryQuery::Latest(PageLimit::new(10)?))
        .await?;
    println!("the newest messages, as Grace reads them:");
    for view in page.items.iter().rev() {
        println!(
            "  #{:<3} {}: {}",
            view.message.seq,
            view.sender_name.as_deref().unwrap_or("?"),
            view.message.content
        );
    }
    // Finishes queued writes and releases the file for the next run.
    store.close().await;
    Ok(())
}
