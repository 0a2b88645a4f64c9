//! A TCP proxy to put between a client and a server (such as a store and MySQL) to inject
//! faults without touching the shared server: [`FaultProxy::freeze`] stops forwarding bytes
//! in both directions while keeping every socket open (a frozen server, as seen by its
//! clients), [`FaultProxy::unfreeze`] resumes, and [`FaultProxy::cut_on`] closes the next
//! connection whose client sends a given byte pattern (such as MySQL's `COMMIT`), before
//! or after forwarding it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The MySQL packet of a client's `COMMIT` (command byte `COM_QUERY`, then the text), for
/// [`FaultProxy::cut_on`].
pub const MYSQL_COMMIT: &[u8] = b"\x03COMMIT";

/// When [`FaultProxy::cut_on`] closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The pattern never reaches the server.
    BeforeForwarding,
    /// The pattern reaches the server; none of the server's replies after it reaches the
    /// client.
    AfterForwarding,
}

#[derive(Debug, Default)]
struct Plan {
    cut: Option<(Vec<u8>, Cut)>,
    cuts: usize,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    frozen: watch::Sender<bool>,
    plan: Mutex<Plan>,
}

/// A proxy listening on a loopback port and forwarding to one upstream address. It stops
/// (closing every connection) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free loopback port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (frozen, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            upstream,
            frozen,
            plan: Mutex::new(Plan::default()),
        });
        let accept = tokio::spawn(accept(listener, Arc::clone(&shared)));
        Ok(Self {
            address,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops forwarding in both directions; sockets stay open, bytes wait.
    pub fn freeze(&self) {
        self.shared.frozen.send_replace(true);
    }

    /// Forwards again, the waiting bytes first.
    pub fn unfreeze(&self) {
        self.shared.frozen.send_replace(false);
    }

    /// Closes (both sides of) the next connection whose client sends `pattern` within one
    /// read, as `when` says. Once.
    pub fn cut_on(&self, pattern: &[u8], when: Cut) {
        if let Ok(mut plan) = self.shared.plan.lock() {
            plan.cut = Some((pattern.to_vec(), when));
        }
    }

    /// How many connections [`FaultProxy::cut_on`] has closed.
    pub fn cuts(&self) -> usize {
        self.shared.plan.lock().map(|plan| plan.cuts).unwrap_or(0)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = Vec::new();
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(shared.upstream).await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let (cut, cut_seen) = watch::channel(false);
        let hold = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(cut);
        connections.retain(|task: &JoinHandle<()>| !task.is_finished());
        connections.push(tokio::spawn(upstream(
            client_read,
            server_write,
            Arc::clone(&shared),
            Arc::clone(&cut),
            Arc::clone(&hold),
        )));
        connections.push(tokio::spawn(downstream(
            server_read,
            client_write,
            shared.frozen.subscribe(),
            cut_seen,
            hold,
        )));
    }
    for task in connections {
        task.abort();
    }
}

/// Waits until the proxy is not frozen.
async fn thawed(frozen: &mut watch::Receiver<bool>) {
    let _ = frozen.wait_for(|frozen| !frozen).await;
}

/// Client to server, watching for the cut's pattern.
async fn upstream(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Arc<Shared>,
    cut: Arc<watch::Sender<bool>>,
    hold: Arc<AtomicBool>,
) {
    let mut frozen = shared.frozen.subscribe();
    let mut cut_seen = cut.subscribe();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = cut_seen.wait_for(|cut| *cut) => return,
        };
        let n = match read {
            Ok(n) if n > 0 => n,
            // The client left: close the server's side too.
            _ => {
                cut.send_replace(true);
                return;
            }
        };
        let chunk = &buffer[..n];
        tokio::select! {
            () = thawed(&mut frozen) => {}
            _ = cut_seen.wait_for(|cut| *cut) => return,
        }
        let when = shared.plan.lock().ok().and_then(|mut plan| {
            let when = plan
                .cut
                .as_ref()
                .filter(|(pattern, _)| contains(chunk, pattern))
                .map(|(_, when)| *when)?;
            plan.cut = None;
            plan.cuts += 1;
            Some(when)
        });
        match when {
            Some(Cut::BeforeForwarding) => {
                cut.send_replace(true);
                return;
            }
            Some(Cut::AfterForwarding) => {
                hold.store(true, Ordering::SeqCst);
                let _ = to.write_all(chunk).await;
                let _ = to.flush().await;
                cut.send_replace(true);
                return;
            }
            None => {
                if to.write_all(chunk).await.is_err() {
                    cut.send_replace(true);
                    return;
                }
            }
        }
    }
}

/// Server to client; after a cut after forwarding, forwards nothing more.
async fn downstream(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    mut cut_seen: watch::Receiver<bool>,
    hold: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = cut_seen.wait_for(|cut| *cut) => return,
        };
        let Ok(n) = read else { return };
        if n == 0 {
            return;
        }
        tokio::select! {
            () = thawed(&mut frozen) => {}
            _ = cut_seen.wait_for(|cut| *cut) => return,
        }
        if hold.load(Ordering::SeqCst) {
            let _ = cut_seen.wait_for(|cut| *cut).await;
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
