//! Hardening over HTTP: every class of action has its own per-user rate limit (429 with
//! `Retry-After`), reactions are capped per message and per user (409), and one user's
//! flood does not slow another user down.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chat_service::{ActionRates, Limits, Rate};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Client, Options, Reply, pct, spawn_with};

fn n(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).unwrap()
}

/// Sends and everything else generous, so that only the rates under test bite.
fn generous() -> Limits {
    Limits {
        sends_per_second: n(100_000),
        send_burst: n(100_000),
        rates: ActionRates::uniform(Rate::per_second(n(100_000), n(100_000))),
        ..Limits::default()
    }
}

#[track_caller]
fn assert_limited(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 429, "{what}: {reply:?}");
    reply.assert_problem(429, "rate_limited");
    let retry: u64 = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .parse()
        .unwrap();
    assert!(retry >= 1, "{what}: {retry}");
}

#[track_caller]
fn assert_allowed(reply: &Reply, what: &str) {
    assert!(
        (200..300).contains(&reply.status),
        "{what} within its budget: {reply:?}"
    );
}

async fn message(client: &Client<'_>, conversation: &str, content: &str) -> String {
    client.say(conversation, content).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Each class gets a budget of one, refilled once a minute: the second request of a class
/// is 429, while every other class (tried after it) still has its own budget.
#[tokio::test]
async fn rule_every_action_class_is_rate_limited_with_retry_after() {
    let one = Rate::per_minute(n(1), n(1));
    let app = spawn_with(
        Backend::Memory,
        Options {
            limits: Some(Limits {
                rates: ActionRates::uniform(one),
                ..generous()
            }),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    for u in 2..=6 {
        app.login(u).await;
    }
    let alice = app.login(1).await;
    let bob = app.login(7).await;
    // Bob's group is the stage for the per-conversation actions (his create budget).
    let group = bob.create_group("Stage", &[1, 2]).await;
    let conv = format!("/api/v1/conversations/{group}");
    let m1 = message(&bob, &group, "one").await;
    let m2 = message(&bob, &group, "two").await;
    let thumbs = pct("👍");

    // (what, the same request twice as Bob or Alice, the body)
    type Step = (&'static str, Method, String, Option<Value>, bool);
    let steps: Vec<[Step; 2]> = vec![
        [
            (
                "create_group",
                Method::POST,
                "/api/v1/conversations".into(),
                Some(json!({"type": "GROUP", "name": "A", "participant_ids": []})),
                false,
            ),
            (
                "create_group",
                Method::POST,
                "/api/v1/conversations".into(),
                Some(json!({"type": "GROUP", "name": "B", "participant_ids": []})),
                false,
            ),
        ],
        [
            (
                "open_direct",
                Method::POST,
                "/api/v1/conversations/direct".into(),
                Some(json!({"user_id": 2})),
                false,
            ),
            (
                "open_direct",
                Method::POST,
                "/api/v1/conversations/direct".into(),
                Some(json!({"user_id": 3})),
                false,
            ),
        ],
        [
            (
                "add_participants",
                Method::POST,
                format!("{conv}/participants"),
                Some(json!({"user_ids": [3]})),
                true,
            ),
            (
                "add_participants",
                Method::POST,
                format!("{conv}/participants"),
                Some(json!({"user_ids": [4]})),
                true,
            ),
        ],
        [
            (
                "manage",
                Method::PATCH,
                conv.clone(),
                Some(json!({"name": "Renamed"})),
                true,
            ),
            (
                "manage",
                Method::PATCH,
                format!("{conv}/participants/2"),
                Some(json!({"role": "ADMIN"})),
                true,
            ),
        ],
        [
            (
                "read",
                Method::POST,
                format!("{conv}/read"),
                Some(json!({})),
                true,
            ),
            (
                "read (mute)",
                Method::PATCH,
                format!("{conv}/membership"),
                Some(json!({"is_muted": true})),
                true,
            ),
        ],
        [
            (
                "edit",
                Method::PATCH,
                format!("/api/v1/messages/{m1}"),
                Some(json!({"content": "one!"})),
                true,
            ),
            (
                "edit",
                Method::PATCH,
                format!("/api/v1/messages/{m2}"),
                Some(json!({"content": "two!"})),
                true,
            ),
        ],
        [
            (
                "react (add)",
                Method::PUT,
                format!("/api/v1/messages/{m1}/reactions/{thumbs}"),
                None,
                true,
            ),
            (
                "react (remove)",
                Method::DELETE,
                format!("/api/v1/messages/{m1}/reactions/{thumbs}"),
                None,
                true,
            ),
        ],
        [
            (
                "delete",
                Method::DELETE,
                format!("/api/v1/messages/{m1}"),
                None,
                true,
            ),
            (
                "delete",
                Method::DELETE,
                format!("/api/v1/messages/{m2}"),
                None,
                true,
            ),
        ],
    ];
    for [first, second] in steps {
        let run = |(what, method, path, body, as_bob): Step| {
            let client = if as_bob { &bob } else { &alice };
            async move { (what, client.request(method, &path, body).await) }
        };
        let (what, reply) = run(first).await;
        assert_allowed(&reply, what);
        let (what, reply) = run(second).await;
        assert_limited(&reply, what);
    }
    app.finish().await;
}

/// At most 20 reactions per user on one message (`too_many_reactions`) and at most 50
/// distinct emoji on it (`too_many_emoji`), both 409; re-adding is never refused.
#[tokio::test]
async fn rule_reaction_caps_are_409_with_their_codes() {
    let app = spawn_with(
        Backend::Memory,
        Options {
            limits: Some(generous()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    for u in 2..=4 {
        app.login(u).await;
    }
    let alice = app.login(1).await;
    let group = alice.create_group("Caps", &[2, 3, 4]).await;
    let m = message(&alice, &group, "react").await;
    for i in 0..20 {
        assert_allowed(&react(&alice, &m, i).await, "alice's first 20");
    }
    react(&alice, &m, 20)
        .await
        .assert_problem(409, "too_many_reactions");
    assert_allowed(&react(&alice, &m, 0).await, "re-adding");
    let bob = app.login(2).await;
    let carol = app.login(3).await;
    for i in 20..40 {
        assert_allowed(&react(&bob, &m, i).await, "bob's");
    }
    for i in 40..50 {
        assert_allowed(&react(&carol, &m, i).await, "carol's");
    }
    react(&carol, &m, 60)
        .await
        .assert_problem(409, "too_many_emoji");
    let dave = app.login(4).await;
    let reply = react(&dave, &m, 0).await;
    assert_allowed(&reply, "an emoji already there");
    assert_eq!(
        reply.body["reactions"].as_array().map(Vec::len),
        Some(50),
        "{reply:?}"
    );
    app.finish().await;
}

/// Puts the `i`th emoji of the Emoticons block on message `m`.
async fn react(client: &Client<'_>, m: &str, i: u32) -> Reply {
    let emoji = pct(&char::from_u32(0x1F600 + i).unwrap().to_string());
    client
        .put(&format!("/api/v1/messages/{m}/reactions/{emoji}"))
        .await
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One user toggles a reaction from 8 connections (each as fast as a 15 ms pause allows,
/// about the 500 requests a second measured in the issue) while another user sends in an
/// unrelated conversation: the flood is limited, and the other user's median send latency
/// stays within a generous multiple (5×) of its baseline, measured in the same test in
/// alternating quiet and flooded rounds. On SQLite
/// (one writer: unlimited toggles queue in front of every send) and on MySQL (where they
/// hold pool connections and the message's row lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_one_users_flood_does_not_slow_another_users_sends() {
    flood_ratio_test(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_one_users_flood_does_not_slow_another_users_sends_on_mysql() {
    flood_ratio_test(Backend::MySql).await;
}

async fn flood_ratio_test(backend: Backend) {
    const SENDS: usize = 15;
    const ROUNDS: usize = 4;
    const CONNECTIONS: usize = 8;
    // Each connection pauses this long between requests: about the 500 requests a second
    // of the flood measured in the issue.
    const PAUSE: Duration = Duration::from_millis(15);
    // Generous: a 429 still costs an HTTP exchange and a token check on a shared 2-core
    // machine; an unlimited flood also costs store work for every toggle.
    const MAX_RATIO: f64 = 5.0;
    // Production defaults but for sends, which the measured user makes many of.
    let limits = Limits {
        sends_per_second: n(100_000),
        send_burst: n(100_000),
        ..Limits::default()
    };
    let Some(app) = spawn_with(
        backend,
        Options {
            limits: Some(limits),
            workers: Some(2),
            ..Options::default()
        },
    )
    .await
    else {
        return;
    };
    app.login(2).await;
    app.login(4).await;
    let flooder = app.login(1).await;
    let sender = app.login(3).await;
    let flood_group = flooder.create_group("Flood", &[2]).await;
    let target = message(&flooder, &flood_group, "toggle me").await;
    let quiet_group = sender.create_group("Quiet", &[4]).await;
    let path = format!("/api/v1/conversations/{quiet_group}/messages");
    let measure = || async {
        let mut taken = Vec::with_capacity(SENDS);
        for i in 0..SENDS {
            let started = Instant::now();
            let reply = sender
                .post(&path, json!({"content": format!("m{i}")}))
                .await;
            taken.push(started.elapsed());
            assert_eq!(reply.status, 201, "{reply:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        taken
    };
    // Warm up.
    measure().await;

    let flooding = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let token = app.token(1);
    let mut floods = Vec::new();
    for _ in 0..CONNECTIONS {
        let (flooding, stop) = (flooding.clone(), stop.clone());
        let client = reqwest::Client::new();
        let url = format!(
            "{}/api/v1/messages/{target}/reactions/{}",
            app.address,
            pct("👍")
        );
        let token = token.clone();
        floods.push(tokio::spawn(async move {
            let (mut requests, mut limited) = (0_u64, 0_u64);
            let mut add = true;
            while !stop.load(Ordering::Relaxed) {
                if !flooding.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let method = if add { Method::PUT } else { Method::DELETE };
                add = !add;
                let status = client
                    .request(method, &url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .status();
                requests += 1;
                if status.as_u16() == 429 {
                    limited += 1;
                } else {
                    assert!(status.is_success(), "{status}");
                }
                tokio::time::sleep(PAUSE).await;
            }
            (requests, limited)
        }));
    }
    // Quiet and flooded rounds alternate, so that a change in the machine's load during
    // the test weighs on both sides alike.
    let (mut quiet, mut loud) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        quiet.extend(measure().await);
        flooding.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        loud.extend(measure().await);
        flooding.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut requests, mut limited) = (0, 0);
    for flood in floods {
        let (r, l) = flood.await.unwrap();
        requests += r;
        limited += l;
    }
    let (baseline, flooded) = (median(quiet), median(loud));
    let ratio = flooded.as_secs_f64() / baseline.as_secs_f64().max(1e-6);
    eprintln!(
        "flood: {requests} toggles ({limited} limited); send median {baseline:?} -> {flooded:?} (x{ratio:.2})"
    );
    assert!(
        limited > 0,
        "the flood was never limited ({requests} toggles)"
    );
    assert!(
        ratio < MAX_RATIO,
        "another user's sends slowed x{ratio:.2} ({baseline:?} -> {flooded:?}) under {requests} toggles"
    );
    app.finish().await;
}
