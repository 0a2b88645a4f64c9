//! `cargo xtask`: developer automation for the chat workspace.
//!
//! The `xtask` alias in `.cargo/config.toml` runs this binary, so every task
//! is available as `cargo xtask <task>` without installing anything. Tasks
//! live in their own modules; `main` only parses the task name and dispatches.
//! To add a task (for example `bench`), create `src/<task>.rs` with a `run`
//! function, declare the module below, add a match arm and a line to [`HELP`].

#![forbid(unsafe_code)]

mod architecture;
mod bench;
mod cmd;
mod e2e;
mod schemathesis;
mod services;
mod test;

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};

/// Text printed by `cargo xtask help`.
const HELP: &str = "\
Usage: cargo xtask <TASK> [ARGS...]

Tasks:
  test [ARGS...]  Full gate: rustfmt check, clippy (-D warnings), MySQL/Redis
                  preparation, then the workspace tests (cargo nextest if
                  installed, plus doctests; cargo test otherwise), then the
                  key-ring pass: the storage crates' tests again with
                  CHAT_TEST_KEY_RING=1 (every store encrypts at rest). ARGS are
                  passed to the test runner, e.g. `cargo xtask test -p chat-domain`.
  ci [ARGS...]    Same as `test` (what .ci/run executes).
  bench [--quick|--full]
                  Build chatd and chat-bench in release mode and run the
                  benchmark scenarios against the in-memory store and MySQL;
                  results in target/bench/results.{json,md}.
  e2e             Browser tests of the web client: build chatd, start it in
                  --dev mode over a fresh MySQL database, and drive two
                  headless Chromium sessions (Debian's chromium and
                  chromium-driver) over WebDriver as two users; screenshots
                  in target/e2e/. Skipped loudly without chromium, a failure
                  under CI=true. `test` runs it at its end.
  schemathesis [ARGS...]
                  Build chatd, start it (--dev --ephemeral) and run schemathesis
                  with every check against its OpenAPI document (settings in
                  schemathesis.toml; ARGS go to `st run`). Skipped loudly
                  without schemathesis, a failure under CI=true. `test` runs
                  it after the tests.
  fmt [ARGS...]   Format the whole workspace (`cargo fmt --all [ARGS]`).
  help            Show this message.

Environment used by `test`:
  DATABASE_URL    MySQL/MariaDB server (default mysql://root@127.0.0.1:3306).
                  If nothing answers there and `mariadbd` is installed, a
                  throwaway server is started under target/mariadb.
  REDIS_URL       Redis server (default redis://127.0.0.1:6379). If nothing
                  answers and `redis-server` is installed, a throwaway server
                  is started under target/redis.
  CI=true         A missing MySQL or Redis becomes a hard failure instead of a
                  skip, and CHAT_REQUIRE_MYSQL=1 / CHAT_REQUIRE_REDIS=1 are
                  passed to the tests.
";

fn main() -> ExitCode {
    match dispatch() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!();
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the task name and runs the matching task.
fn dispatch() -> Result<()> {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        let arg = arg
            .into_string()
            .map_err(|raw| anyhow::anyhow!("argument is not valid UTF-8: {raw:?}"))?;
        args.push(arg);
    }
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => {
            eprint!("{HELP}");
            bail!("no task given");
        }
    };
    match task {
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        "test" | "ci" => test::run(rest),
        "bench" => bench::run(rest),
        "e2e" => e2e::run(rest),
        "schemathesis" => schemathesis::run(rest),
        "fmt" => fmt(rest),
        other => {
            eprint!("{HELP}");
            bail!("unknown task `{other}`");
        }
    }
}

/// `cargo xtask fmt`: formats every package of the workspace.
fn fmt(extra: &[String]) -> Result<()> {
    let mut command = cmd::cargo();
    command.args(["fmt", "--all"]).args(extra);
    cmd::run(&mut command).context("formatting failed")
}
