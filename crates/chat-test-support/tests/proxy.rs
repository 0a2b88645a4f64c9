//! The fault proxy against an echo server: it forwards, holds bytes while frozen (sockets
//! open) and delivers them once unfrozen, and cuts a connection on a pattern before or
//! after forwarding it.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_test_support::proxy::{Cut, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server that also records every byte it received.
async fn echo() -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    record.lock().unwrap().extend_from_slice(&buffer[..n]);
                    if socket.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (address, seen)
}

async fn read_some(socket: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut buffer = [0u8; 1024];
    match tokio::time::timeout(wait, socket.read(&mut buffer)).await {
        Ok(Ok(n)) => Some(buffer[..n].to_vec()),
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn forwards_holds_while_frozen_and_cuts_on_a_pattern() {
    let (server, seen) = echo().await;
    let proxy = FaultProxy::start(server).await.unwrap();
    let mut client = TcpStream::connect(proxy.address()).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    assert_eq!(
        read_some(&mut client, Duration::from_secs(5)).await,
        Some(b"ping".to_vec())
    );

    proxy.freeze();
    client.write_all(b"held").await.unwrap();
    assert_eq!(
        read_some(&mut client, Duration::from_millis(300)).await,
        None,
        "nothing comes back while frozen, and the socket stays open"
    );
    assert!(!seen.lock().unwrap().ends_with(b"held"));
    proxy.unfreeze();
    assert_eq!(
        read_some(&mut client, Duration::from_secs(5)).await,
        Some(b"held".to_vec())
    );

    proxy.cut_on(b"bye", Cut::BeforeForwarding);
    client.write_all(b"bye").await.unwrap();
    assert_eq!(
        read_some(&mut client, Duration::from_secs(5)).await,
        Some(Vec::new()),
        "closed"
    );
    assert_eq!(proxy.cuts(), 1);
    assert!(!seen.lock().unwrap().ends_with(b"bye"), "never forwarded");

    let mut client = TcpStream::connect(proxy.address()).await.unwrap();
    proxy.cut_on(b"last", Cut::AfterForwarding);
    client.write_all(b"last").await.unwrap();
    assert_eq!(
        read_some(&mut client, Duration::from_secs(5)).await,
        Some(Vec::new()),
        "closed without the echo"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(seen.lock().unwrap().ends_with(b"last"), "forwarded");
    assert_eq!(proxy.cuts(), 2);
}
