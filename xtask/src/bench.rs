//! `cargo xtask bench [--quick|--full]`: builds `chatd` and the load generator in release
//! mode, makes sure MySQL answers (the same way `test` does), and runs `chat-bench`,
//! which writes `target/bench/results.json` and `results.md`.

use anyhow::Result;

use crate::{cmd, services::Services};

/// Runs the benchmarks. `--quick` (the default) finishes in a few minutes on two cores.
pub(crate) fn run(extra: &[String]) -> Result<()> {
    let mut steps = cmd::Steps::new(3);
    steps.step("build chatd and chat-bench (release)", || {
        cmd::run(cmd::cargo().args(["build", "--release", "-p", "chatd", "-p", "chat-bench"]))
    })?;
    let services = steps.step("find or start MySQL and Redis", Services::prepare)?;
    let target = cmd::target_dir();
    let release = target.join("release");
    steps.step("run the scenarios", || {
        let mut bench = std::process::Command::new(release.join("chat-bench"));
        bench
            .arg("--chatd")
            .arg(release.join("chatd"))
            .arg("--out")
            .arg(target.join("bench"))
            .args(extra)
            .current_dir(cmd::workspace_root());
        services.apply(&mut bench);
        cmd::run(&mut bench)
    })?;
    Ok(())
}
