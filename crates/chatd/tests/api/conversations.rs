//! Conversations: create, direct, list with cursors, show, rename, archive, participants,
//! roles, leaving, muting, reading and the unread badge.

use serde_json::json;

use crate::helpers::{TestApp, on_every_backend};

on_every_backend!(
    group_lifecycle,
    direct_is_created_once,
    inbox_pages_with_cursor,
    read_state_and_unread,
    archive_and_last_admin_conflicts,
);

async fn group_lifecycle(app: &TestApp) {
    let alice = app.login(1).await;
    let bob = app.login(2).await;
    let carol = app.login(3).await;

    let reply = alice
        .post(
            "/api/v1/conversations",
            json!({"type": "GROUP", "name": "  Team 🚀 ", "participant_ids": [2, 2, 1]}),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let c = &reply.body;
    let id = c["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(c["type"], "GROUP");
    assert_eq!(c["name"], "Team 🚀");
    assert_eq!(c["created_by"], 1);
    assert_eq!(c["is_archived"], false);
    assert_eq!(c["posting_id"], serde_json::Value::Null);
    let created_at = c["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == 24,
        "{created_at}"
    );
    let participants: Vec<(i64, &str)> = c["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["user_id"].as_i64().unwrap(), p["role"].as_str().unwrap()))
        .collect();
    assert_eq!(participants, [(1, "ADMIN"), (2, "MEMBER")]);
    assert_eq!(c["membership"]["role"], "ADMIN");
    assert_eq!(c["membership"]["unread_count"], 0);
    assert_eq!(c["last_message"]["is_system_message"], true);
    assert!(c["last_message"]["media_metadata"].is_object());

    let path = format!("/api/v1/conversations/{id}");
    let reply = bob.get(&path).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["membership"]["role"], "MEMBER");

    let reply = alice.patch(&path, json!({"name": "Renamed"})).await;
    assert_eq!(
        (reply.status, &reply.body["name"]),
        (200, &json!("Renamed"))
    );

    let reply = alice
        .post(&format!("{path}/participants"), json!({"user_ids": [3]}))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["participants"].as_array().unwrap().len(), 3);

    let reply = alice
        .patch(&format!("{path}/participants/2"), json!({"role": "ADMIN"}))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let bob_role = reply.body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == 2)
        .map(|p| p["role"].clone());
    assert_eq!(bob_role, Some(json!("ADMIN")));

    // Bob (now admin) removes Carol; Carol then sees nothing.
    let reply = bob.delete(&format!("{path}/participants/3")).await;
    assert_eq!((reply.status, &reply.body), (204, &serde_json::Value::Null));
    carol.get(&path).await.assert_problem(404, "not_found");

    // Alice leaves.
    assert_eq!(
        alice.delete(&format!("{path}/participants/1")).await.status,
        204
    );
    alice.get(&path).await.assert_problem(404, "not_found");
    let reply = bob.get(&path).await;
    assert_eq!(reply.body["participants"].as_array().unwrap().len(), 1);
}

async fn direct_is_created_once(app: &TestApp) {
    let alice = app.login(1).await;
    let bob = app.login(2).await;
    let first = alice
        .post("/api/v1/conversations/direct", json!({"user_id": 2}))
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["type"], "DIRECT");
    assert_eq!(first.body["name"], serde_json::Value::Null);
    let again = bob
        .post("/api/v1/conversations/direct", json!({"user_id": 1}))
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["id"], first.body["id"]);
    // A user nobody has seen is refused.
    alice
        .post("/api/v1/conversations/direct", json!({"user_id": 999}))
        .await
        .assert_problem(400, "validation_failed");
    // Notes to self.
    let me = alice
        .post("/api/v1/conversations/direct", json!({"user_id": 1}))
        .await;
    assert_eq!(me.status, 201, "{me:?}");
}

async fn inbox_pages_with_cursor(app: &TestApp) {
    let alice = app.login(1).await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(alice.create_group(name, &[]).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/conversations?limit=2&cursor={c}"),
            None => "/api/v1/conversations?limit=2".to_owned(),
        };
        let reply = alice.get(&path).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        for item in reply.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);

    // Archived filter.
    let archived = &ids[0];
    let reply = alice
        .patch(
            &format!("/api/v1/conversations/{archived}"),
            json!({"is_archived": true}),
        )
        .await;
    assert_eq!(
        (reply.status, &reply.body["is_archived"]),
        (200, &json!(true))
    );
    assert!(reply.body["archived_at"].is_string());
    let count = |reply: crate::helpers::Reply| reply.body["items"].as_array().unwrap().len();
    assert_eq!(count(alice.get("/api/v1/conversations").await), 2);
    assert_eq!(
        count(alice.get("/api/v1/conversations?archived=true").await),
        1
    );
    assert_eq!(
        count(alice.get("/api/v1/conversations?archived=any").await),
        3
    );
}

async fn read_state_and_unread(app: &TestApp) {
    let alice = app.login(1).await;
    let bob = app.login(2).await;
    let group = alice.create_group("Reading", &[2]).await;
    let first = alice.say(&group, "one").await;
    alice.say(&group, "two ✨").await;

    let reply = bob.get("/api/v1/unread").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["total"], 2);
    assert_eq!(
        reply.body["conversations"],
        json!([{"conversation_id": group, "unread_count": 2, "is_muted": false}])
    );

    // Mute: left out of the total but still listed.
    let reply = bob
        .patch(
            &format!("/api/v1/conversations/{group}/membership"),
            json!({"is_muted": true}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["is_muted"], true);
    assert_eq!(reply.body["role"], "MEMBER");
    assert_eq!(reply.body["unread_count"], 2);
    let reply = bob.get("/api/v1/unread").await;
    assert_eq!(reply.body["total"], 0);
    assert_eq!(reply.body["conversations"][0]["is_muted"], true);

    // Read up to the first message, then everything (no body at all).
    let reply = bob
        .post(
            &format!("/api/v1/conversations/{group}/read"),
            json!({"up_to_message_id": first["id"]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["unread_count"], 1);
    assert_eq!(reply.body["last_read_seq"], first["seq"]);
    let reply = app
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/conversations/{group}/read"),
            bob.token.as_deref(),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["unread_count"], 0);
    assert!(reply.body["last_read_at"].is_string());
    assert_eq!(
        bob.get("/api/v1/unread").await.body["conversations"],
        json!([])
    );

    // Receipts: Bob read Alice's messages.
    let reply = alice
        .get(&format!(
            "/api/v1/messages/{}/receipts",
            first["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(reply.status, 200);
    let readers: Vec<i64> = reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_i64().unwrap())
        .collect();
    assert!(readers.contains(&2), "{readers:?}");
    assert!(reply.body[0]["read_at"].is_string());
}

async fn archive_and_last_admin_conflicts(app: &TestApp) {
    let alice = app.login(1).await;
    app.login(2).await;
    let group = alice.create_group("Conflicts", &[2]).await;
    let path = format!("/api/v1/conversations/{group}");
    alice
        .patch(&format!("{path}/participants/1"), json!({"role": "MEMBER"}))
        .await
        .assert_problem(409, "last_admin");
    let message = alice.say(&group, "before archive").await;
    assert_eq!(
        alice
            .patch(&path, json!({"is_archived": true}))
            .await
            .status,
        200
    );
    alice
        .post(&format!("{path}/messages"), json!({"content": "after"}))
        .await
        .assert_problem(409, "conversation_archived");
    alice
        .post(&format!("{path}/participants"), json!({"user_ids": [2]}))
        .await
        .assert_problem(409, "conversation_archived");
    alice
        .put(&format!(
            "/api/v1/messages/{}/reactions/%F0%9F%91%8D",
            message["id"].as_str().unwrap()
        ))
        .await
        .assert_problem(409, "conversation_archived");
    let reply = alice.patch(&path, json!({"is_archived": false})).await;
    assert_eq!(reply.body["is_archived"], false);
    assert_eq!(
        alice
            .post(&format!("{path}/messages"), json!({"content": "after"}))
            .await
            .status,
        201
    );
}
