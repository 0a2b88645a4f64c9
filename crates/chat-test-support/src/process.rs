//! A `chatd` process started by a test: its stderr read on a thread for the process's whole
//! life (a pipe nobody reads would fill, and a closed one would cost the server its log),
//! and the address it announces once it listens.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What a started server told on stderr.
#[derive(Debug)]
pub struct Announced {
    /// The `host:port` of its `http://` line.
    pub address: String,
    /// The lines before that one.
    pub seen: Vec<String>,
    /// The lines after it, as they come.
    pub lines: mpsc::Receiver<String>,
}

/// Spawns `command` (a `chatd serve`) with stdout discarded and stderr read, and waits at
/// most `wait` between two lines for the one that announces its address.
///
/// # Panics
/// When the process cannot be spawned or announces no address in time (the lines seen
/// are in the message): a test cannot go on without its server.
pub fn spawn_announced(command: &mut Command, wait: Duration) -> (Child, Announced) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let stderr = child
        .stderr
        .take()
        .unwrap_or_else(|| panic!("stderr of {command:?} is not piped"));
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps reading after the receiver is gone, so the server never writes to a
        // closed pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut seen = Vec::new();
    let address = loop {
        let line = lines
            .recv_timeout(wait)
            .unwrap_or_else(|_| panic!("no address announced: {seen:#?}"));
        let announced = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(address) = announced {
            break address.to_owned();
        }
        seen.push(line);
    };
    (
        child,
        Announced {
            address,
            seen,
            lines,
        },
    )
}
