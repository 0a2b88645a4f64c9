//! The validation table: every malformed input is a 400 (or 413) problem naming the
//! field, never a 500.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, on_every_backend};

on_every_backend!(malformed_input_is_refused);

/// One case: what is sent, and the status, code and field expected back.
struct Case {
    label: &'static str,
    method: Method,
    path: String,
    body: Option<String>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(
    label: &'static str,
    method: Method,
    path: String,
    body: impl Into<Option<String>>,
    status: u16,
    field: Option<&'static str>,
) -> Case {
    let code = match status {
        413 => "payload_too_large",
        _ => "validation_failed",
    };
    Case {
        label,
        method,
        path,
        body: body.into(),
        status,
        code,
        field,
    }
}

async fn check(app: &TestApp, token: &str, cases: Vec<Case>) {
    for c in cases {
        let reply = app
            .send(
                c.method.clone(),
                &c.path,
                Some(token),
                c.body.map(reqwest::Body::from),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(reply.status, c.status, "{}: {reply:?}", c.label);
        reply.assert_problem(c.status, c.code);
        if let Some(field) = c.field {
            let fields: Vec<&str> = reply.body["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no errors in {reply:?}", c.label))
                .iter()
                .filter_map(|e| e["field"].as_str())
                .collect();
            assert!(
                fields.contains(&field),
                "{}: {fields:?} lacks {field}",
                c.label
            );
        }
    }
}

async fn malformed_input_is_refused(app: &TestApp) {
    let alice = app.login(1).await;
    app.login(2).await;
    let group = alice.create_group("Validation", &[2]).await;
    let message = alice.say(&group, "target").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = format!("/api/v1/conversations/{group}/messages");
    let body = |v: serde_json::Value| Some(v.to_string());
    use Method as M;
    let cases = vec![
        case(
            "blank content",
            M::POST,
            send.clone(),
            body(json!({"content": "  \n "})),
            400,
            Some("content"),
        ),
        case(
            "missing content",
            M::POST,
            send.clone(),
            body(json!({})),
            400,
            Some("content"),
        ),
        case(
            "4001 chars",
            M::POST,
            send.clone(),
            body(json!({"content": "a".repeat(4001)})),
            400,
            Some("content"),
        ),
        case(
            "SYSTEM type",
            M::POST,
            send.clone(),
            body(json!({"content": "x", "message_type": "SYSTEM"})),
            400,
            Some("message_type"),
        ),
        case(
            "unknown type",
            M::POST,
            send.clone(),
            body(json!({"content": "x", "message_type": "VIDEO"})),
            400,
            Some("message_type"),
        ),
        case(
            "lower-case type",
            M::POST,
            send.clone(),
            body(json!({"content": "x", "message_type": "text"})),
            400,
            Some("message_type"),
        ),
        case(
            "IMAGE without url",
            M::POST,
            send.clone(),
            body(json!({"content": "x", "message_type": "IMAGE"})),
            400,
            Some("media_url"),
        ),
        case(
            "bad media_url",
            M::POST,
            send.clone(),
            body(json!({"content": "x", "media_url": "javascript:alert(1)"})),
            400,
            Some("media_url"),
        ),
        case(
            "metadata not an object",
            M::POST,
            send.clone(),
            body(json!({"content": "x", "media_metadata": "{}"})),
            400,
            Some("media_metadata"),
        ),
        case(
            "bad reply_to_id",
            M::POST,
            send.clone(),
            body(json!({"content": "x", "reply_to_id": "nope"})),
            400,
            Some("reply_to_id"),
        ),
        case(
            "unknown reply_to_id",
            M::POST,
            send.clone(),
            body(json!({"content": "x", "reply_to_id": uuid::Uuid::new_v4().to_string()})),
            400,
            Some("reply_to_id"),
        ),
        case(
            "bad client_message_id",
            M::POST,
            send.clone(),
            body(json!({"content": "x", "client_message_id": ""})),
            400,
            Some("client_message_id"),
        ),
        case(
            "content is a number",
            M::POST,
            send.clone(),
            body(json!({"content": 5})),
            400,
            Some("body"),
        ),
        case(
            "body is an array",
            M::POST,
            send.clone(),
            body(json!(["content"])),
            400,
            Some("body"),
        ),
        case(
            "malformed JSON",
            M::POST,
            send.clone(),
            Some("{\"content\": ".to_owned()),
            400,
            Some("body"),
        ),
        case(
            "empty body",
            M::POST,
            send.clone(),
            Some(String::new()),
            400,
            Some("body"),
        ),
        case(
            "over 64 KiB",
            M::POST,
            send.clone(),
            body(json!({"content": "a".repeat(70 * 1024)})),
            413,
            None,
        ),
        case(
            "edit blank",
            M::PATCH,
            format!("/api/v1/messages/{message}"),
            body(json!({"content": ""})),
            400,
            Some("content"),
        ),
        case(
            "bad emoji",
            M::PUT,
            format!("/api/v1/messages/{message}/reactions/a"),
            None,
            400,
            Some("emoji"),
        ),
        case(
            "two emoji",
            M::PUT,
            format!("/api/v1/messages/{message}/reactions/%F0%9F%91%8D%F0%9F%91%8D"),
            None,
            400,
            Some("emoji"),
        ),
        case(
            "bad conversation uuid",
            M::GET,
            "/api/v1/conversations/not-a-uuid".to_owned(),
            None,
            400,
            Some("conversation_id"),
        ),
        case(
            "bad message uuid",
            M::GET,
            "/api/v1/messages/123".to_owned(),
            None,
            400,
            Some("message_id"),
        ),
        case(
            "bad user id in path",
            M::DELETE,
            format!("/api/v1/conversations/{group}/participants/bob"),
            None,
            400,
            Some("user_id"),
        ),
        case(
            "limit 0",
            M::GET,
            "/api/v1/conversations?limit=0".to_owned(),
            None,
            400,
            Some("limit"),
        ),
        case(
            "limit 101",
            M::GET,
            format!("{send}?limit=101"),
            None,
            400,
            Some("limit"),
        ),
        case(
            "limit not a number",
            M::GET,
            "/api/v1/conversations?limit=ten".to_owned(),
            None,
            400,
            Some("query"),
        ),
        case(
            "bad cursor",
            M::GET,
            "/api/v1/conversations?cursor=bm9wZQ".to_owned(),
            None,
            400,
            Some("cursor"),
        ),
        case(
            "bad archived",
            M::GET,
            "/api/v1/conversations?archived=maybe".to_owned(),
            None,
            400,
            Some("archived"),
        ),
        case(
            "before and after",
            M::GET,
            format!("{send}?before_seq=5&after_seq=1"),
            None,
            400,
            Some("after_seq"),
        ),
        case(
            "negative seq",
            M::GET,
            format!("{send}?before_seq=-1"),
            None,
            400,
            Some("before_seq"),
        ),
        case(
            "DIRECT via create",
            M::POST,
            "/api/v1/conversations".to_owned(),
            body(json!({"type": "DIRECT", "participant_ids": [2]})),
            400,
            Some("type"),
        ),
        case(
            "unknown conversation type",
            M::POST,
            "/api/v1/conversations".to_owned(),
            body(json!({"type": "CHANNEL", "name": "x"})),
            400,
            Some("type"),
        ),
        case(
            "GROUP without name",
            M::POST,
            "/api/v1/conversations".to_owned(),
            body(json!({"type": "GROUP"})),
            400,
            Some("name"),
        ),
        case(
            "blank group name",
            M::POST,
            "/api/v1/conversations".to_owned(),
            body(json!({"type": "GROUP", "name": "   "})),
            400,
            Some("name"),
        ),
        case(
            "POST_LINKED without posting",
            M::POST,
            "/api/v1/conversations".to_owned(),
            body(json!({"type": "POST_LINKED", "name": "x"})),
            400,
            Some("posting_id"),
        ),
        case(
            "unknown participant",
            M::POST,
            "/api/v1/conversations".to_owned(),
            body(json!({"type": "GROUP", "name": "x", "participant_ids": [77]})),
            400,
            Some("participant_ids"),
        ),
        case(
            "participant id zero",
            M::POST,
            "/api/v1/conversations".to_owned(),
            body(json!({"type": "GROUP", "name": "x", "participant_ids": [0]})),
            400,
            Some("participant_ids"),
        ),
        case(
            "participant id string",
            M::POST,
            "/api/v1/conversations".to_owned(),
            body(json!({"type": "GROUP", "name": "x", "participant_ids": ["2"]})),
            400,
            Some("body"),
        ),
        case(
            "direct user_id missing",
            M::POST,
            "/api/v1/conversations/direct".to_owned(),
            body(json!({})),
            400,
            Some("user_id"),
        ),
        case(
            "direct user_id float",
            M::POST,
            "/api/v1/conversations/direct".to_owned(),
            body(json!({"user_id": 1.5})),
            400,
            Some("body"),
        ),
        case(
            "unknown role",
            M::PATCH,
            format!("/api/v1/conversations/{group}/participants/2"),
            body(json!({"role": "OWNER"})),
            400,
            Some("role"),
        ),
        case(
            "is_muted missing",
            M::PATCH,
            format!("/api/v1/conversations/{group}/membership"),
            body(json!({})),
            400,
            Some("is_muted"),
        ),
        case(
            "is_muted string",
            M::PATCH,
            format!("/api/v1/conversations/{group}/membership"),
            body(json!({"is_muted": "yes"})),
            400,
            Some("body"),
        ),
        case(
            "empty user_ids",
            M::POST,
            format!("/api/v1/conversations/{group}/participants"),
            body(json!({"user_ids": []})),
            400,
            Some("user_ids"),
        ),
        case(
            "bad up_to_message_id",
            M::POST,
            format!("/api/v1/conversations/{group}/read"),
            body(json!({"up_to_message_id": "x"})),
            400,
            Some("up_to_message_id"),
        ),
        case(
            "read malformed JSON",
            M::POST,
            format!("/api/v1/conversations/{group}/read"),
            Some("{".to_owned()),
            400,
            Some("body"),
        ),
        case(
            "read over 64 KiB",
            M::POST,
            format!("/api/v1/conversations/{group}/read"),
            Some(" ".repeat(70 * 1024)),
            413,
            None,
        ),
        case(
            "rename too long",
            M::PATCH,
            format!("/api/v1/conversations/{group}"),
            body(json!({"name": "n".repeat(201)})),
            400,
            Some("name"),
        ),
    ];
    check(app, alice.token.as_deref().unwrap(), cases).await;
}
