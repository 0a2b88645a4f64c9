//! [`Frame`]: an event already encoded for the wire, with what the transport needs to
//! route and order it. The payload is opaque here: whoever publishes (the HTTP adapter)
//! encodes it once, and every connection is sent exactly those bytes.

use bytestring::ByteString;
use chat_domain::{ConversationId, UserId};

/// How the hub orders and sheds a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// `message.created` with its `seq`: delivered per conversation in `seq` order.
    MessageCreated(i64),
    /// Any other stored change: delivered per conversation in publishing order.
    Ordered,
    /// `typing`: never stored, never held back, the first thing dropped for a slow
    /// consumer.
    Typing,
}

/// An encoded event with the users it must reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The conversation it belongs to (its ordering lane).
    pub conversation_id: ConversationId,
    /// How it is ordered and shed.
    pub class: EventClass,
    /// Who must hear of it (every connection of each).
    pub recipients: Vec<UserId>,
    /// The text sent to each connection as it is, shared by every recipient (cloning it
    /// is a reference-count bump).
    pub payload: ByteString,
}

impl Frame {
    /// Whether the frame travels to the other nodes over Redis: only ephemeral frames
    /// (typing) do. A durable event reaches every node from the change feed, through
    /// that node's own relay.
    pub fn crosses_nodes(&self) -> bool {
        self.class == EventClass::Typing
    }
}
