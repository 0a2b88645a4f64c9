//! The five scenarios, each against a running chatd: durable send, fan-out, history at
//! depth, inbox, and idle connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use crate::Plan;
use crate::api::Api;
use crate::closed_loop::run_for;
use crate::server::Server;
use crate::stats::{Latencies, round};
use crate::ws;

/// Provisions users `first..first+count` concurrently.
pub(crate) async fn provision(api: &Api, users: impl Iterator<Item = i64>) -> anyhow::Result<()> {
    let users: Vec<i64> = users.collect();
    for chunk in users.chunks(64) {
        let calls = chunk.iter().map(|u| api.provision(*u));
        for result in join_all(calls).await {
            result?;
        }
    }
    Ok(())
}

/// The shape of a send scenario: how many groups, how many members each, and which user
/// numbers they get.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendShape {
    /// How many groups the sends are spread over.
    pub(crate) groups: i64,
    /// Members per group, the creator included; every member sends in turn.
    pub(crate) users_per_group: i64,
    /// The first user number (each shape has its own range).
    pub(crate) base_user: i64,
}

impl SendShape {
    /// Scenario 1, spread out: `plan.send_groups` groups of 4.
    pub(crate) fn spread(plan: &Plan) -> Self {
        Self {
            groups: plan.send_groups,
            users_per_group: 4,
            base_user: 10_000,
        }
    }

    /// Hot conversations: 50 users in 10 groups of 5, the same 32 requests in flight, so
    /// about three requests at a time land in the same conversation.
    pub(crate) fn hot() -> Self {
        Self {
            groups: 10,
            users_per_group: 5,
            base_user: 600_000,
        }
    }

    /// A big group: every request in flight goes into one group of 1000, each member
    /// sending in turn.
    pub(crate) fn big_group() -> Self {
        Self {
            groups: 1,
            users_per_group: 1000,
            base_user: 700_000,
        }
    }
}

/// Scenario 1: many users posting into many conversations with `concurrency` requests in
/// flight; then every acknowledged message must be in history exactly once; then the
/// latency at half the measured throughput.
pub(crate) async fn durable_send(server: &Server, plan: &Plan) -> anyhow::Result<Value> {
    send_load(server, plan, SendShape::spread(plan)).await
}

/// A closed loop of sends shaped by `shape` with `plan.concurrency` requests in flight for
/// the run's duration (senders rotating over each group's members); then every
/// acknowledged message must be in history exactly once; then an open loop at half the
/// measured throughput (latency counted from each request's scheduled time).
pub(crate) async fn send_load(
    server: &Server,
    plan: &Plan,
    shape: SendShape,
) -> anyhow::Result<Value> {
    let api = Api::new(&server.base)?;
    let SendShape {
        groups,
        users_per_group,
        base_user,
    } = shape;
    provision(&api, base_user..base_user + groups * users_per_group).await?;
    let mut conversations = Vec::new();
    for g in 0..groups {
        let first = base_user + g * users_per_group;
        let members: Vec<i64> = (first + 1..first + users_per_group).collect();
        let id = api
            .create_group(first, &members, &format!("send {g}"))
            .await?;
        conversations.push((id, first));
    }
    let conversations = Arc::new(conversations);

    let closed = closed_loop(
        &api,
        &conversations,
        plan.concurrency,
        plan.send_seconds,
        users_per_group,
    )
    .await?;
    let throughput = closed.acked.len() as f64 / closed.elapsed.as_secs_f64();

    // Exactly once: every acknowledged id appears once in its conversation's history.
    let mut expected: HashMap<String, usize> = HashMap::new();
    for (_, id) in &closed.acked {
        expected.insert(id.clone(), 0);
    }
    let mut unexpected = 0usize;
    for (conversation, owner) in conversations.iter() {
        for id in api.all_message_ids(*owner, conversation).await? {
            match expected.get_mut(&id) {
                Some(seen) => *seen += 1,
                None => unexpected += 1,
            }
        }
    }
    let missing = expected.values().filter(|n| **n == 0).count();
    let duplicated = expected.values().filter(|n| **n > 1).count();
    // The creation records are the only messages nobody acknowledged.
    let strays = unexpected.saturating_sub(conversations.len());

    let half_rate = (throughput / 2.0).max(1.0);
    let paced = open_loop(
        &api,
        &conversations,
        half_rate,
        plan.send_seconds,
        users_per_group,
        plan.concurrency,
    )
    .await?;

    Ok(json!({
        "concurrency": plan.concurrency,
        "conversations": groups,
        "members_per_conversation": users_per_group,
        "seconds": round(closed.elapsed.as_secs_f64()),
        "acknowledged": closed.acked.len(),
        "errors": closed.errors,
        "throughput_per_s": round(throughput),
        "latency": closed.latencies.summary(),
        "verified": { "missing": missing, "duplicated": duplicated, "unacknowledged_extra": strays,
                      "exactly_once": missing == 0 && duplicated == 0 },
        "half_load": { "rate_per_s": round(half_rate), "errors": paced.errors, "latency": paced.latencies.summary() },
    }))
}

struct LoadResult {
    acked: Vec<(String, String)>,
    errors: u64,
    latencies: Latencies,
    elapsed: Duration,
}

async fn closed_loop(
    api: &Api,
    conversations: &Arc<Vec<(String, i64)>>,
    concurrency: usize,
    seconds: u64,
    users_per_group: i64,
) -> anyhow::Result<LoadResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers = (0..concurrency).map(|w| {
        let api = api.clone();
        let conversations = conversations.clone();
        let stop = stop.clone();
        let counter = counter.clone();
        tokio::spawn(async move {
            let mut latencies = Latencies::new();
            let mut acked = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let (conversation, first) = &conversations[(n as usize + w) % conversations.len()];
                let sender = first + (n as i64 % users_per_group);
                let began = Instant::now();
                match api
                    .send(sender, conversation, &format!("durable {n}"))
                    .await
                {
                    Ok((201, Some((id, _)))) => {
                        latencies.record(began.elapsed());
                        acked.push((conversation.clone(), id));
                    }
                    _ => errors += 1,
                }
            }
            (latencies, acked, errors)
        })
    });
    let results = run_for(workers.collect(), &stop, seconds).await?;
    let elapsed = start.elapsed();
    let mut all = LoadResult {
        acked: Vec::new(),
        errors: 0,
        latencies: Latencies::new(),
        elapsed,
    };
    for (latencies, acked, errors) in results {
        all.latencies.merge(&latencies);
        all.acked.extend(acked);
        all.errors += errors;
    }
    Ok(all)
}

/// A paced load: `concurrency` workers share `rate` requests per second, each on its own
/// schedule. Latency counts from the scheduled start, so a worker that falls behind
/// reports the wait too (no coordinated omission).
async fn open_loop(
    api: &Api,
    conversations: &Arc<Vec<(String, i64)>>,
    rate: f64,
    seconds: u64,
    users_per_group: i64,
    concurrency: usize,
) -> anyhow::Result<LoadResult> {
    // At least one request per worker, so a slow store still gets a half-load figure.
    let per_worker = ((rate * seconds as f64 / concurrency as f64).floor() as u64).max(1);
    let interval = Duration::from_secs_f64(concurrency as f64 / rate);
    let start = Instant::now();
    let workers = (0..concurrency).map(|w| {
        let api = api.clone();
        let conversations = conversations.clone();
        // Spread the workers' first slots over one interval.
        let offset = interval.mul_f64(w as f64 / concurrency as f64);
        tokio::spawn(async move {
            let mut latencies = Latencies::new();
            let mut errors = 0u64;
            for k in 0..per_worker {
                let due = start + offset + interval.mul_f64(k as f64);
                tokio::time::sleep_until(due.into()).await;
                let n = k as usize * concurrency + w;
                let (conversation, first) = &conversations[n % conversations.len()];
                let sender = first + (n as i64 % users_per_group);
                match api.send(sender, conversation, &format!("paced {n}")).await {
                    Ok((201, Some(_))) => latencies.record(due.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        })
    });
    let mut all = LoadResult {
        acked: Vec::new(),
        errors: 0,
        latencies: Latencies::new(),
        elapsed: Duration::ZERO,
    };
    for result in join_all(workers).await {
        let (latencies, errors) = result?;
        all.latencies.merge(&latencies);
        all.errors += errors;
    }
    all.elapsed = start.elapsed();
    Ok(all)
}

/// Collects arrivals of `messages` tagged messages at `expected` recipients each and
/// returns per-message last-arrival latencies and the number of missing deliveries.
pub(crate) async fn collect_arrivals(
    mut arrivals: mpsc::UnboundedReceiver<ws::Arrival>,
    sent_at: Arc<Mutex<Vec<Option<Instant>>>>,
    messages: usize,
    expected: usize,
    grace: Duration,
) -> (Latencies, u64, u64) {
    let mut counts = vec![0usize; messages];
    let mut last = vec![None::<Instant>; messages];
    let mut delivered = 0u64;
    let total = messages * expected;
    let deadline = tokio::time::Instant::now() + grace;
    while (delivered as usize) < total {
        match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some((index, at))) if index < messages => {
                counts[index] += 1;
                delivered += 1;
                last[index] = Some(last[index].map_or(at, |l: Instant| l.max(at)));
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let sent = sent_at.lock().await;
    let mut latencies = Latencies::new();
    for (index, arrival) in last.iter().enumerate() {
        if let (Some(arrival), Some(Some(sent))) = (arrival, sent.get(index)) {
            if counts[index] == expected {
                latencies.record(arrival.saturating_duration_since(*sent));
            }
        }
    }
    let missing = (total as u64).saturating_sub(delivered);
    (latencies, delivered, missing)
}

/// Scenario 2: one group of `members`, each with a WebSocket; one sender posts at a
/// fixed rate; time from send to the last recipient's `message.created`.
pub(crate) async fn fanout(server: &Server, plan: &Plan, members: usize) -> anyhow::Result<Value> {
    let api = Api::new(&server.base)?;
    let base_user = 100_000 + members as i64 * 10;
    let users: Vec<i64> = (base_user..base_user + members as i64).collect();
    provision(&api, users.iter().copied()).await?;
    let sender = users[0];
    let conversation = api.create_group(sender, &users[1..], "fan-out").await?;
    let (tx, rx) = mpsc::unbounded_channel();
    for chunk in users.chunks(100) {
        let sockets = join_all(chunk.iter().map(|u| {
            let token = api.token(*u);
            let url = server.ws_url.clone();
            async move { ws::connect_chatd(&url, &token?).await }
        }))
        .await;
        for socket in sockets {
            ws::watch_chatd(socket?, "fanout", tx.clone());
        }
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = plan.fanout_messages;
    let sent_at = Arc::new(Mutex::new(vec![None; messages]));
    let collector = tokio::spawn(collect_arrivals(
        rx,
        sent_at.clone(),
        messages,
        members,
        Duration::from_secs(plan.fanout_messages as u64 / plan.fanout_rate as u64 + 30),
    ));
    let interval = Duration::from_secs_f64(1.0 / plan.fanout_rate);
    let start = Instant::now();
    let mut errors = 0;
    for index in 0..messages {
        tokio::time::sleep_until((start + interval.mul_f64(index as f64)).into()).await;
        sent_at.lock().await[index] = Some(Instant::now());
        match api
            .send(sender, &conversation, &format!("fanout {index}"))
            .await?
        {
            (201, _) => {}
            _ => errors += 1,
        }
    }
    let (latencies, delivered, missing) = collector.await?;
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "members": members,
        "messages": messages,
        "rate_per_s": plan.fanout_rate,
        "send_errors": errors,
        "last_recipient": latencies.summary(),
        "deliveries": delivered,
        "deliveries_per_s": round(delivered as f64 / elapsed),
        "missing": missing,
    }))
}

/// Scenario 3: one conversation with many messages; page latency at the newest end and
/// near the oldest.
pub(crate) async fn history(server: &Server, plan: &Plan) -> anyhow::Result<Value> {
    let api = Api::new(&server.base)?;
    let (a, b) = (300_001, 300_002);
    provision(&api, [a, b].into_iter()).await?;
    let conversation = api.create_group(a, &[b], "deep").await?;
    let seeded = Arc::new(AtomicU64::new(0));
    let target = plan.history_messages as u64;
    let seeders = (0..plan.concurrency.min(32)).map(|w| {
        let api = api.clone();
        let conversation = conversation.clone();
        let seeded = seeded.clone();
        tokio::spawn(async move {
            loop {
                let n = seeded.fetch_add(1, Ordering::Relaxed);
                if n >= target {
                    return Ok::<(), anyhow::Error>(());
                }
                let sender = if (n + w as u64) % 2 == 0 { a } else { b };
                let (status, _) = api
                    .send(sender, &conversation, &format!("history {n}"))
                    .await?;
                if status != 201 {
                    anyhow::bail!("seeding history: status {status}");
                }
            }
        })
    });
    let seed_start = Instant::now();
    for result in join_all(seeders).await {
        result??;
    }
    let seed_seconds = seed_start.elapsed().as_secs_f64();
    let mut newest = Latencies::new();
    let mut deep = Latencies::new();
    for _ in 0..plan.samples {
        let began = Instant::now();
        let page = api
            .get(
                a,
                &format!("/conversations/{conversation}/messages?limit=50"),
            )
            .await?;
        newest.record(began.elapsed());
        anyhow::ensure!(
            page["items"].as_array().map_or(0, Vec::len) == 50,
            "short newest page"
        );
        let began = Instant::now();
        let page = api
            .get(
                a,
                &format!("/conversations/{conversation}/messages?limit=50&before_seq=60"),
            )
            .await?;
        deep.record(began.elapsed());
        anyhow::ensure!(
            page["items"].as_array().map_or(0, Vec::len) == 50,
            "short deep page"
        );
    }
    Ok(json!({
        "messages": target + 1,
        "seed_seconds": round(seed_seconds),
        "newest": newest.summary(),
        "deep": deep.summary(),
        "deep_over_newest_p99": round(deep.ms(0.99) / newest.ms(0.99).max(0.001)),
    }))
}

/// Scenario 4: one user in many conversations, each with unread messages; latency of the
/// inbox page and the unread badge.
pub(crate) async fn inbox(server: &Server, plan: &Plan) -> anyhow::Result<Value> {
    let api = Api::new(&server.base)?;
    let (reader, writer) = (400_001, 400_002);
    provision(&api, [reader, writer].into_iter()).await?;
    let created = Arc::new(AtomicU64::new(0));
    let target = plan.inbox_conversations as u64;
    let makers = (0..16).map(|_| {
        let api = api.clone();
        let created = created.clone();
        tokio::spawn(async move {
            loop {
                let n = created.fetch_add(1, Ordering::Relaxed);
                if n >= target {
                    return Ok::<(), anyhow::Error>(());
                }
                let id = api
                    .create_group(writer, &[reader], &format!("inbox {n}"))
                    .await?;
                api.send(writer, &id, "unread").await?;
            }
        })
    });
    for result in join_all(makers).await {
        result??;
    }
    let mut page = Latencies::new();
    let mut badge = Latencies::new();
    for _ in 0..plan.samples {
        let began = Instant::now();
        let body = api.get(reader, "/conversations?limit=20").await?;
        page.record(began.elapsed());
        anyhow::ensure!(
            body["items"].as_array().map_or(0, Vec::len) == 20,
            "short inbox page"
        );
        let began = Instant::now();
        let body = api.get(reader, "/unread").await?;
        badge.record(began.elapsed());
        anyhow::ensure!(
            body["total"].as_u64() == Some(target),
            "badge total {} != {target}",
            body["total"]
        );
    }
    Ok(
        json!({ "conversations": target, "inbox_page": page.summary(), "unread_badge": badge.summary() }),
    )
}

/// Scenario 5: idle authenticated WebSockets; the server's resident memory per
/// connection.
pub(crate) async fn connections(server: &Server, plan: &Plan) -> anyhow::Result<Value> {
    let api = Api::new(&server.base)?;
    let users: Vec<i64> = (500_000..500_000 + plan.idle_connections as i64 / 4 + 1).collect();
    provision(&api, users.iter().copied()).await?;
    // Warm up the server's allocator and pools with a first batch, then measure.
    let mut sockets = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib()?;
    for chunk in (0..plan.idle_connections).collect::<Vec<_>>().chunks(200) {
        let opened = join_all(chunk.iter().map(|i| {
            let token = api.token(users[i % users.len()]);
            let url = server.ws_url.clone();
            async move { ws::connect_chatd(&url, &token?).await }
        }))
        .await;
        for socket in opened {
            sockets.push(socket.context("opening an idle socket")?);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib()?;
    let per_connection = (after.saturating_sub(before)) as f64 / plan.idle_connections as f64;
    drop(sockets);
    Ok(json!({
        "connections": plan.idle_connections,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round(per_connection),
    }))
}
