//! The browser client served at `/` (with its security headers) and the development token
//! endpoint it signs in with, which exists only when the server is built for `--dev`.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, Options, spawn_app, spawn_with};

const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'";

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let app = spawn_app().await;
    let cases = [
        ("/", "text/html; charset=utf-8", "<!doctype html>"),
        ("/web/app.js", "text/javascript; charset=utf-8", "import"),
        ("/web/api.js", "text/javascript; charset=utf-8", "export"),
        ("/web/live.js", "text/javascript; charset=utf-8", "export"),
        ("/web/dom.js", "text/javascript; charset=utf-8", "export"),
        ("/web/app.css", "text/css; charset=utf-8", "{"),
        ("/web/icon.svg", "image/svg+xml", "<svg"),
    ];
    for (path, content_type, start) in cases {
        let reply = app.send(Method::GET, path, None, None, &[]).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
        assert_eq!(reply.header("content-security-policy"), Some(CSP), "{path}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        let text = reply.body.as_str().expect("a text body");
        assert!(text.contains(start), "{path}: {text:.80}");
        assert!(!text.contains("innerHTML"), "{path} renders text as HTML");
    }
    let page = app.send(Method::GET, "/", None, None, &[]).await;
    let html = page.body.as_str().expect("html");
    assert!(!html.contains("<script>"), "no inline script");
    assert!(!html.contains("style="), "no inline style");
    app.send(Method::GET, "/web/missing.js", None, None, &[])
        .await
        .assert_problem(404, "not_found");
    app.finish().await;
}

#[tokio::test]
async fn the_dev_token_endpoint_does_not_exist_outside_dev_mode() {
    let app = spawn_app().await;
    let body = json!({"user_id": 1, "name": "Alice"}).to_string();
    app.send(
        Method::POST,
        "/api/v1/dev/token",
        None,
        Some(body.into()),
        &[("content-type", "application/json")],
    )
    .await
    .assert_problem(404, "not_found");
    app.finish().await;
}

#[tokio::test]
async fn in_dev_mode_the_page_mints_a_token_that_the_api_accepts() {
    let app = spawn_with(
        Backend::Memory,
        Options {
            dev_tokens: true,
            ..Options::default()
        },
    )
    .await
    .expect("memory backend starts");
    let body = json!({"user_id": 7, "name": "Grace"}).to_string();
    let reply = app
        .send(
            Method::POST,
            "/api/v1/dev/token",
            None,
            Some(body.into()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["user_id"], 7);
    let token = reply.body["token"].as_str().expect("a token").to_owned();
    let unread = app
        .send(Method::GET, "/api/v1/unread", Some(&token), None, &[])
        .await;
    assert_eq!(unread.status, 200, "{unread:?}");
    let bad = json!({"user_id": 0}).to_string();
    app.send(
        Method::POST,
        "/api/v1/dev/token",
        None,
        Some(bad.into()),
        &[("content-type", "application/json")],
    )
    .await
    .assert_problem(400, "validation_failed");
    app.finish().await;
}
