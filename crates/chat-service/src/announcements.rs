//! Announcements: the SYSTEM messages the service appends to tell of a membership or
//! settings change, as a short line for people and structured details (in
//! `media_metadata`) for programs.

use chat_domain::values::MetadataValue;
use chat_domain::{MediaMetadata, MessageBody, MessageContent, Role, UserId, ValidationError};

/// The change an announcement tells of.
pub(crate) enum Notice<'a> {
    GroupCreated { name: Option<&'a str> },
    ParticipantsAdded(&'a [UserId]),
    ParticipantRemoved(UserId),
    ParticipantLeft,
    RoleChanged(UserId, Role),
    Renamed(&'a str),
    Archived,
    Unarchived,
}

impl Notice<'_> {
    /// The body of the announcement telling of this change made by `actor`.
    ///
    /// The line is never blank and is cut to the content limit (a long list of added
    /// users would exceed it); a group name cannot hold NUL. So parsing cannot fail in
    /// practice, and if it ever did the use case reports it rather than panicking.
    pub(crate) fn body(&self, actor: UserId) -> Result<MessageBody, ValidationError> {
        let actor_id = ("actor_id", MetadataValue::Integer(actor.get()));
        let (event, text, extra): (&str, String, Vec<(&str, MetadataValue)>) = match self {
            Notice::GroupCreated { name } => (
                "group_created",
                match name {
                    Some(name) => format!("User {actor} created the group \u{201c}{name}\u{201d}"),
                    None => format!("User {actor} created the conversation"),
                },
                name.map(|n| vec![("name", MetadataValue::Text(n.to_owned()))])
                    .unwrap_or_default(),
            ),
            Notice::ParticipantsAdded(users) => (
                "participants_added",
                format!("User {actor} added {}", list(users)),
                vec![(
                    "user_ids",
                    MetadataValue::Integers(users.iter().map(|u| u.get()).collect()),
                )],
            ),
            Notice::ParticipantRemoved(user) => (
                "participant_removed",
                format!("User {actor} removed user {user}"),
                vec![("user_id", MetadataValue::Integer(user.get()))],
            ),
            Notice::ParticipantLeft => ("participant_left", format!("User {actor} left"), vec![]),
            Notice::RoleChanged(user, role) => (
                "role_changed",
                format!("User {actor} made user {user} {}", role.as_str()),
                vec![
                    ("user_id", MetadataValue::Integer(user.get())),
                    ("role", MetadataValue::Text(role.as_str().to_owned())),
                ],
            ),
            Notice::Renamed(name) => (
                "renamed",
                format!("User {actor} renamed the group to \u{201c}{name}\u{201d}"),
                vec![("name", MetadataValue::Text((*name).to_owned()))],
            ),
            Notice::Archived => (
                "archived",
                format!("User {actor} archived the conversation"),
                vec![],
            ),
            Notice::Unarchived => (
                "unarchived",
                format!("User {actor} unarchived the conversation"),
                vec![],
            ),
        };
        let mut pairs = vec![("event", MetadataValue::Text(event.to_owned())), actor_id];
        pairs.extend(extra);
        let content = MessageContent::parse(truncate(&text))?;
        Ok(MessageBody::system(
            content,
            MediaMetadata::from_pairs(pairs),
        ))
    }
}

fn list(users: &[UserId]) -> String {
    let ids: Vec<String> = users.iter().map(ToString::to_string).collect();
    match ids.len() {
        1 => format!("user {}", ids.join("")),
        _ => format!("users {}", ids.join(", ")),
    }
}

fn truncate(text: &str) -> String {
    text.chars()
        .take(chat_domain::values::MAX_CONTENT_CHARS)
        .collect()
}
