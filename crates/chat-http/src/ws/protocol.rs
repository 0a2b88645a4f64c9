//! The frames of the WebSocket protocol: what clients send (parsed here into
//! [`ClientFrame`], refusals into [`FrameError`]) and the replies the server sends back
//! (`ready`, `ack`, `error`, `pong`). Event frames are encoded by
//! [`realtime::frame`](crate::realtime::frame).

use bytestring::ByteString;
use chat_domain::{ConversationId, MessageId, UserId};
use chat_service::SendMessage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, Problem, json_message};
use crate::wire::{MarkReadBody, MessageOut, SendMessageBody};

/// The longest `request_id` echoed back.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// A client frame, parsed and validated.
#[derive(Debug)]
pub(crate) enum ClientFrame {
    /// `{"type":"auth","token":…,"since"?:…}`: `since` is a sync token to resume from,
    /// as sent (decoded by the connection, which answers a bad one).
    Auth {
        token: String,
        since: Option<String>,
    },
    /// `{"type":"send",…}`.
    Send {
        request_id: Option<Value>,
        conversation_id: ConversationId,
        message: SendMessage,
    },
    /// `{"type":"typing","conversation_id":…,"is_typing":…}`.
    Typing {
        request_id: Option<Value>,
        conversation_id: ConversationId,
        is_typing: bool,
    },
    /// `{"type":"read","conversation_id":…,"up_to_message_id"?:…}`.
    Read {
        request_id: Option<Value>,
        conversation_id: ConversationId,
        up_to: Option<MessageId>,
    },
    /// `{"type":"ping"}`.
    Ping { request_id: Option<Value> },
}

/// A refused client frame: answered with an `error` frame, the connection stays open.
#[derive(Debug)]
pub(crate) struct FrameError {
    /// The frame's `request_id`, when it could be read.
    pub(crate) request_id: Option<Value>,
    /// Why it was refused.
    pub(crate) error: ApiError,
}

#[derive(Deserialize)]
struct SendFields {
    conversation_id: Option<String>,
    #[serde(flatten)]
    body: SendMessageBody,
}

#[derive(Deserialize)]
struct TypingFields {
    conversation_id: Option<String>,
    is_typing: Option<bool>,
}

#[derive(Deserialize)]
struct ReadFields {
    conversation_id: Option<String>,
    #[serde(flatten)]
    body: MarkReadBody,
}

#[derive(Deserialize)]
struct AuthFields {
    token: Option<String>,
    since: Option<String>,
}

/// Parses one text frame.
///
/// # Errors
/// A [`FrameError`] (`validation_failed`) for anything that is not a well-formed frame of
/// a known type.
pub(crate) fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let refuse = |request_id: Option<Value>, field: &str, message: String| FrameError {
        request_id,
        error: ApiError::field(field, message),
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| refuse(None, "frame", json_message(&e)))?;
    let Value::Object(object) = value else {
        return Err(refuse(None, "frame", "a frame is a JSON object".to_owned()));
    };
    let request_id = match object.get("request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.chars().count() <= MAX_REQUEST_ID_CHARS => {
            Some(Value::String(id.clone()))
        }
        Some(Value::Number(n)) => Some(Value::Number(n.clone())),
        Some(_) => {
            return Err(refuse(
                None,
                "request_id",
                format!(
                    "must be a number or a string of at most {MAX_REQUEST_ID_CHARS} characters"
                ),
            ));
        }
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err(refuse(request_id, "type", "must be a string".to_owned())),
        None => return Err(refuse(request_id, "type", "is required".to_owned())),
    };
    let fields = |object: Map<String, Value>| Value::Object(object);
    let shape = |err: serde_json::Error| err.to_string();
    match kind.as_str() {
        "auth" => {
            let auth: AuthFields = serde_json::from_value(fields(object))
                .map_err(|e| refuse(request_id.clone(), "frame", shape(e)))?;
            let token = auth
                .token
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| refuse(request_id, "token", "is required".to_owned()))?;
            Ok(ClientFrame::Auth {
                token,
                since: auth.since,
            })
        }
        "send" => {
            let send: SendFields = serde_json::from_value(fields(object))
                .map_err(|e| refuse(request_id.clone(), "frame", shape(e)))?;
            let conversation_id = conversation(send.conversation_id, &request_id)?;
            let message = send.body.into_domain().map_err(|error| FrameError {
                request_id: request_id.clone(),
                error,
            })?;
            Ok(ClientFrame::Send {
                request_id,
                conversation_id,
                message,
            })
        }
        "typing" => {
            let typing: TypingFields = serde_json::from_value(fields(object))
                .map_err(|e| refuse(request_id.clone(), "frame", shape(e)))?;
            let conversation_id = conversation(typing.conversation_id, &request_id)?;
            let is_typing = typing
                .is_typing
                .ok_or_else(|| refuse(request_id.clone(), "is_typing", "is required".to_owned()))?;
            Ok(ClientFrame::Typing {
                request_id,
                conversation_id,
                is_typing,
            })
        }
        "read" => {
            let read: ReadFields = serde_json::from_value(fields(object))
                .map_err(|e| refuse(request_id.clone(), "frame", shape(e)))?;
            let conversation_id = conversation(read.conversation_id, &request_id)?;
            let up_to = read.body.into_domain().map_err(|error| FrameError {
                request_id: request_id.clone(),
                error,
            })?;
            Ok(ClientFrame::Read {
                request_id,
                conversation_id,
                up_to,
            })
        }
        "ping" => Ok(ClientFrame::Ping { request_id }),
        other => Err(refuse(
            request_id,
            "type",
            format!(
                "unknown frame type `{}`; expected auth, send, typing, read or ping",
                truncated(other)
            ),
        )),
    }
}

fn conversation(
    id: Option<String>,
    request_id: &Option<Value>,
) -> Result<ConversationId, FrameError> {
    let refuse = |error: ApiError| FrameError {
        request_id: request_id.clone(),
        error,
    };
    let id = id.ok_or_else(|| refuse(ApiError::field("conversation_id", "is required")))?;
    ConversationId::parse(&id).map_err(|e| refuse(ApiError::from(e)))
}

fn truncated(text: &str) -> String {
    text.chars().take(40).collect()
}

/// A reply of the server to one client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// Authentication succeeded; events flow from now on. `resumed` when the events the
    /// client missed since its token were replayed just before; `next` is the token to
    /// keep (absent when the feed could not be read, and on a token refresh).
    Ready {
        user_id: i64,
        resumed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// A request succeeded; `message` (and `created`) for `send` only.
    Ack {
        request_id: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<MessageOut>,
        #[serde(skip_serializing_if = "Option::is_none")]
        created: Option<bool>,
    },
    /// A request was refused or failed.
    Error {
        request_id: Option<Value>,
        error: Problem,
    },
    /// The answer to a `ping` frame.
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<Value>,
    },
}

impl Reply {
    /// `ready` for `user`.
    pub(crate) fn ready(user: UserId, resumed: bool, next: Option<String>) -> Self {
        Reply::Ready {
            user_id: user.get(),
            resumed,
            next,
        }
    }

    /// An `error` frame for `error`.
    pub(crate) fn error(request_id: Option<Value>, error: &ApiError) -> Self {
        Reply::Error {
            request_id,
            error: error.problem(),
        }
    }

    /// The frame text.
    pub(crate) fn encode(&self) -> ByteString {
        let text = serde_json::to_string(self).unwrap_or_else(|err| {
            tracing::error!(error = %err, "reply not encoded");
            r#"{"type":"error","request_id":null,"error":{"type":"urn:chat:problem:internal","title":"Internal Server Error","status":500,"detail":"The reply could not be encoded.","code":"internal"}}"#.to_owned()
        });
        ByteString::from(text)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Parses `text` and describes the outcome: the frame kind, or the refused field
    /// with the echoed request id.
    fn check(text: &str, expected: &str) {
        let got = match parse(text) {
            Ok(ClientFrame::Auth { since, .. }) => format!("auth {}", since.unwrap_or_default()),
            Ok(ClientFrame::Send { request_id, .. }) => format!("send {}", show(request_id)),
            Ok(ClientFrame::Typing { is_typing, .. }) => format!("typing {is_typing}"),
            Ok(ClientFrame::Read { up_to, .. }) => format!("read {}", up_to.is_some()),
            Ok(ClientFrame::Ping { request_id }) => format!("ping {}", show(request_id)),
            Err(FrameError { request_id, error }) => {
                let problem = error.problem();
                let field = problem
                    .errors
                    .and_then(|e| e.first().map(|f| f.field.clone()))
                    .unwrap_or_default();
                format!("error {} {field} {}", problem.code, show(request_id))
            }
        };
        assert_eq!(got, expected, "{text}");
    }

    fn show(request_id: Option<Value>) -> String {
        request_id.map_or("-".to_owned(), |v| v.to_string())
    }

    #[test]
    fn client_frames_table() {
        let c = "0190b2c4-4b1e-7cc0-8e4e-2a2bd0c7a001";
        let m = "0190b2c4-4b1e-7cc0-8e4e-2a2bd0c7a002";
        let cases = [
            (r#"{"type":"auth","token":"t"}"#.to_owned(), "auth "),
            (
                r#"{"type":"auth","token":"t","since":"v1.x.1"}"#.to_owned(),
                "auth v1.x.1",
            ),
            (
                r#"{"type":"auth","token":"t","since":null}"#.to_owned(),
                "auth ",
            ),
            (
                r#"{"type":"auth","token":"t","since":7}"#.to_owned(),
                "error validation_failed frame -",
            ),
            (
                r#"{"type":"auth","token":" "}"#.to_owned(),
                "error validation_failed token -",
            ),
            (r#"{"type":"ping"}"#.to_owned(), "ping -"),
            (r#"{"type":"ping","request_id":7}"#.to_owned(), "ping 7"),
            (
                json!({"type":"send","request_id":"r1","conversation_id":c,"content":"hi"})
                    .to_string(),
                r#"send "r1""#,
            ),
            (
                json!({"type":"send","request_id":"r1","conversation_id":c}).to_string(),
                r#"error validation_failed content "r1""#,
            ),
            (
                json!({"type":"send","request_id":"r1","content":"hi"}).to_string(),
                r#"error validation_failed conversation_id "r1""#,
            ),
            (
                json!({"type":"send","request_id":"r1","conversation_id":"nope","content":"hi"})
                    .to_string(),
                r#"error validation_failed conversation_id "r1""#,
            ),
            (
                json!({"type":"send","request_id":"r1","conversation_id":c,"content":5})
                    .to_string(),
                r#"error validation_failed frame "r1""#,
            ),
            (
                json!({"type":"typing","conversation_id":c,"is_typing":true}).to_string(),
                "typing true",
            ),
            (
                json!({"type":"typing","conversation_id":c}).to_string(),
                "error validation_failed is_typing -",
            ),
            (
                json!({"type":"read","conversation_id":c}).to_string(),
                "read false",
            ),
            (
                json!({"type":"read","conversation_id":c,"up_to_message_id":m}).to_string(),
                "read true",
            ),
            (
                json!({"type":"read","conversation_id":c,"up_to_message_id":"x"}).to_string(),
                "error validation_failed up_to_message_id -",
            ),
            (
                r#"{"type":"dance","request_id":"r9"}"#.to_owned(),
                r#"error validation_failed type "r9""#,
            ),
            (
                r#"{"request_id":"r9"}"#.to_owned(),
                r#"error validation_failed type "r9""#,
            ),
            (r#"{"type":3}"#.to_owned(), "error validation_failed type -"),
            (
                r#"{"type":"ping","request_id":{}}"#.to_owned(),
                "error validation_failed request_id -",
            ),
            ("[1,2]".to_owned(), "error validation_failed frame -"),
            ("{not json".to_owned(), "error validation_failed frame -"),
            (String::new(), "error validation_failed frame -"),
        ];
        for (text, expected) in cases {
            check(&text, expected);
        }
    }

    #[test]
    fn replies_have_a_stable_shape() {
        let ready: Value =
            serde_json::from_str(&Reply::ready(UserId::new(42).unwrap(), false, None).encode())
                .unwrap();
        assert_eq!(
            ready,
            json!({"type": "ready", "user_id": 42, "resumed": false})
        );
        let resumed = Reply::ready(UserId::new(42).unwrap(), true, Some("v1.ab.9".to_owned()));
        let resumed: Value = serde_json::from_str(&resumed.encode()).unwrap();
        assert_eq!(
            resumed,
            json!({"type": "ready", "user_id": 42, "resumed": true, "next": "v1.ab.9"})
        );
        let pong: Value = serde_json::from_str(&Reply::Pong { request_id: None }.encode()).unwrap();
        assert_eq!(pong, json!({"type": "pong"}));
        let ack: Value = serde_json::from_str(
            &Reply::Ack {
                request_id: Some(json!("r1")),
                message: None,
                created: None,
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(ack, json!({"type": "ack", "request_id": "r1"}));
        let error: Value = serde_json::from_str(
            &Reply::error(Some(json!(3)), &ApiError::field("type", "is required")).encode(),
        )
        .unwrap();
        assert_eq!(
            error,
            json!({
                "type": "error",
                "request_id": 3,
                "error": {
                    "type": "urn:chat:problem:validation_failed",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "type: is required",
                    "code": "validation_failed",
                    "errors": [{"field": "type", "message": "is required"}]
                }
            })
        );
    }
}
