//! The authorization matrix: every id-taking route as a non-participant is 404 (the
//! conversation does not exist for them), and admin actions as a member are 403.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, on_every_backend};

on_every_backend!(
    non_participants_get_404_everywhere,
    members_get_403_on_admin_actions
);

struct Fixture {
    conversation: String,
    message: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let alice = app.login(1).await;
    app.login(2).await;
    app.login(3).await;
    let conversation = alice.create_group("Private", &[2]).await;
    let message = alice.say(&conversation, "secret").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Fixture {
        conversation,
        message,
    }
}

/// Every id-taking route, with a body that would be valid for a participant.
fn id_routes(f: &Fixture) -> Vec<(Method, String, Option<Value>)> {
    let c = &f.conversation;
    let m = &f.message;
    vec![
        (Method::GET, format!("/api/v1/conversations/{c}"), None),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{c}"),
            Some(json!({"name": "x"})),
        ),
        (
            Method::POST,
            format!("/api/v1/conversations/{c}/participants"),
            Some(json!({"user_ids": [3]})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/conversations/{c}/participants/2"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/conversations/{c}/participants/3"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{c}/participants/2"),
            Some(json!({"role": "ADMIN"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{c}/membership"),
            Some(json!({"is_muted": true})),
        ),
        (
            Method::POST,
            format!("/api/v1/conversations/{c}/read"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/api/v1/conversations/{c}/messages"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/conversations/{c}/messages"),
            Some(json!({"content": "hi"})),
        ),
        (Method::GET, format!("/api/v1/messages/{m}"), None),
        (
            Method::PATCH,
            format!("/api/v1/messages/{m}"),
            Some(json!({"content": "x"})),
        ),
        (Method::DELETE, format!("/api/v1/messages/{m}"), None),
        (
            Method::PUT,
            format!("/api/v1/messages/{m}/reactions/%F0%9F%91%8D"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/messages/{m}/reactions/%F0%9F%91%8D"),
            None,
        ),
        (Method::GET, format!("/api/v1/messages/{m}/receipts"), None),
    ]
}

async fn non_participants_get_404_everywhere(app: &TestApp) {
    let f = fixture(app).await;
    let carol = app.login(3).await;
    for (method, path, body) in id_routes(&f) {
        let reply = carol.request(method.clone(), &path, body.clone()).await;
        assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
        reply.assert_problem(404, "not_found");
    }
    // Ids that exist nowhere answer the same.
    let unknown = Fixture {
        conversation: uuid::Uuid::new_v4().to_string(),
        message: uuid::Uuid::new_v4().to_string(),
    };
    let alice = app.login(1).await;
    for (method, path, body) in id_routes(&unknown) {
        let reply = alice.request(method.clone(), &path, body).await;
        assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
    }
    // And the participants still see their conversation unchanged.
    let reply = alice
        .get(&format!("/api/v1/conversations/{}", f.conversation))
        .await;
    assert_eq!(reply.body["name"], "Private");
    assert_eq!(reply.body["participants"].as_array().unwrap().len(), 2);
}

async fn members_get_403_on_admin_actions(app: &TestApp) {
    let f = fixture(app).await;
    let bob = app.login(2).await;
    let c = &f.conversation;
    let m = &f.message;
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PATCH,
            format!("/api/v1/conversations/{c}"),
            Some(json!({"name": "mine now"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{c}"),
            Some(json!({"is_archived": true})),
        ),
        (
            Method::POST,
            format!("/api/v1/conversations/{c}/participants"),
            Some(json!({"user_ids": [3]})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/conversations/{c}/participants/1"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{c}/participants/1"),
            Some(json!({"role": "MEMBER"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{c}/participants/2"),
            Some(json!({"role": "ADMIN"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/messages/{m}"),
            Some(json!({"content": "not mine"})),
        ),
        (Method::DELETE, format!("/api/v1/messages/{m}"), None),
    ];
    for (method, path, body) in cases {
        let reply = bob.request(method.clone(), &path, body).await;
        assert_eq!(reply.status, 403, "{method} {path}: {reply:?}");
        reply.assert_problem(403, "forbidden");
    }
    // In a DIRECT conversation nobody renames or leaves.
    let alice = app.login(1).await;
    let direct = alice
        .post("/api/v1/conversations/direct", json!({"user_id": 2}))
        .await;
    let d = direct.body["id"].as_str().unwrap();
    alice
        .patch(&format!("/api/v1/conversations/{d}"), json!({"name": "x"}))
        .await
        .assert_problem(403, "forbidden");
    alice
        .delete(&format!("/api/v1/conversations/{d}/participants/1"))
        .await
        .assert_problem(403, "forbidden");
}
