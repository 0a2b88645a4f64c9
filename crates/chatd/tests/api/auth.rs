//! Token cases: everything but a valid token is 401 with a problem document.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{Backend, Options, SECRET, now, spawn_app, spawn_with};

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// Walks every case through one request and expects 401 with a problem document.
async fn check(app: &crate::helpers::TestApp, cases: Vec<(&str, Option<String>)>) {
    for (label, header) in cases {
        let mut headers = Vec::new();
        if let Some(header) = &header {
            headers.push(("authorization", header.as_str()));
        }
        let reply = app
            .send(reqwest::Method::GET, "/api/v1/unread", None, None, &headers)
            .await;
        assert_eq!(reply.status, 401, "{label}: {reply:?}");
        reply.assert_problem(401, "unauthorized");
    }
}

#[tokio::test]
async fn invalid_tokens_are_401() {
    let app = spawn_app().await;
    let t = now();
    let bearer = |token: String| Some(format!("Bearer {token}"));
    check(
        &app,
        vec![
            ("no header", None),
            ("empty bearer", Some("Bearer ".into())),
            ("basic auth", Some("Basic dXNlcjpwdw==".into())),
            ("garbage", bearer("not.a.jwt".into())),
            (
                "wrong secret",
                bearer(sign(
                    &json!({"sub": "1", "exp": t + 600}),
                    "another-secret-entirely",
                )),
            ),
            (
                "alg none",
                bearer(unsigned(&json!({"sub": "1", "exp": t + 600}))),
            ),
            (
                "expired",
                bearer(sign(&json!({"sub": "1", "exp": t - 120}), SECRET)),
            ),
            ("no exp", bearer(sign(&json!({"sub": "1"}), SECRET))),
            (
                "not yet valid",
                bearer(sign(
                    &json!({"sub": "1", "exp": t + 600, "nbf": t + 300}),
                    SECRET,
                )),
            ),
            (
                "missing sub",
                bearer(sign(&json!({"exp": t + 600}), SECRET)),
            ),
            (
                "non-numeric sub",
                bearer(sign(&json!({"sub": "alice", "exp": t + 600}), SECRET)),
            ),
            (
                "zero sub",
                bearer(sign(&json!({"sub": "0", "exp": t + 600}), SECRET)),
            ),
            (
                "negative sub",
                bearer(sign(&json!({"sub": "-4", "exp": t + 600}), SECRET)),
            ),
            (
                "numeric sub",
                bearer(sign(&json!({"sub": 1, "exp": t + 600}), SECRET)),
            ),
            (
                "HS512 instead of the pinned HS256",
                bearer(
                    jsonwebtoken::encode(
                        &Header::new(Algorithm::HS512),
                        &json!({"sub": "1", "exp": t + 600}),
                        &EncodingKey::from_secret(SECRET.as_bytes()),
                    )
                    .unwrap(),
                ),
            ),
        ],
    )
    .await;
    // A token within the 30 s leeway is still accepted, and a valid one works.
    let fresh = sign(&json!({"sub": "1", "exp": t - 5}), SECRET);
    let reply = app.raw(Some(fresh)).get("/api/v1/unread").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    app.finish().await;
}

#[tokio::test]
async fn rule_tokens_expiring_beyond_the_clock_are_401() {
    let app = spawn_app().await;
    let bearer = |exp: Value| {
        Some(format!(
            "Bearer {}",
            sign(&json!({"sub": "1", "exp": exp}), SECRET)
        ))
    };
    check(
        &app,
        vec![
            ("exp 2^63", bearer(json!(1u64 << 63))),
            ("exp i64::MAX", bearer(json!(i64::MAX))),
            ("exp u64::MAX", bearer(json!(u64::MAX))),
            ("exp 1e300", bearer(json!(1e300))),
            ("exp year 10000", bearer(json!(253_402_300_800u64))),
        ],
    )
    .await;
    // A token within the bound is still accepted.
    let near = sign(&json!({"sub": "1", "exp": 253_402_300_799u64}), SECRET);
    let reply = app
        .send(
            reqwest::Method::GET,
            "/api/v1/unread",
            None,
            None,
            &[("authorization", &format!("Bearer {near}"))],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    app.finish().await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_with(
        Backend::Memory,
        Options {
            issuer: Some("https://id.example".into()),
            audience: Some("chat".into()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let t = now();
    let bearer = |claims: Value| Some(format!("Bearer {}", sign(&claims, SECRET)));
    check(
        &app,
        vec![
            ("no iss/aud", bearer(json!({"sub": "1", "exp": t + 600}))),
            (
                "wrong iss",
                bearer(json!({"sub": "1", "exp": t + 600, "iss": "https://evil.example", "aud": "chat"})),
            ),
            (
                "wrong aud",
                bearer(json!({"sub": "1", "exp": t + 600, "iss": "https://id.example", "aud": "other"})),
            ),
            (
                "missing aud",
                bearer(json!({"sub": "1", "exp": t + 600, "iss": "https://id.example"})),
            ),
        ],
    )
    .await;
    let good = sign(
        &json!({"sub": "1", "exp": t + 600, "iss": "https://id.example", "aud": "chat"}),
        SECRET,
    );
    assert_eq!(app.raw(Some(good)).get("/api/v1/unread").await.status, 200);
    app.finish().await;
}

#[tokio::test]
async fn jit_provisioning_uses_the_name_claim() {
    let app = spawn_app().await;
    let alice = app.login(1).await;
    let bob = app.raw(Some(crate::helpers::token_for(2, Some("Bob 🐝".into()))));
    assert_eq!(bob.get("/api/v1/unread").await.status, 200);
    let reply = alice
        .post("/api/v1/conversations/direct", json!({"user_id": 2}))
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let names: Vec<&str> = reply.body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["display_name"].as_str())
        .collect();
    assert!(names.contains(&"Bob 🐝"), "{names:?}");
    app.finish().await;
}
