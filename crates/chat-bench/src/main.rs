//! `chat-bench`: the load generator behind `cargo xtask bench`. It starts the real
//! `chatd` binary (on the in-memory store, on a SQLite file and on MySQL), drives it over
//! HTTP and
//! WebSocket, measures the machine's own limits in the same run, and writes
//! `results.json` and `results.md`.
//!
//! Usage: `chat-bench --chatd PATH [--quick|--full] [--database-url URL | --no-mysql]
//! [--only send,hot,biggroup,fanout,history,inbox,sync,connections] [--out DIR]`.

#![forbid(unsafe_code)]

mod api;
mod closed_loop;
mod crypto;
mod floor;
mod limits;
mod report;
mod scenarios;
mod server;
mod stats;
mod sync;
mod ws;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::server::{Server, Store};

/// How big each scenario is.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) mode: &'static str,
    pub(crate) concurrency: usize,
    pub(crate) send_seconds: u64,
    pub(crate) send_groups: i64,
    pub(crate) fanout_sizes: Vec<usize>,
    pub(crate) fanout_messages: usize,
    pub(crate) fanout_rate: f64,
    pub(crate) history_messages: usize,
    pub(crate) inbox_conversations: usize,
    /// Messages sent to measure the change log's growth per message (`sync`).
    pub(crate) sync_log_messages: usize,
    pub(crate) samples: usize,
    pub(crate) idle_connections: usize,
    /// Rounds of the encryption comparison (each a durable send without, then with, the
    /// key ring, in alternating order).
    pub(crate) encryption_rounds: usize,
    /// Seals and opens per size in the encryption micro-measure.
    pub(crate) crypto_iterations: u32,
}

impl Plan {
    fn quick() -> Self {
        Self {
            mode: "quick",
            concurrency: 32,
            send_seconds: 5,
            send_groups: 64,
            fanout_sizes: vec![100, 1000],
            fanout_messages: 40,
            fanout_rate: 20.0,
            history_messages: 5_000,
            inbox_conversations: 1_000,
            sync_log_messages: 2_000,
            samples: 200,
            idle_connections: 1_000,
            encryption_rounds: 3,
            crypto_iterations: 2_000,
        }
    }

    fn full() -> Self {
        Self {
            mode: "full",
            send_seconds: 20,
            fanout_messages: 200,
            history_messages: 100_000,
            sync_log_messages: 20_000,
            samples: 1_000,
            idle_connections: 5_000,
            crypto_iterations: 10_000,
            ..Self::quick()
        }
    }
}

struct Args {
    plan: Plan,
    chatd: PathBuf,
    database_url: Option<String>,
    out: PathBuf,
    /// Run only these scenarios (`send`, `hot`, `biggroup`, `fanout`, `history`, `inbox`,
    /// `sync`, `connections`).
    only: Vec<String>,
}

impl Args {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn parse_args() -> anyhow::Result<Args> {
    let mut plan = Plan::quick();
    let mut chatd = None;
    let mut database_url = std::env::var("DATABASE_URL").ok();
    let mut out = PathBuf::from("target/bench");
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => plan = Plan::quick(),
            "--full" => plan = Plan::full(),
            "--chatd" => chatd = args.next().map(PathBuf::from),
            "--database-url" => database_url = args.next(),
            "--no-mysql" => database_url = None,
            "--only" => only.extend(
                args.next()
                    .context("--only needs a list of scenarios")?
                    .split(',')
                    .map(str::to_owned),
            ),
            "--out" => {
                out = args
                    .next()
                    .map(PathBuf::from)
                    .context("--out needs a folder")?
            }
            other => bail!("unknown argument {other}; see the module docs"),
        }
    }
    Ok(Args {
        plan,
        chatd: chatd.context("--chatd PATH is required")?,
        database_url,
        out,
        only,
    })
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": memory,
    })
}

/// A fresh database for one scenario's server.
pub(crate) async fn fresh_database(server_url: &str, name: &str) -> anyhow::Result<String> {
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect(server_url)
        .await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
        .execute(&pool)
        .await?;
    sqlx::query(&format!(
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(format!("{}/{name}", server_url.trim_end_matches('/')))
}

async fn with_server<F, Fut>(
    args: &Args,
    store: &Store,
    scenario: &str,
    run: F,
) -> anyhow::Result<Value>
where
    F: FnOnce(Server) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Value, Server)>>,
{
    let store = match store {
        Store::Memory => Store::Memory,
        Store::Sqlite { dir } => {
            // A fresh file per scenario, as MySQL gets a fresh database.
            let dir = dir.join(scenario);
            let _ = std::fs::remove_dir_all(&dir);
            Store::Sqlite { dir }
        }
        Store::MySql { url } => Store::MySql {
            url: fresh_database(url, &format!("chat_bench_{scenario}")).await?,
        },
        Store::MySqlEncrypted { url } => Store::MySqlEncrypted {
            url: fresh_database(url, &format!("chat_bench_{scenario}_encrypted")).await?,
        },
    };
    eprintln!("  {} / {scenario} …", store.label());
    let began = Instant::now();
    let server = Server::start(&args.chatd, &store, &args.out).await?;
    let (value, server) = run(server).await?;
    server.stop().await;
    if let Store::Sqlite { dir } = &store {
        let _ = std::fs::remove_dir_all(dir);
    }
    eprintln!(
        "  {} / {scenario} done in {:.1} s",
        store.label(),
        began.elapsed().as_secs_f64()
    );
    Ok(value)
}

async fn run_store(args: &Args, store: &Store) -> anyhow::Result<Value> {
    let plan = &args.plan;
    let mut results = serde_json::Map::new();
    if args.wants("send") {
        let send = with_server(args, store, "send", |s| async move {
            Ok((scenarios::durable_send(&s, plan).await?, s))
        })
        .await?;
        results.insert("send".into(), send);
    }
    // The same load concentrated: 10 groups of 5, then one group of 1000.
    for (scenario, shape) in [
        ("hot", scenarios::SendShape::hot()),
        ("biggroup", scenarios::SendShape::big_group()),
    ] {
        if args.wants(scenario) {
            let value = with_server(args, store, scenario, |s| async move {
                Ok((scenarios::send_load(&s, plan, shape).await?, s))
            })
            .await?;
            results.insert(scenario.into(), value);
        }
    }
    if args.wants("fanout") {
        let mut fanout = serde_json::Map::new();
        for members in &plan.fanout_sizes {
            let value = with_server(args, store, &format!("fanout{members}"), |s| async move {
                Ok((scenarios::fanout(&s, plan, *members).await?, s))
            })
            .await?;
            fanout.insert(members.to_string(), value);
        }
        results.insert("fanout".into(), Value::Object(fanout));
    }
    if args.wants("history") {
        let history = with_server(args, store, "history", |s| async move {
            Ok((scenarios::history(&s, plan).await?, s))
        })
        .await?;
        results.insert("history".into(), history);
    }
    if args.wants("inbox") {
        let inbox = with_server(args, store, "inbox", |s| async move {
            Ok((scenarios::inbox(&s, plan).await?, s))
        })
        .await?;
        results.insert("inbox".into(), inbox);
    }
    if args.wants("sync") {
        let sync = with_server(args, store, "sync", |s| async move {
            Ok((sync::sync_and_log_growth(&s, plan).await?, s))
        })
        .await?;
        results.insert("sync".into(), sync);
    }
    if args.wants("connections") {
        let connections = with_server(args, store, "connections", |s| async move {
            Ok((scenarios::connections(&s, plan).await?, s))
        })
        .await?;
        results.insert("connections".into(), connections);
    }
    Ok(Value::Object(results))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.out)?;
    let began = Instant::now();
    eprintln!("chat-bench {} run", args.plan.mode);

    eprintln!("limits:");
    let raw_insert = match &args.database_url {
        Some(url) if args.wants("send") || args.wants("hot") || args.wants("biggroup") => {
            Some(limits::raw_insert(url, &args.plan).await?)
        }
        _ => None,
    };
    let send_floor = match &args.database_url {
        Some(url) if args.wants("send") => {
            Some(floor::send_floor(url, &args.chatd, &args.plan).await?)
        }
        _ => None,
    };
    let sqlite_dir = std::path::absolute(args.out.join("sqlite"))?;
    let raw_insert_sqlite = if args.wants("send") || args.wants("hot") || args.wants("biggroup") {
        Some(limits::raw_insert_sqlite(&sqlite_dir.join("raw"), &args.plan).await?)
    } else {
        None
    };
    let mut broadcast = serde_json::Map::new();
    for members in args
        .plan
        .fanout_sizes
        .iter()
        .filter(|_| args.wants("fanout"))
    {
        broadcast.insert(
            members.to_string(),
            limits::bare_broadcast(&args.plan, *members).await?,
        );
    }

    eprintln!("scenarios:");
    let mut stores = serde_json::Map::new();
    stores.insert("memory".into(), run_store(&args, &Store::Memory).await?);
    stores.insert(
        "sqlite".into(),
        run_store(&args, &Store::Sqlite { dir: sqlite_dir }).await?,
    );
    if let Some(url) = &args.database_url {
        stores.insert(
            "mysql".into(),
            run_store(&args, &Store::MySql { url: url.clone() }).await?,
        );
    }

    // The cost of encryption at rest: durable send on MySQL without and with the key ring,
    // in alternating rounds of the same run (so the database's drift hits both), and the
    // seal/open cost per message measured on its own.
    let encryption = match &args.database_url {
        Some(url) if args.wants("send") => {
            let plan = &args.plan;
            let (mut plain, mut sealed) = (Vec::new(), Vec::new());
            for round in 1..=plan.encryption_rounds {
                let order = if round % 2 == 1 {
                    [false, true]
                } else {
                    [true, false]
                };
                for with_ring in order {
                    let (store, scenario) = if with_ring {
                        (Store::MySqlEncrypted { url: url.clone() }, "ring_on")
                    } else {
                        (Store::MySql { url: url.clone() }, "ring_off")
                    };
                    let value = with_server(
                        &args,
                        &store,
                        &format!("send_{scenario}_{round}"),
                        |s| async move { Ok((scenarios::durable_send(&s, plan).await?, s)) },
                    )
                    .await?;
                    if with_ring {
                        sealed.push(value);
                    } else {
                        plain.push(value);
                    }
                }
            }
            let crypto = crypto::seal_open_cost(plan.crypto_iterations)?;
            report::encryption_cost(&plain, &sealed, &crypto, raw_insert.as_ref())
        }
        _ => Value::Null,
    };

    let results = json!({
        "mode": args.plan.mode,
        "encryption": encryption,
        "plan": format!("{:?}", args.plan),
        "machine": machine(),
        "limits": {
            "raw_insert": raw_insert,
            "raw_insert_sqlite": raw_insert_sqlite,
            "send_floor": send_floor,
            "bare_broadcast": broadcast,
        },
        "stores": stores,
        "seconds": stats::round(began.elapsed().as_secs_f64()),
    });
    let results = report::with_targets(results);
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    let markdown = report::markdown(&results);
    std::fs::write(args.out.join("results.md"), &markdown)?;
    println!("{markdown}");
    eprintln!(
        "wrote {}/results.json and results.md in {:.0} s",
        args.out.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
