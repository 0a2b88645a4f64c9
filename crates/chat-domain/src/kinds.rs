//! The closed vocabularies of the schema: conversation types, participant roles and
//! message types, spelled as the database stores them.

use std::fmt;
use std::str::FromStr;

use crate::ValidationError;

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident, $field:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored spelling (upper case).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the stored spelling (exact, upper case).
            ///
            /// # Errors
            /// A [`ValidationError`] naming the allowed values.
            pub fn parse(text: &str) -> Result<Self, ValidationError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ValidationError::new(
                        $field,
                        format!("must be one of {}", [$($text),+].join(", ")),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

vocabulary!(
    /// What kind of conversation this is.
    ConversationType, "type", {
        /// Between two users (or one user with themselves: notes to self).
        Direct => "DIRECT",
        /// A named group with admins and members.
        Group => "GROUP",
        /// A group attached to a posting of the platform.
        PostLinked => "POST_LINKED",
    }
);

vocabulary!(
    /// A participant's role in a conversation.
    Role, "role", {
        /// May rename, add and remove participants, change roles and archive.
        Admin => "ADMIN",
        /// May read and write.
        Member => "MEMBER",
    }
);

vocabulary!(
    /// What a message carries.
    MessageType, "message_type", {
        /// Plain text.
        Text => "TEXT",
        /// An image at `media_url`.
        Image => "IMAGE",
        /// A file at `media_url`.
        File => "FILE",
        /// A link.
        Link => "LINK",
        /// A record written by the service itself (group created, member added, …).
        System => "SYSTEM",
    }
);

impl ConversationType {
    /// Whether the conversation has admins, a name and a managed membership.
    pub fn is_group_like(self) -> bool {
        !matches!(self, ConversationType::Direct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_round_trip_and_refuse_other_spellings() {
        for t in ConversationType::ALL {
            assert_eq!(ConversationType::parse(t.as_str()), Ok(*t));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Ok(*r));
        }
        for m in MessageType::ALL {
            assert_eq!(MessageType::parse(m.as_str()), Ok(*m));
        }
        assert!(ConversationType::parse("direct").is_err());
        assert!(Role::parse("OWNER").is_err());
        assert_eq!(
            MessageType::parse("VIDEO").map_err(|e| e.field()),
            Err("message_type")
        );
    }
}
