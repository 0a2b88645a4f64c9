//! `GET /api/v1/sync`: paging with `has_more`, the bounds of `limit`, malformed and
//! foreign tokens, entitlement over membership time, deleted content, real emoji.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{Client, TestApp, on_every_backend, pct};

on_every_backend!(
    sync_pages_in_order_with_has_more,
    sync_refuses_bad_limits_and_tokens,
    sync_follows_membership_over_time,
    sync_never_serves_deleted_content_and_keeps_emoji,
);

/// The token a first sync (without `since`) answers, after checking its shape.
async fn fresh_token(client: &Client<'_>) -> String {
    let reply = client.get("/api/v1/sync").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["events"], json!([]));
    assert_eq!(reply.body["has_more"], false);
    let next = reply.body["next"].as_str().expect("next").to_owned();
    let parts: Vec<&str> = next.split('.').collect();
    assert!(
        parts.len() == 3
            && parts[0] == "v1"
            && parts[1].len() == 32
            && parts[1]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && parts[2].parse::<u64>().is_ok(),
        "{next}"
    );
    next
}

/// Every event since `since` in pages of `limit`: the events, the pages' sizes and the
/// last `next`.
async fn sync_all(
    client: &Client<'_>,
    since: &str,
    limit: u32,
) -> (Vec<Value>, Vec<usize>, String) {
    let mut events = Vec::new();
    let mut sizes = Vec::new();
    let mut since = since.to_owned();
    loop {
        let reply = client
            .get(&format!("/api/v1/sync?since={since}&limit={limit}"))
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let page = reply.body["events"].as_array().expect("events");
        sizes.push(page.len());
        events.extend(page.iter().cloned());
        since = reply.body["next"].as_str().expect("next").to_owned();
        if reply.body["has_more"] == false {
            return (events, sizes, since);
        }
        assert_eq!(reply.body["has_more"], true);
    }
}

fn positions(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["pos"].as_u64().expect("every event has a pos"))
        .collect()
}

/// The contents of the user messages (not announcements) created in `conversation`.
fn said_in(events: &[Value], conversation: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            e["type"] == "message.created"
                && e["message"]["conversation_id"] == conversation
                && e["message"]["is_system_message"] == false
        })
        .map(|e| {
            e["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

async fn sync_pages_in_order_with_has_more(app: &TestApp) {
    let alice = app.login(1).await;
    let bob = app.login(2).await;
    let since = fresh_token(&bob).await;
    let group = alice.create_group("Sync", &[2]).await;
    let said: Vec<String> = (0..7).map(|i| format!("message {i} 🚆")).collect();
    let mut sent = Vec::new();
    for text in &said {
        sent.push(alice.say(&group, text).await);
    }

    let (paged, sizes, next) = sync_all(&bob, &since, 2).await;
    assert!(sizes.iter().all(|&n| n <= 2), "{sizes:?}");
    assert!(sizes.len() > 3, "pages of two: {sizes:?}");
    let pos = positions(&paged);
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    assert_eq!(said_in(&paged, &group), said);
    assert!(paged.iter().any(|e| e["type"] == "conversation.created"
        && e["conversation"]["id"] == group
        && e["conversation"]["name"] == "Sync"));
    // Each message.created is the message as the API shows it.
    for message in &sent {
        let event = paged
            .iter()
            .find(|e| e["type"] == "message.created" && e["message"]["id"] == message["id"])
            .expect("the message's event");
        assert_eq!(&event["message"], message);
    }

    // One large page is the same list; from the end, nothing more.
    let (whole, sizes, whole_next) = sync_all(&bob, &since, 500).await;
    assert_eq!((whole, sizes.len()), (paged, 1));
    assert_eq!(whole_next, next);
    let reply = bob.get(&format!("/api/v1/sync?since={next}")).await;
    assert_eq!(
        (
            reply.status,
            &reply.body["events"],
            &reply.body["has_more"],
            &reply.body["next"]
        ),
        (200, &json!([]), &json!(false), &json!(next))
    );
    // A token from the middle resumes right after it.
    let middle = pos[pos.len() / 2];
    let token = format!("{}.{middle}", next.rsplit_once('.').unwrap().0);
    let (tail, _, _) = sync_all(&bob, &token, 100).await;
    assert_eq!(positions(&tail), pos[pos.len() / 2 + 1..].to_vec());
}

async fn sync_refuses_bad_limits_and_tokens(app: &TestApp) {
    let alice = app.login(1).await;
    let since = fresh_token(&alice).await;
    for limit in ["0", "501", "-1", "abc", "1.5", ""] {
        let reply = alice.get(&format!("/api/v1/sync?limit={limit}")).await;
        reply.assert_problem(400, "validation_failed");
    }
    for limit in ["1", "500"] {
        let reply = alice
            .get(&format!("/api/v1/sync?since={since}&limit={limit}"))
            .await;
        assert_eq!(reply.status, 200, "limit {limit}: {reply:?}");
    }
    let (feed, pos) = since.rsplit_once('.').unwrap();
    let upper = format!("{}.{pos}", feed.to_uppercase().replacen("V1", "v1", 1));
    for token in [
        "garbage".to_owned(),
        String::new(),
        format!("{feed}.0{pos}"),
        format!("{feed}.-1"),
        format!("{since}.1"),
        upper,
        pct("v1.🚆.1"),
    ] {
        let reply = alice.get(&format!("/api/v1/sync?since={token}")).await;
        reply.assert_problem(400, "validation_failed");
        assert_eq!(reply.body["errors"][0]["field"], "since", "{token}");
    }
    // Both at once: every refused field is reported.
    let reply = alice.get("/api/v1/sync?since=x&limit=0").await;
    reply.assert_problem(400, "validation_failed");
    let fields: BTreeSet<&str> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, BTreeSet::from(["limit", "since"]));

    // Another feed (another deployment's database), or a position it never reached.
    let foreign = format!("v1.{}.{pos}", "0123456789abcdef".repeat(2));
    let ahead = format!("{feed}.{}", pos.parse::<u64>().unwrap() + 1_000_000);
    for token in [foreign, ahead] {
        let reply = alice.get(&format!("/api/v1/sync?since={token}")).await;
        reply.assert_problem(410, "sync_token_expired");
    }
    app.raw(None)
        .get("/api/v1/sync")
        .await
        .assert_problem(401, "unauthorized");
}

async fn sync_follows_membership_over_time(app: &TestApp) {
    let alice = app.login(1).await;
    let bob = app.login(2).await;
    let carol = app.login(3).await;
    let bob_since = fresh_token(&bob).await;
    let group = alice.create_group("Membership", &[2]).await;
    alice.say(&group, "before carol").await;
    let carol_since = fresh_token(&carol).await;
    let reply = alice
        .post(
            &format!("/api/v1/conversations/{group}/participants"),
            json!({"user_ids": [3]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    alice.say(&group, "with carol").await;
    let reply = alice
        .delete(&format!("/api/v1/conversations/{group}/participants/2"))
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    alice.say(&group, "after bob").await;
    let reply = alice
        .patch(
            &format!("/api/v1/conversations/{group}"),
            json!({"name": "Renamed"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // Bob: from the creation to his own removal, both included, nothing after.
    let (seen, _, _) = sync_all(&bob, &bob_since, 3).await;
    assert_eq!(said_in(&seen, &group), ["before carol", "with carol"]);
    let last = seen
        .iter()
        .rev()
        .find(|e| {
            e["conversation_id"] == group
                || e["message"]["conversation_id"] == group
                || e["conversation"]["id"] == group
        })
        .expect("bob saw the group");
    assert_eq!(
        (&last["type"], &last["user_id"]),
        (&json!("participant.removed"), &json!(2)),
        "bob's last event of the group is his removal: {seen:#?}"
    );
    assert!(!seen.iter().any(|e| e["type"] == "conversation.updated"));
    assert!(seen.iter().any(|e| e["type"] == "conversation.created"));

    // Carol: from the change that added her, nothing before.
    let (seen, _, _) = sync_all(&carol, &carol_since, 3).await;
    assert_eq!(said_in(&seen, &group), ["with carol", "after bob"]);
    assert_eq!(
        (&seen[0]["type"], &seen[0]["user_id"]),
        (&json!("participant.added"), &json!(3)),
        "{seen:#?}"
    );
    assert!(!seen.iter().any(|e| e["type"] == "conversation.created"));
    assert!(
        seen.iter()
            .any(|e| e["type"] == "participant.removed" && e["user_id"] == 2)
    );
    let renamed = seen
        .iter()
        .find(|e| e["type"] == "conversation.updated")
        .expect("carol saw the rename");
    assert_eq!(renamed["conversation"]["name"], "Renamed");

    // Someone who never was a member sees nothing of it.
    let dave = app.login(4).await;
    let dave_since = fresh_token(&dave).await;
    alice.say(&group, "not for dave").await;
    let (seen, _, _) = sync_all(&dave, &dave_since, 100).await;
    assert_eq!(seen, Vec::<Value>::new());
}

async fn sync_never_serves_deleted_content_and_keeps_emoji(app: &TestApp) {
    let alice = app.login(1).await;
    let bob = app.login(2).await;
    let group = alice.create_group("Deletes", &[2]).await;
    let since = fresh_token(&bob).await;
    let secret = alice.say(&group, "secret 🤫 never to be served").await;
    let secret_id = secret["id"].as_str().unwrap();
    let reply = alice
        .patch(
            &format!("/api/v1/messages/{secret_id}"),
            json!({"content": "edited secret 🤐"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let kept = alice.say(&group, "Grüße 👋🏽 — こんにちは 👨‍👩‍👧‍👦").await;
    let kept_id = kept["id"].as_str().unwrap();
    for emoji in ["👍🏽", "👨‍👩‍👧‍👦", "❤️"] {
        let reply = bob
            .put(&format!(
                "/api/v1/messages/{kept_id}/reactions/{}",
                pct(emoji)
            ))
            .await;
        assert_eq!(reply.status, 200, "{emoji}: {reply:?}");
    }
    let reply = bob
        .delete(&format!(
            "/api/v1/messages/{kept_id}/reactions/{}",
            pct("❤️")
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = alice.delete(&format!("/api/v1/messages/{secret_id}")).await;
    assert_eq!(reply.status, 204, "{reply:?}");

    let reply = bob
        .get(&format!("/api/v1/sync?since={since}&limit=500"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let text = reply.body.to_string();
    assert!(!text.contains("secret"), "deleted content served: {text}");
    let events = reply.body["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["type"] == "message.deleted"
        && e["message_id"] == secret_id
        && e["seq"] == secret["seq"]));
    assert!(!events.iter().any(|e| e["message"]["id"] == secret_id));
    assert_eq!(said_in(events, &group), ["Grüße 👋🏽 — こんにちは 👨‍👩‍👧‍👦"]);
    let reactions: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("reaction."))
        })
        .map(|e| {
            assert_eq!(
                (&e["message_id"], &e["user_id"]),
                (&json!(kept_id), &json!(2))
            );
            (e["type"].as_str().unwrap(), e["emoji"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        reactions,
        [
            ("reaction.added", "👍🏽"),
            ("reaction.added", "👨‍👩‍👧‍👦"),
            ("reaction.added", "❤️"),
            ("reaction.removed", "❤️"),
        ]
    );
}
