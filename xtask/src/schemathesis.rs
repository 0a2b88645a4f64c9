//! `cargo xtask schemathesis`: holds the server to its OpenAPI document. Builds `chatd`,
//! starts `chatd serve --dev --ephemeral` on a free port, mints a development token, and
//! runs schemathesis with every check (`st run --checks all`) against
//! `/api/v1/openapi.json`, with the settings of `schemathesis.toml` (30 examples per
//! operation, fixed seed, the exceptions it explains). Without schemathesis (`pip install
//! schemathesis`, which .ci/run does) the step is skipped loudly, and fails under
//! `CI=true`. `cargo xtask test` runs it after the tests.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::cmd;
use crate::e2e::{Guard, free_port, wait_for_port};

/// The schemathesis version `.ci/run` installs (the one the document was checked with).
pub(crate) const VERSION: &str = "4.32.5";

/// The seed of every run, so that a failure can be replayed.
const SEED: &str = "1";

/// `cargo xtask schemathesis [ARGS]`: ARGS go to `st run`.
pub(crate) fn run(extra: &[String]) -> Result<()> {
    let started = Instant::now();
    let result = check(extra);
    let took = cmd::elapsed(started.elapsed());
    match &result {
        Ok(()) => cmd::banner(&format!("cargo xtask schemathesis: passed in {took}")),
        Err(_) => cmd::banner(&format!("cargo xtask schemathesis: FAILED after {took}")),
    }
    result
}

/// Builds and starts the server, then runs schemathesis against it.
pub(crate) fn check(extra: &[String]) -> Result<()> {
    let Some(st) = cmd::find_program("st").or_else(|| cmd::find_program("schemathesis")) else {
        return skip_or_fail();
    };
    cmd::banner("cargo build -p chatd");
    cmd::run(cmd::cargo().args(["build", "-p", "chatd"]))?;
    let chatd = cmd::target_dir().join("debug").join("chatd");
    let out = cmd::target_dir().join("schemathesis");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let log = out.join("chatd.log");
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let server = Guard(
        clean(Command::new(&chatd))
            .args(["serve", "--dev", "--ephemeral", "--bind"])
            .arg(format!("127.0.0.1:{port}"))
            // Rate limits lifted, so that every operation's logic is exercised rather than
            // answered 429 (the limits have their own tests; 429 stays declared).
            .env("CHAT_RATE_LIMITS", "*=100000/s:100000")
            .env("CHAT_SEND_RATE_PER_SECOND", "100000")
            .env("CHAT_SEND_BURST", "100000")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?,
            )
            .spawn()
            .with_context(|| format!("starting {}", chatd.display()))?,
    );
    wait_for_port(port, "chatd")?;
    let minted = clean(Command::new(&chatd))
        .args(["token", "--dev", "--user", "1"])
        .output()
        .context("chatd token --dev")?;
    if !minted.status.success() {
        bail!("chatd token --dev failed");
    }
    let token = String::from_utf8(minted.stdout)?.trim().to_owned();
    let config = cmd::workspace_root().join("schemathesis.toml");
    let mut command = Command::new(st);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args([
            "--url",
            &base,
            "--checks",
            "all",
            "--seed",
            SEED,
            "--no-color",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(extra);
    // The token is not printed: `cmd::run` shows the command line.
    cmd::banner(&format!(
        "st run {base}/api/v1/openapi.json --checks all --seed {SEED} (config {})",
        config.display()
    ));
    let status = command.status().context("running schemathesis")?;
    drop(server);
    if !status.success() {
        bail!(
            "schemathesis found failures (server log: {})",
            log.display()
        );
    }
    Ok(())
}

/// `command` without the settings of the developer's shell that would change the server
/// under test.
fn clean(command: Command) -> Command {
    let mut command = command;
    for variable in ["DATABASE_URL", "REDIS_URL", "CHAT_BIND", "CHAT_JWT_SECRET"] {
        command.env_remove(variable);
    }
    command
}

/// A missing schemathesis: a failure under CI, else a loud skip.
fn skip_or_fail() -> Result<()> {
    let install = format!("install it with `pip install schemathesis=={VERSION}` (.ci/run does)");
    if cmd::is_ci() {
        cmd::loud_banner(&[
            "schemathesis is not installed: the OpenAPI document cannot be checked".to_owned(),
            "CI=true, so this is a failure, not a skip.".to_owned(),
            install,
        ]);
        bail!("schemathesis is required under CI");
    }
    cmd::loud_banner(&[
        "schemathesis is not installed: the server was NOT checked against its OpenAPI \
         document"
            .to_owned(),
        install,
    ]);
    Ok(())
}
