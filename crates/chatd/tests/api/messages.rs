//! Messages: sending (idempotent), unicode, media, history paging, editing, deleting and
//! reactions with real emoji.

use serde_json::json;

use crate::helpers::{TestApp, on_every_backend, pct};

on_every_backend!(
    send_show_edit_delete,
    repeated_client_message_id_returns_the_original,
    history_pages_by_seq,
    reactions_with_real_emoji,
);

async fn send_show_edit_delete(app: &TestApp) {
    let alice = app.login(1).await;
    let bob = app.login(2).await;
    let group = alice.create_group("Messages", &[2]).await;
    let content = "Grüße 👋🏽 — こんにちは 👨‍👩‍👧‍👦 \u{1F1EB}\u{1F1F7}";
    let reply = alice
        .post(
            &format!("/api/v1/conversations/{group}/messages"),
            json!({
                "content": content,
                "message_type": "IMAGE",
                "media_url": "https://cdn.example.com/cat.png",
                "media_metadata": {"width": 640, "height": 480, "alt": "🐈"},
            }),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let m = reply.body.clone();
    assert_eq!(m["content"], content);
    assert_eq!(m["message_type"], "IMAGE");
    assert_eq!(
        m["media_metadata"],
        json!({"width": 640, "height": 480, "alt": "🐈"})
    );
    assert_eq!(m["conversation_id"], group);
    assert_eq!(m["sender_id"], 1);
    assert_eq!(m["sender_name"], "User 1");
    assert_eq!(m["seq"], 2, "the creation record is seq 1");
    assert_eq!(m["is_system_message"], false);
    assert_eq!(m["edited_at"], serde_json::Value::Null);
    assert_eq!(m["reactions"], json!([]));
    let id = m["id"].as_str().unwrap();

    let reply = bob.get(&format!("/api/v1/messages/{id}")).await;
    assert_eq!(
        (reply.status, &reply.body["content"]),
        (200, &json!(content))
    );

    let reply = bob
        .post(
            &format!("/api/v1/conversations/{group}/messages"),
            json!({"content": "a reply", "reply_to_id": id}),
        )
        .await;
    assert_eq!(
        (reply.status, &reply.body["reply_to_id"]),
        (201, &json!(id))
    );

    let reply = alice
        .patch(
            &format!("/api/v1/messages/{id}"),
            json!({"content": "edited ✏️"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["content"], "edited ✏️");
    assert!(reply.body["edited_at"].is_string());

    let reply = alice.delete(&format!("/api/v1/messages/{id}")).await;
    assert_eq!(reply.status, 204);
    bob.get(&format!("/api/v1/messages/{id}"))
        .await
        .assert_problem(404, "not_found");
    alice
        .delete(&format!("/api/v1/messages/{id}"))
        .await
        .assert_problem(404, "not_found");
}

async fn repeated_client_message_id_returns_the_original(app: &TestApp) {
    let alice = app.login(1).await;
    let group = alice.create_group("Idempotent", &[]).await;
    let path = format!("/api/v1/conversations/{group}/messages");
    let body = json!({"content": "only once", "client_message_id": "c-42"});
    let first = alice.post(&path, body.clone()).await;
    assert_eq!(first.status, 201, "{first:?}");
    let again = alice.post(&path, body).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body, first.body);
    assert_eq!(again.body["client_message_id"], "c-42");
    let history = alice.get(&path).await;
    let count = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["content"] == "only once")
        .count();
    assert_eq!(count, 1);
}

async fn history_pages_by_seq(app: &TestApp) {
    let alice = app.login(1).await;
    let group = alice.create_group("History", &[]).await;
    for i in 1..=5 {
        alice.say(&group, &format!("m{i}")).await;
    }
    // seq 1 is the creation record; m1..m5 are seq 2..6.
    let path = format!("/api/v1/conversations/{group}/messages");
    let seqs = |reply: &crate::helpers::Reply| -> Vec<i64> {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect()
    };
    let latest = alice.get(&format!("{path}?limit=2")).await;
    assert_eq!(latest.status, 200);
    assert_eq!(
        (seqs(&latest), &latest.body["has_more"]),
        (vec![6, 5], &json!(true))
    );
    let before = alice.get(&format!("{path}?limit=10&before_seq=3")).await;
    assert_eq!(
        (seqs(&before), &before.body["has_more"]),
        (vec![2, 1], &json!(false))
    );
    let after = alice.get(&format!("{path}?limit=2&after_seq=2")).await;
    assert_eq!(
        (seqs(&after), &after.body["has_more"]),
        (vec![3, 4], &json!(true))
    );
    let all = alice.get(&path).await;
    assert_eq!(seqs(&all), vec![6, 5, 4, 3, 2, 1]);
}

async fn reactions_with_real_emoji(app: &TestApp) {
    let alice = app.login(1).await;
    let bob = app.login(2).await;
    let group = alice.create_group("Reactions", &[2]).await;
    let message = alice.say(&group, "react to me").await;
    let id = message["id"].as_str().unwrap();
    let family = "👨‍👩‍👧‍👦";
    let thumb = "👍🏽";

    for (who, emoji) in [
        (&alice, thumb),
        (&bob, thumb),
        (&bob, family),
        (&bob, family),
    ] {
        let reply = who
            .put(&format!("/api/v1/messages/{id}/reactions/{}", pct(emoji)))
            .await;
        assert_eq!(reply.status, 200, "{emoji}: {reply:?}");
    }
    let reply = alice.get(&format!("/api/v1/messages/{id}")).await;
    assert_eq!(
        reply.body["reactions"],
        json!([
            {"emoji": thumb, "count": 2, "user_ids": [1, 2]},
            {"emoji": family, "count": 1, "user_ids": [2]},
        ])
    );
    // 👍 without the skin tone is a different reaction; removing it changes nothing.
    let reply = bob
        .delete(&format!("/api/v1/messages/{id}/reactions/{}", pct("👍")))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["reactions"].as_array().unwrap().len(), 2);
    let reply = bob
        .delete(&format!("/api/v1/messages/{id}/reactions/{}", pct(thumb)))
        .await;
    assert_eq!(
        reply.body,
        json!({"reactions": [
            {"emoji": thumb, "count": 1, "user_ids": [1]},
            {"emoji": family, "count": 1, "user_ids": [2]},
        ]})
    );
}
