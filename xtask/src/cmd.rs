//! Helpers shared by all tasks: locating the workspace, building `cargo`
//! invocations, finding programs, printing banners and running commands.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Width of the `=====` lines around banners.
const BANNER_WIDTH: usize = 78;

/// The workspace root (the parent of the `xtask` package directory).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// A `cargo` command (the same cargo that runs xtask) in the workspace root.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

/// Whether we run under CI (`CI=true`, as set by GitHub Actions, GitLab, ...).
pub(crate) fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| {
        matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "true" | "1" | "yes"
        )
    })
}

/// Whether this process runs with effective user id 0.
pub(crate) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // `/proc/self` is owned by the effective uid of the process.
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// Looks `name` up in `PATH`, then in the sbin directories that are often
/// missing from a non-root `PATH` (Debian installs `mariadbd` in `/usr/sbin`).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Prints a prominent section header.
pub(crate) fn banner(title: &str) {
    let rule = "=".repeat(BANNER_WIDTH);
    println!();
    println!("{rule}");
    println!("==> {title}");
    println!("{rule}");
}

/// Prints an impossible-to-miss warning block on stderr.
pub(crate) fn loud_banner(lines: &[String]) {
    let rule = "!".repeat(BANNER_WIDTH);
    let mut text = String::new();
    let _ = writeln!(text);
    let _ = writeln!(text, "{rule}");
    let _ = writeln!(text, "{rule}");
    for line in lines {
        let _ = writeln!(text, "!!!  {line}");
    }
    let _ = writeln!(text, "{rule}");
    let _ = writeln!(text, "{rule}");
    eprint!("{text}");
}

/// Renders a command the way a user would type it.
pub(crate) fn display(command: &Command) -> String {
    let mut shown = command.get_program().to_string_lossy().into_owned();
    if shown.ends_with("/cargo") {
        "cargo".clone_into(&mut shown);
    }
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        shown.push(' ');
        if arg.is_empty() || arg.contains([' ', '"', '\'']) {
            shown.push_str(&format!("{arg:?}"));
        } else {
            shown.push_str(&arg);
        }
    }
    shown
}

/// Runs `command` with inherited stdio and fails unless it exits with 0.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let shown = display(command);
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not launch `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` silently and reports whether it exited with 0.
pub(crate) fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Formats a duration as seconds with one decimal, or minutes and seconds.
pub(crate) fn elapsed(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = duration.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// A numbered sequence of steps, each announced with a banner and timed.
pub(crate) struct Steps {
    /// Number of steps announced in the banners.
    total: usize,
    /// Number of the step currently running.
    current: usize,
}

impl Steps {
    /// A sequence of `total` steps.
    pub(crate) fn new(total: usize) -> Self {
        Self { total, current: 0 }
    }

    /// Runs one step: prints its banner, runs `body`, reports its duration.
    pub(crate) fn step<T>(&mut self, title: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
        self.current += 1;
        let label = format!("[{}/{}] {title}", self.current, self.total);
        banner(&label);
        let started = Instant::now();
        let result = body().with_context(|| format!("step {label} failed"));
        let took = elapsed(started.elapsed());
        match &result {
            Ok(_) => println!("--> {label}: ok ({took})"),
            Err(_) => eprintln!("--> {label}: FAILED ({took})"),
        }
        result
    }
}
