//! `cargo xtask test` (and `cargo xtask ci`): the full quality gate.
//!
//! Steps, in order, stopping at the first failure:
//!
//! 1. `cargo fmt --all -- --check`
//! 2. `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//! 3. `cargo deny --offline check licenses bans sources` (supply chain, see `deny.toml`;
//!    advisories need the network, so they are not part of this offline gate). Without
//!    cargo-deny installed the step fails under CI and is skipped, loudly, elsewhere.
//! 4. MySQL and Redis preparation (see [`crate::services`])
//! 5. `cargo nextest run --workspace --all-features [ARGS]` when cargo-nextest
//!    is installed, else `cargo test --workspace --all-features [ARGS]`
//! 6. the **key-ring pass**: the test binaries of the crates that store messages
//!    ([`KEY_RING_PACKAGES`]) run again with `CHAT_TEST_KEY_RING=1`, so every store their
//!    fixtures build seals message text under a generated key ring
//!    (`chat_contract::switch`): every test of those crates passes with and without
//!    encryption at rest. With extra arguments, the same selection runs again instead.
//! 7. with nextest only: `cargo test --workspace --doc --all-features`, since
//!    nextest does not run doctests
//! 8. unless packages were selected: `cargo xtask schemathesis` (the server against its
//!    OpenAPI document, every check; skipped loudly without schemathesis, a failure under
//!    `CI=true`)
//! 9. unless packages were selected: the browser tests of `cargo xtask e2e`
//!    (skipped loudly without chromium and chromedriver, a failure under `CI=true`)
//!
//! Extra arguments go to the test runners of steps 5 and 6. If they select packages
//! (`-p`/`--package`), `--workspace` is dropped and the same selection is
//! applied to the doctests of step 7.

use std::process::Command;
use std::time::Instant;

use anyhow::Result;

use crate::cmd::{self, Steps};
use crate::services::Services;

/// The crates whose tests store messages: the key-ring pass runs them again with
/// [`KEY_RING_SWITCH`] set.
const KEY_RING_PACKAGES: &[&str] = &[
    "chat-contract",
    "chat-memory",
    "chat-mysql",
    "chat-sqlite",
    "chat-service",
    "chatd",
];

/// The environment variable that makes the test fixtures build every store with a key
/// ring (read by `chat_contract::switch`).
const KEY_RING_SWITCH: &str = "CHAT_TEST_KEY_RING";

/// Runs the gate; `extra` is passed to the test runner.
pub(crate) fn run(extra: &[String]) -> Result<()> {
    let started = Instant::now();
    let result = run_steps(extra);
    let took = cmd::elapsed(started.elapsed());
    match &result {
        Ok(()) => cmd::banner(&format!("cargo xtask test: all steps passed in {took}")),
        Err(_) => cmd::banner(&format!("cargo xtask test: FAILED after {took}")),
    }
    result
}

/// Checks the dependency graph against `deny.toml`: licenses, banned crates and sources.
fn supply_chain() -> Result<()> {
    if !cmd::succeeds(cmd::cargo().args(["deny", "--version"])) {
        let lines = [
            "cargo-deny is not installed: licenses, bans and sources were NOT checked".to_owned(),
            "install it with `cargo install --locked cargo-deny` (.ci/run does)".to_owned(),
        ];
        cmd::loud_banner(&lines);
        if cmd::is_ci() {
            anyhow::bail!("cargo-deny is required under CI");
        }
        return Ok(());
    }
    cmd::run(cmd::cargo().args(["deny", "--offline", "check", "licenses", "bans", "sources"]))
}

/// The steps themselves; servers started in step 3 stop when this returns.
fn run_steps(extra: &[String]) -> Result<()> {
    let nextest = cmd::succeeds(cmd::cargo().args(["nextest", "--version"]));
    let selection = package_selection(extra);
    let browser = !selection.picks_packages;
    let whole = !selection.picks_packages;
    let mut steps =
        Steps::new(6 + usize::from(nextest) + usize::from(whole) + usize::from(browser));

    steps.step("cargo fmt --all -- --check", || {
        cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
    })?;

    steps.step(
        "cargo clippy --workspace --all-targets --all-features -- -D warnings",
        || {
            cmd::run(cmd::cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;

    steps.step(
        "cargo deny --offline check licenses bans sources",
        supply_chain,
    )?;

    let services = steps.step("MySQL and Redis", Services::prepare)?;

    let scope: &[&str] = if selection.picks_packages {
        &[]
    } else {
        &["--workspace"]
    };

    let runner = if nextest {
        "cargo nextest run"
    } else {
        "cargo test"
    };
    steps.step(&format!("{runner} (all features)"), || {
        let mut command = cmd::cargo();
        if nextest {
            command.args(["nextest", "run"]);
        } else {
            command.arg("test");
        }
        command.args(scope).arg("--all-features").args(extra);
        run_with(&services, &mut command)
    })?;

    steps.step(
        &format!(
            "KEY-RING PASS: {runner} again with {KEY_RING_SWITCH}=1 (every store sealed at rest)"
        ),
        || {
            let mut command = cmd::cargo();
            if nextest {
                command.args(["nextest", "run"]);
            } else {
                command.arg("test");
            }
            command.args(key_ring_pass_args(nextest, extra));
            command.env(KEY_RING_SWITCH, "1");
            println!(
                "key-ring pass: the stores of {} seal message text under a generated key ring",
                KEY_RING_PACKAGES.join(", ")
            );
            run_with(&services, &mut command)
        },
    )?;

    if nextest {
        steps.step("cargo test --doc (doctests; nextest skips them)", || {
            let mut command = cmd::cargo();
            command
                .arg("test")
                .args(scope)
                .args(&selection.args)
                .args(["--doc", "--all-features"]);
            run_with(&services, &mut command)
        })?;
    }

    if whole {
        steps.step(
            "schemathesis, every check (cargo xtask schemathesis)",
            || crate::schemathesis::check(&[]),
        )?;
    }

    if browser {
        steps.step("browser tests (cargo xtask e2e)", || {
            crate::e2e::run_with(&services)
        })?;
    }

    drop(services);
    Ok(())
}

/// The arguments of the key-ring pass after `cargo nextest run` (or `cargo test`): the
/// caller's own selection when there is one, else the storage crates. Under nextest the
/// selection is a filter over the whole workspace, so the build of step 5 is reused as
/// it is (selecting with `-p` would unify features differently and rebuild).
fn key_ring_pass_args(nextest: bool, extra: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    if extra.is_empty() {
        if nextest {
            let filter = KEY_RING_PACKAGES
                .iter()
                .map(|package| format!("package({package})"))
                .collect::<Vec<_>>()
                .join(" | ");
            args.extend(["--workspace".to_owned(), "-E".to_owned(), filter]);
        } else {
            for package in KEY_RING_PACKAGES {
                args.extend(["-p".to_owned(), (*package).to_owned()]);
            }
        }
        args.push("--all-features".to_owned());
    } else {
        if !package_selection(extra).picks_packages {
            args.push("--workspace".to_owned());
        }
        args.push("--all-features".to_owned());
        args.extend(extra.iter().cloned());
    }
    args
}

/// Runs a test command with the MySQL/Redis environment applied.
fn run_with(services: &Services, command: &mut Command) -> Result<()> {
    services.apply(command);
    cmd::run(command)
}

/// The package-selection part of the extra arguments.
struct PackageSelection {
    /// Whether `-p`/`--package` was given (then `--workspace` is left out).
    picks_packages: bool,
    /// The `-p`, `--package` and `--exclude` arguments, with their values.
    args: Vec<String>,
}

/// Extracts `-p X`, `-pX`, `--package X`, `--package=X`, `--exclude X` and
/// `--exclude=X` from the cargo part of `extra` (before any `--`).
fn package_selection(extra: &[String]) -> PackageSelection {
    let mut selection = PackageSelection {
        picks_packages: false,
        args: Vec::new(),
    };
    let mut args = extra.iter().take_while(|arg| arg.as_str() != "--");
    while let Some(arg) = args.next() {
        let (takes_value, picks) = match arg.as_str() {
            "-p" | "--package" => (true, true),
            "--exclude" => (true, false),
            other if other.starts_with("--package=") => (false, true),
            other if other.starts_with("--exclude=") => (false, false),
            other if other.starts_with("-p") => (false, true),
            _ => continue,
        };
        selection.picks_packages |= picks;
        selection.args.push(arg.clone());
        if takes_value {
            if let Some(value) = args.next() {
                selection.args.push(value.clone());
            }
        }
    }
    selection
}

#[cfg(test)]
mod tests {
    use super::{key_ring_pass_args, package_selection};

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn finds_package_selection() {
        let selection = package_selection(&strings(&[
            "-p",
            "chat-domain",
            "--package=chat-mysql",
            "--no-fail-fast",
            "--",
            "-p",
            "x",
        ]));
        assert!(selection.picks_packages);
        assert_eq!(
            selection.args,
            strings(&["-p", "chat-domain", "--package=chat-mysql"])
        );
    }

    #[test]
    fn the_key_ring_pass_filters_the_storage_crates_of_the_workspace_build() {
        let args = key_ring_pass_args(true, &[]);
        assert_eq!(args[..2], strings(&["--workspace", "-E"]));
        for package in super::KEY_RING_PACKAGES {
            assert!(args[2].contains(&format!("package({package})")), "{args:?}");
        }
        assert!(args[2].contains("package(chat-mysql) | "), "{args:?}");
        let without_nextest = key_ring_pass_args(false, &[]);
        assert!(
            without_nextest
                .windows(2)
                .any(|w| w == strings(&["-p", "chatd"]))
        );
        assert!(!without_nextest.contains(&"--workspace".to_owned()));
    }

    #[test]
    fn the_key_ring_pass_repeats_the_callers_selection() {
        let args = key_ring_pass_args(true, &strings(&["-p", "chat-sqlite", "some_test"]));
        assert_eq!(
            args,
            strings(&["--all-features", "-p", "chat-sqlite", "some_test"])
        );
        let args = key_ring_pass_args(true, &strings(&["some_test"]));
        assert_eq!(
            args,
            strings(&["--workspace", "--all-features", "some_test"])
        );
    }

    #[test]
    fn exclude_keeps_workspace() {
        let selection = package_selection(&strings(&["--exclude", "chat-http", "some_filter"]));
        assert!(!selection.picks_packages);
        assert_eq!(selection.args, strings(&["--exclude", "chat-http"]));
    }
}

#[cfg(test)]
mod supply_chain_tests {
    use std::path::PathBuf;

    /// Every crate root of the workspace (libraries, binaries, xtask).
    fn crate_roots() -> Vec<PathBuf> {
        let root = crate::cmd::workspace_root();
        let mut roots = vec![root.join("xtask/src/main.rs")];
        for entry in std::fs::read_dir(root.join("crates")).unwrap() {
            let src = entry.unwrap().path().join("src");
            for file in ["lib.rs", "main.rs"] {
                if src.join(file).is_file() {
                    roots.push(src.join(file));
                }
            }
        }
        roots
    }

    #[test]
    fn rule_every_crate_root_forbids_unsafe_code() {
        let roots = crate_roots();
        assert!(roots.len() > 10, "{roots:?}");
        let missing: Vec<_> = roots
            .iter()
            .filter(|path| {
                !std::fs::read_to_string(path)
                    .unwrap()
                    .lines()
                    .any(|line| line.trim() == "#![forbid(unsafe_code)]")
            })
            .collect();
        assert!(
            missing.is_empty(),
            "no #![forbid(unsafe_code)] in {missing:?}"
        );
    }

    #[test]
    fn ci_installs_the_pinned_schemathesis_when_missing() {
        let ci = std::fs::read_to_string(crate::cmd::workspace_root().join(".ci/run")).unwrap();
        let pinned = format!("SCHEMATHESIS_VERSION={}", crate::schemathesis::VERSION);
        assert!(ci.contains(&pinned), "{ci}");
        assert!(
            ci.contains("pip install --quiet \"schemathesis==$SCHEMATHESIS_VERSION\""),
            "{ci}"
        );
    }

    #[test]
    fn ci_installs_cargo_deny_when_missing() {
        let ci = std::fs::read_to_string(crate::cmd::workspace_root().join(".ci/run")).unwrap();
        assert!(ci.contains("cargo install --locked cargo-deny"), "{ci}");
    }
}
