//! Preparation of the external servers the integration suites need.
//!
//! For MySQL (`DATABASE_URL`) and Redis (`REDIS_URL`) the same policy applies:
//!
//! 1. If a server answers (TCP connect) on the host and port of the configured
//!    URL, or of the default URL, it is used as is.
//! 2. Otherwise, if the server binary (`mariadbd`, `redis-server`) is
//!    installed, a throwaway instance is started on a free local port with
//!    all its files under `target/`, and stopped when [`Services`] is dropped.
//! 3. Otherwise the suite is skipped with a loud banner and the URL variable
//!    is removed from the test environment; under `CI=true` the run fails.
//!
//! Under `CI=true`, `CHAT_REQUIRE_MYSQL=1` and `CHAT_REQUIRE_REDIS=1` are also
//! passed to the tests so that they fail instead of skipping silently.

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd;

/// How long a TCP connect may take before the server counts as absent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a throwaway server may take to start answering.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a throwaway server may take to stop after `SIGTERM`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two readiness or liveness checks.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// One external service the tests can use.
struct Spec {
    /// Human name used in messages.
    name: &'static str,
    /// Variable holding the server URL.
    url_var: &'static str,
    /// URL used when `url_var` is unset or empty.
    default_url: &'static str,
    /// Port used when the URL names none.
    default_port: u16,
    /// Variable telling the tests to fail rather than skip without a server.
    require_var: &'static str,
    /// Server program used for a throwaway instance.
    server_binary: &'static str,
    /// Starts a throwaway instance from the given server binary.
    start: fn(&Path) -> Result<Throwaway>,
}

/// MySQL / MariaDB, used by the `chat-mysql` suites.
const MYSQL: Spec = Spec {
    name: "MySQL",
    url_var: "DATABASE_URL",
    default_url: "mysql://root@127.0.0.1:3306",
    default_port: 3306,
    require_var: "CHAT_REQUIRE_MYSQL",
    server_binary: "mariadbd",
    start: start_mariadb,
};

/// Redis, used by the fan-out / rate-limit suites.
const REDIS: Spec = Spec {
    name: "Redis",
    url_var: "REDIS_URL",
    default_url: "redis://127.0.0.1:6379",
    default_port: 6379,
    require_var: "CHAT_REQUIRE_REDIS",
    server_binary: "redis-server",
    start: start_redis,
};

/// The environment the test processes need, and the servers started for them.
///
/// Dropping it stops the throwaway servers.
pub(crate) struct Services {
    /// Variables to set (`Some`) or remove (`None`) in the test processes.
    env: Vec<(&'static str, Option<String>)>,
    /// Throwaway servers, stopped on drop.
    servers: Vec<Throwaway>,
}

impl Services {
    /// Finds or starts MySQL and Redis; see the module documentation.
    pub(crate) fn prepare() -> Result<Self> {
        let mut services = Self {
            env: Vec::new(),
            servers: Vec::new(),
        };
        for spec in [&MYSQL, &REDIS] {
            services
                .prepare_one(spec)
                .with_context(|| format!("preparing {} failed", spec.name))?;
        }
        Ok(services)
    }

    /// The value prepared for `name` (e.g. `DATABASE_URL`), if the service is there.
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(var, _)| *var == name)
            .and_then(|(_, value)| value.as_deref())
    }

    /// Applies the prepared environment to a test command.
    pub(crate) fn apply(&self, command: &mut Command) {
        for (name, value) in &self.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
    }

    /// Finds or starts one service and records the variables for the tests.
    fn prepare_one(&mut self, spec: &Spec) -> Result<()> {
        let ci = cmd::is_ci();
        let url = std::env::var(spec.url_var)
            .ok()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| spec.default_url.to_owned());
        let (host, port) = host_and_port(&url, spec.default_port)
            .with_context(|| format!("cannot parse {}={}", spec.url_var, redact(&url)))?;

        let url = if answers(&host, port) {
            println!(
                "{}: server answers at {host}:{port}; {}={}",
                spec.name,
                spec.url_var,
                redact(&url)
            );
            url
        } else if let Some(binary) = cmd::find_program(spec.server_binary) {
            println!(
                "{}: nothing answers at {host}:{port}; starting a throwaway {}",
                spec.name,
                binary.display()
            );
            let server = (spec.start)(&binary)?;
            let url = server.url.clone();
            println!(
                "{}: throwaway server ready (pid {}); {}={url}",
                spec.name,
                server.child.id(),
                spec.url_var
            );
            self.servers.push(server);
            url
        } else if ci {
            let message = format!(
                "{} suite cannot run: no server at {host}:{port} and no {} installed",
                spec.name, spec.server_binary
            );
            cmd::loud_banner(&[
                message.clone(),
                "CI=true, so this is a failure, not a skip.".to_owned(),
                format!(
                    "Start a server and point {} at it, or install {}.",
                    spec.url_var, spec.server_binary
                ),
            ]);
            bail!(message);
        } else {
            cmd::loud_banner(&[
                format!(
                    "{} suite SKIPPED: no server at {host}:{port} and no {}",
                    spec.name, spec.server_binary
                ),
                format!(
                    "Its tests will not exercise a real server. Start one and set {},",
                    spec.url_var
                ),
                format!(
                    "or install {}. Under CI=true this fails.",
                    spec.server_binary
                ),
            ]);
            self.env.push((spec.url_var, None));
            return Ok(());
        };

        self.env.push((spec.url_var, Some(url)));
        if ci {
            self.env.push((spec.require_var, Some("1".to_owned())));
        }
        Ok(())
    }
}

/// A server process started by xtask, stopped (SIGTERM, then SIGKILL) on drop.
struct Throwaway {
    /// Human name used in messages.
    name: &'static str,
    /// The server process.
    child: Child,
    /// URL the tests use to reach it.
    url: String,
    /// File recording the pid, so that a later run can stop a server left
    /// behind by an interrupted run.
    pid_file: PathBuf,
    /// Log file shown when the server fails to start.
    log: PathBuf,
}

impl Throwaway {
    /// Spawns `command` with output to `output_log`, records the pid and
    /// waits until the server answers on `127.0.0.1:port`.
    fn spawn(
        name: &'static str,
        mut command: Command,
        url: String,
        port: u16,
        dir: &Path,
        output_log: &Path,
        log: PathBuf,
    ) -> Result<Self> {
        let out = File::create(output_log)
            .with_context(|| format!("cannot create {}", output_log.display()))?;
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        println!("$ {}", cmd::display(&command));
        let child = command
            .spawn()
            .with_context(|| format!("cannot launch `{}`", cmd::display(&command)))?;
        let pid_file = dir.join("xtask.pid");
        let mut server = Self {
            name,
            child,
            url,
            pid_file,
            log,
        };
        fs::write(&server.pid_file, format!("{}\n", server.child.id()))
            .with_context(|| format!("cannot write {}", server.pid_file.display()))?;
        server.wait_until_ready(port)?;
        Ok(server)
    }

    /// Polls `127.0.0.1:port` until it answers, the server exits or
    /// [`STARTUP_TIMEOUT`] passes.
    fn wait_until_ready(&mut self, port: u16) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "throwaway {} exited during startup ({status}); end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if answers("127.0.0.1", port) {
                println!(
                    "{}: answering on 127.0.0.1:{port} after {}",
                    self.name,
                    cmd::elapsed(started.elapsed())
                );
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "throwaway {} did not answer on 127.0.0.1:{port} within {}s; end of {}:\n{}",
                    self.name,
                    STARTUP_TIMEOUT.as_secs(),
                    self.log.display(),
                    tail(&self.log)
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let pid = self.child.id();
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(pid, "TERM");
            let started = Instant::now();
            while matches!(self.child.try_wait(), Ok(None)) {
                if started.elapsed() > SHUTDOWN_TIMEOUT {
                    eprintln!(
                        "{}: throwaway server (pid {pid}) ignored SIGTERM; killing it",
                        self.name
                    );
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                thread::sleep(POLL_INTERVAL);
            }
        }
        let _ = fs::remove_file(&self.pid_file);
        println!("{}: stopped throwaway server (pid {pid})", self.name);
    }
}

/// Starts a throwaway MariaDB server with its files under `target/mariadb`.
///
/// The data directory is created once with `mariadb-install-db` and reused by
/// later runs; `root` has an empty password and may connect from 127.0.0.1.
fn start_mariadb(mariadbd: &Path) -> Result<Throwaway> {
    let base = cmd::target_dir().join("mariadb");
    fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let data = base.join("data");
    stop_stale(&base.join("xtask.pid"), &data);

    if !data.join("mysql").is_dir() {
        install_mariadb_data_dir(&base, &data)?;
    }

    let init_file = base.join("init.sql");
    fs::write(
        &init_file,
        "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n\
         GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n",
    )
    .with_context(|| format!("cannot write {}", init_file.display()))?;

    let port = free_port()?;
    let mut socket = base.join("mysqld.sock");
    if socket.as_os_str().len() > 100 {
        // Unix socket paths are limited to 108 bytes.
        socket = std::env::temp_dir().join(format!("xtask-mariadb-{port}.sock"));
    }
    let error_log = base.join("mariadbd.err");
    let _ = fs::remove_file(&error_log);

    let mut command = Command::new(mariadbd);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!(
            "--pid-file={}",
            base.join("mariadbd.pid").display()
        ))
        .arg(format!("--log-error={}", error_log.display()))
        .arg(format!("--init-file={}", init_file.display()))
        .arg("--skip-name-resolve")
        .arg("--character-set-server=utf8mb4")
        .arg("--collation-server=utf8mb4_general_ci")
        .arg("--max-connections=500");
    if cmd::running_as_root() {
        command.arg("--user=root");
    }
    Throwaway::spawn(
        "MySQL",
        command,
        format!("mysql://root@127.0.0.1:{port}"),
        port,
        &base,
        &base.join("mariadbd.out"),
        error_log,
    )
}

/// Creates the MariaDB system tables in `data` (via a temporary directory, so
/// an interrupted initialisation never leaves a half-made `data`).
fn install_mariadb_data_dir(base: &Path, data: &Path) -> Result<()> {
    let install = cmd::find_program("mariadb-install-db")
        .or_else(|| cmd::find_program("mysql_install_db"))
        .ok_or_else(|| anyhow!("mariadbd is installed but mariadb-install-db is not"))?;
    let staging = base.join("data.initialising");
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    if data.exists() {
        // Present but without system tables: unusable, start over.
        fs::remove_dir_all(data).with_context(|| format!("cannot remove {}", data.display()))?;
    }
    let log = base.join("install-db.log");
    let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(install);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", staging.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db");
    if cmd::running_as_root() {
        command.arg("--user=root");
    }
    println!("MySQL: initialising {} (first run only)", data.display());
    println!("$ {}", cmd::display(&command));
    let status = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .with_context(|| format!("cannot launch `{}`", cmd::display(&command)))?;
    if !status.success() {
        bail!(
            "mariadb-install-db failed ({status}); end of {}:\n{}",
            log.display(),
            tail(&log)
        );
    }
    fs::rename(&staging, data)
        .with_context(|| format!("cannot rename {} to {}", staging.display(), data.display()))?;
    Ok(())
}

/// Starts a throwaway Redis server (no persistence) with its files under
/// `target/redis`.
fn start_redis(redis_server: &Path) -> Result<Throwaway> {
    let base = cmd::target_dir().join("redis");
    fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    stop_stale(&base.join("xtask.pid"), &base);
    let port = free_port()?;
    let log = base.join("redis.log");
    let mut command = Command::new(redis_server);
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(&base);
    Throwaway::spawn(
        "Redis",
        command,
        format!("redis://127.0.0.1:{port}"),
        port,
        &base,
        &log,
        log.clone(),
    )
}

/// Stops a throwaway server left running by an interrupted earlier run.
///
/// The pid in `pid_file` is only signalled if that process's working
/// directory is `workdir` (both servers `chdir` into their data directory),
/// so an unrelated process that reused the pid is never touched.
fn stop_stale(pid_file: &Path, workdir: &Path) {
    let pid = fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    if let Some(pid) = pid {
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
        let ours = match (cwd, fs::canonicalize(workdir)) {
            (Some(cwd), Ok(workdir)) => cwd == workdir,
            _ => false,
        };
        if ours && alive(pid) {
            println!("stopping throwaway server (pid {pid}) left behind by an interrupted run");
            signal(pid, "TERM");
            let started = Instant::now();
            while alive(pid) && started.elapsed() < SHUTDOWN_TIMEOUT {
                thread::sleep(POLL_INTERVAL);
            }
            if alive(pid) {
                signal(pid, "KILL");
                thread::sleep(Duration::from_secs(1));
            }
        }
    }
    let _ = fs::remove_file(pid_file);
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Sends a signal with the shell's `kill` (std can only send `SIGKILL`).
fn signal(pid: u32, name: &str) {
    let _ = cmd::succeeds(
        Command::new("sh")
            .args(["-c", r#"kill -s "$1" "$2""#, "sh", name])
            .arg(pid.to_string()),
    );
}

/// Whether something accepts TCP connections on `host:port`.
fn answers(host: &str, port: u16) -> bool {
    let Ok(addresses) = (host, port).to_socket_addrs() else {
        return false;
    };
    addresses
        .into_iter()
        .any(|address| TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).is_ok())
}

/// A local port nobody listens on right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot bind a free local port")?;
    Ok(listener.local_addr()?.port())
}

/// Extracts host and port from `scheme://[user[:password]@]host[:port][/path][?query]`.
fn host_and_port(url: &str, default_port: u16) -> Result<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| anyhow!("unterminated IPv6 address"))?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        Some(port) if !port.is_empty() => port
            .parse()
            .with_context(|| format!("invalid port `{port}`"))?,
        _ => default_port,
    };
    let host = if host.is_empty() { "localhost" } else { host };
    Ok((host.to_owned(), port))
}

/// Hides the password of a URL for printing.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The last lines of a log file, indented, for error messages.
fn tail(path: &Path) -> String {
    const LINES: usize = 25;
    let text = fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|error| format!("(cannot read: {error})"));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LINES);
    lines[start..]
        .iter()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::{host_and_port, redact};

    #[test]
    fn parses_host_and_port() {
        let parse = |url| host_and_port(url, 3306).map_err(|error| error.to_string());
        assert_eq!(
            parse("mysql://root@127.0.0.1:3307/chat?ssl-mode=disabled"),
            Ok(("127.0.0.1".to_owned(), 3307))
        );
        assert_eq!(
            parse("mysql://u:p@ss@db.example"),
            Ok(("db.example".to_owned(), 3306))
        );
        assert_eq!(parse("redis://[::1]:6380/0"), Ok(("::1".to_owned(), 6380)));
        assert_eq!(
            parse("mysql://root@/chat"),
            Ok(("localhost".to_owned(), 3306))
        );
        assert!(parse("mysql://h:notaport").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("mysql://root:secret@127.0.0.1:3306/chat"),
            "mysql://root:***@127.0.0.1:3306/chat"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
