//! Operational routes, request ids, fallbacks (404/405/413/429/503) and the OpenAPI
//! document.

use std::num::NonZeroU32;
use std::sync::Arc;

use chat_service::Limits;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, NeverReady, Options, spawn_app, spawn_with};

#[tokio::test]
async fn health_ready_and_request_ids() {
    let app = spawn_app().await;
    let reply = app.send(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!((reply.status, &reply.body), (200, &json!({"status": "ok"})));
    let generated = reply
        .header("x-request-id")
        .expect("generated id")
        .to_owned();
    assert_eq!(uuid::Uuid::parse_str(&generated).map(|_| ()), Ok(()));
    let reply = app
        .send(
            Method::GET,
            "/readyz",
            None,
            None,
            &[("x-request-id", "abc-123")],
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), Some("abc-123"));
    app.finish().await;
}

#[tokio::test]
async fn sqlite_readiness_pings_and_metrics_show_its_connections() {
    let app = spawn_with(Backend::Sqlite, Options::default())
        .await
        .unwrap();
    let reply = app.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let alice = app.login(1).await;
    let group = alice.create_group("Stored", &[]).await;
    alice.say(&group, "on disk").await;
    let reply = app.send(Method::GET, "/metrics", None, None, &[]).await;
    let text = reply.body.as_str().unwrap();
    // The readers and the one writer connection.
    assert!(
        text.contains(r#"chat_db_pool_connections{state="max"} 5"#),
        "{text}"
    );
    assert!(text.contains("chat_messages_sent_total 1"), "{text}");
    app.finish().await;
}

#[tokio::test]
async fn readiness_failure_is_503_with_retry_after() {
    let app = spawn_with(
        Backend::Memory,
        Options {
            readiness: Some(Arc::new(NeverReady)),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let reply = app.send(Method::GET, "/readyz", None, None, &[]).await;
    reply.assert_problem(503, "unavailable");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(
        app.send(Method::GET, "/healthz", None, None, &[])
            .await
            .status,
        200
    );
    app.finish().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let token = app.token(1);
    app.send(Method::GET, "/nope", None, None, &[])
        .await
        .assert_problem(404, "not_found");
    app.send(Method::GET, "/api/v1/nope", Some(&token), None, &[])
        .await
        .assert_problem(404, "not_found");
    app.send(
        Method::PUT,
        "/api/v1/conversations",
        Some(&token),
        None,
        &[],
    )
    .await
    .assert_problem(405, "method_not_allowed");
    app.send(Method::POST, "/api/v1/unread", Some(&token), None, &[])
        .await
        .assert_problem(405, "method_not_allowed");
    app.finish().await;
}

#[tokio::test]
async fn sending_too_fast_is_429_with_retry_after() {
    let app = spawn_with(
        Backend::Memory,
        Options {
            limits: Some(Limits {
                sends_per_second: NonZeroU32::MIN,
                send_burst: NonZeroU32::new(2).unwrap(),
                ..Limits::default()
            }),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let alice = app.login(1).await;
    let group = alice.create_group("Fast", &[]).await;
    let path = format!("/api/v1/conversations/{group}/messages");
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..4 {
        let reply = alice.post(&path, json!({"content": format!("m{i}")})).await;
        statuses.push(reply.status);
        if reply.status == 429 {
            limited = Some(reply);
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    limited.assert_problem(429, "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    app.finish().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern() {
    let app = spawn_app().await;
    let alice = app.login(1).await;
    let group = alice.create_group("Metered", &[]).await;
    alice.say(&group, "hello").await;
    alice.get(&format!("/api/v1/conversations/{group}")).await;
    let reply = app.send(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(reply.status, 200);
    let text = reply.body.as_str().unwrap();
    for needle in [
        r#"http_requests_total{method="GET",route="/api/v1/conversations/{id}",status="200"} 1"#,
        r#"http_requests_total{method="POST",route="/api/v1/conversations",status="201"} 1"#,
        "http_request_duration_seconds_bucket",
        "chat_messages_sent_total 1",
        "chat_websockets_open 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!text.contains(&group), "ids must not become labels");
    app.finish().await;
}

/// Sends one request with a raw TCP write (reqwest would refuse some methods) and reads
/// the answer to its end.
async fn raw_request(address: &str, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The label sets of `http_requests_total`, without their values.
async fn request_series(app: &crate::helpers::TestApp) -> std::collections::BTreeSet<String> {
    let reply = app.send(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(reply.status, 200);
    reply
        .body
        .as_str()
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .map(|line| line.rsplit_once(' ').unwrap().0.to_owned())
        .collect()
}

#[tokio::test]
async fn rule_invented_methods_and_paths_do_not_grow_metrics() {
    let app = spawn_app().await;
    let flood = |round: usize| {
        let address = app.address.clone();
        async move {
            for i in 0..15 {
                let answer = raw_request(&address, &format!("AAAA{round}x{i}"), "/").await;
                assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
                let answer =
                    raw_request(&address, "GET", &format!("/made/up/{round}/{i}?q={i}")).await;
                assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
                let answer = raw_request(&address, &format!("Z{round}{i}"), "/healthz").await;
                assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
            }
        }
    };
    flood(1).await;
    // The first scrape is counted after it answers: scrape twice so `/metrics` is in the set.
    request_series(&app).await;
    let before = request_series(&app).await;
    flood(2).await;
    let after = request_series(&app).await;
    assert_eq!(before, after, "new series appeared");
    let text = after.iter().cloned().collect::<Vec<_>>().join("\n");
    assert!(
        !text.contains("AAAA") && !text.contains("made/up"),
        "{text}"
    );
    assert!(text.contains(r#"method="OTHER""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    app.finish().await;
}

/// Every route of the contract, as `(method, path)` in OpenAPI spelling.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/conversations"),
    ("post", "/api/v1/conversations/direct"),
    ("get", "/api/v1/conversations"),
    ("get", "/api/v1/conversations/{id}"),
    ("patch", "/api/v1/conversations/{id}"),
    ("post", "/api/v1/conversations/{id}/participants"),
    (
        "delete",
        "/api/v1/conversations/{id}/participants/{user_id}",
    ),
    ("patch", "/api/v1/conversations/{id}/participants/{user_id}"),
    ("patch", "/api/v1/conversations/{id}/membership"),
    ("post", "/api/v1/conversations/{id}/read"),
    ("get", "/api/v1/conversations/{id}/messages"),
    ("post", "/api/v1/conversations/{id}/messages"),
    ("get", "/api/v1/messages/{id}"),
    ("patch", "/api/v1/messages/{id}"),
    ("delete", "/api/v1/messages/{id}"),
    ("put", "/api/v1/messages/{id}/reactions/{emoji}"),
    ("delete", "/api/v1/messages/{id}/reactions/{emoji}"),
    ("get", "/api/v1/messages/{id}/receipts"),
    ("get", "/api/v1/unread"),
    ("get", "/api/v1/sync"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/ws"),
];

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = spawn_app().await;
    let reply = app
        .send(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await;
    assert_eq!(reply.status, 200);
    let doc = reply.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut described = 0;
    for (method, path) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not in the OpenAPI document"
        );
        described += 1;
    }
    let total: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert_eq!(
        total, described,
        "the document has routes the test does not know"
    );
    assert!(doc["components"]["schemas"]["ConversationOut"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    app.finish().await;
}

#[tokio::test]
async fn every_documented_route_is_served() {
    // The other half of the OpenAPI test: each documented route answers something other
    // than the unknown-route 404 or 405.
    let app = spawn_app().await;
    let token = app.token(1);
    for (method, path) in ROUTES {
        if *path == "/api/v1/ws" {
            // It answers only a WebSocket handshake; the WebSocket tests (tests/ws.rs)
            // open it.
            continue;
        }
        let concrete = path
            .replace("{id}", "0191b5a2-0000-7000-8000-000000000000")
            .replace("{user_id}", "1")
            .replace("{emoji}", "%F0%9F%91%8D");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let reply = app
            .send(
                method.clone(),
                &concrete,
                Some(&token),
                Some("{}".into()),
                &[],
            )
            .await;
        assert_ne!(reply.status, 405, "{method} {path}: {reply:?}");
        if reply.status == 404 {
            assert_ne!(
                reply.body["detail"], "No route matches this path.",
                "{method} {path} is not routed"
            );
        }
    }
    app.finish().await;
}
