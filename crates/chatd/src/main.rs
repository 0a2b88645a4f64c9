//! `chatd`: the chat server's composition root. It reads the configuration, wires the
//! stores, the service and the HTTP adapter together, and runs one of the subcommands:
//! `serve`, `migrate` or `token`.

mod config;
mod wiring;

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use chat_domain::UserId;
use chat_http::{
    AppState, Authenticator, Metrics, MintClaims, Realtime, RedisSettings, WsConfig, mint_hs256,
};
use chat_ports::SystemClock;
use chat_service::{ChatService, Ports};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command, MigrateArgs, ServeArgs, TokenArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Token(args) => token(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); JSON lines when
/// `CHAT_LOG_FORMAT=json`.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("CHAT_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let listener = TcpListener::bind(&config.bind[..])
        .with_context(|| format!("cannot listen on {:?}", config.bind))?;
    let address = listener.local_addr()?;

    let storage = match &config.database_url {
        Some(url) => wiring::mysql(url, config.migrate).await?,
        None => {
            tracing::warn!(
                "DATABASE_URL is not set: using the IN-MEMORY store; NOTHING PERSISTS, every \
                 conversation and message is lost when chatd stops"
            );
            wiring::memory()
        }
    };
    if config.auth.provisioning == chat_http::Provisioning::External
        && config.database_url.is_none()
    {
        tracing::warn!(
            "CHAT_USER_PROVISIONING=external with the in-memory store: no user will ever exist"
        );
    }

    let realtime = realtime(&config.http.allowed_origins).await?;
    let service = ChatService::with_limits(
        Ports {
            conversations: storage.conversations,
            messages: storage.messages,
            read_state: storage.read_state,
            users: storage.users.clone(),
            postings: storage.postings,
            events: realtime.clone(),
            clock: Arc::new(SystemClock),
        },
        config.limits,
    );
    let mut metrics = Metrics::new()?;
    if let Some(probe) = storage.pool {
        metrics = metrics.with_pool(probe)?;
    }
    let state = AppState {
        service: Arc::new(service),
        auth: Arc::new(Authenticator::new(config.auth, storage.users)),
        metrics: Arc::new(metrics),
        readiness: storage.readiness,
        realtime: Some(realtime.clone()),
    };
    let server = chat_http::serve(listener, state, config.http)?;
    close_websockets_on_signal(realtime);

    tracing::info!(%address, "chatd listening");
    if config.dev {
        eprintln!(
            "\nchatd is running in DEVELOPMENT mode on http://{address} (built-in secret, \
             loopback only).\nMint a token with:\n\n    cargo run -q -p chatd -- token --dev \
             --user 1 --name Alice\n\nthen call e.g.:\n\n    curl -H \"Authorization: Bearer \
             $TOKEN\" http://{address}/api/v1/conversations\n"
        );
    }
    server.await.context("server failed")?;
    tracing::info!("chatd stopped");
    Ok(())
}

/// The real-time transport: bridged over Redis pub/sub when `REDIS_URL` is set (channel
/// `CHAT_REDIS_CHANNEL`, default `chat:events`), else this process only.
async fn realtime(allowed_origins: &[String]) -> anyhow::Result<Arc<Realtime>> {
    let ws = WsConfig {
        allowed_origins: allowed_origins.to_vec(),
        ..WsConfig::default()
    };
    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    match redis_url {
        Some(url) => {
            let mut redis = RedisSettings::new(url);
            if let Some(channel) = std::env::var("CHAT_REDIS_CHANNEL")
                .ok()
                .filter(|c| !c.trim().is_empty())
            {
                redis.channel = channel;
            }
            let realtime = Realtime::clustered(ws, &redis)
                .await
                .context("connecting to Redis (REDIS_URL)")?;
            tracing::info!(channel = %redis.channel, "real-time events bridged over Redis");
            Ok(realtime)
        }
        None => {
            tracing::warn!(
                "REDIS_URL is not set: WebSocket events reach the connections of THIS process \
                 only; set it when running more than one chatd"
            );
            Ok(Realtime::local(ws))
        }
    }
}

/// On SIGTERM or SIGINT, closes every WebSocket with 1001 while actix drains the rest.
fn close_websockets_on_signal(realtime: Arc<Realtime>) {
    tokio::spawn(async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "SIGTERM handler not installed");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
        tracing::info!("closing WebSocket connections (1001)");
        realtime.shut_down();
    });
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let url = args
        .database_url
        .filter(|u| !u.trim().is_empty())
        .context("DATABASE_URL is not set; `chatd migrate` needs a database")?;
    let store = wiring::connect(&url).await?;
    store.migrate().await.context("running migrations")?;
    tracing::info!("database migrations applied");
    Ok(())
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = args.secret()?;
    let user = UserId::new(args.user).context("--user")?;
    let mut claims = MintClaims::new(user, args.name.clone(), args.ttl);
    claims.iss = args.jwt_issuer.clone().filter(|v| !v.is_empty());
    claims.aud = args.jwt_audience.clone().filter(|v| !v.is_empty());
    let token = mint_hs256(secret.as_bytes(), &claims).context("minting the token")?;
    println!("{token}");
    Ok(())
}
