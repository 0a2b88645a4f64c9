//! [`WsConfig`]: the limits and timings of WebSocket connections, with production
//! defaults; tests shorten the timings.

use std::time::Duration;

/// Limits and timings of WebSocket connections. (How long events wait for a missing
/// predecessor is the transport's: `chat_realtime::RealtimeSettings`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// The largest frame (or reassembled fragmented message) a client may send; larger
    /// ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// How long a connection without an `Authorization` header has to send its `auth`
    /// frame before it is closed with 1008.
    pub auth_timeout: Duration,
    /// How often the server pings each connection.
    pub ping_interval: Duration,
    /// After this many pings in a row without a pong the connection is closed with 4000.
    pub max_missed_pongs: u32,
    /// Frames queued for one connection before it counts as a slow consumer. Typing
    /// events are dropped once the queue is half full; a full queue closes the connection
    /// with 4008. The default holds two whole relay batches
    /// ([`chat_service::RELAY_BATCH`]): a relay catching up after an outage hands a
    /// connection up to a batch at once, without waiting for its writer, and a client that
    /// reads must not be taken for a slow one. (A queue allocates as it fills: an idle
    /// connection costs the same whatever the bound.)
    pub outbound_queue: usize,
    /// How long each frame of a resume (`since`): a replayed event, an `error`, `ready`,
    /// and the release of the live events held back meanwhile, may wait for room in the
    /// connection's writer; past it the client, which stopped reading while it resumed,
    /// is closed with 4008 instead of holding its connection, its replay and its held
    /// events for ever.
    pub replay_frame_deadline: Duration,
    /// How long the server tries to get a close frame out before dropping the connection.
    pub close_timeout: Duration,
    /// The most WebSockets one user may have open on this node; one more is closed with
    /// 4029 once authenticated.
    pub max_connections_per_user: usize,
    /// Browser origins (`Origin` header, exact match such as `https://app.example.com`)
    /// allowed to open a WebSocket; `*` allows any. Requests without `Origin` (native
    /// clients) are not checked.
    pub allowed_origins: Vec<String>,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            max_missed_pongs: 2,
            outbound_queue: 1024,
            replay_frame_deadline: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            max_connections_per_user: 20,
            allowed_origins: Vec::new(),
        }
    }
}

impl WsConfig {
    /// Whether a handshake with this `Origin` header value may proceed.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/');
        self.allowed_origins.iter().any(|allowed| {
            allowed == "*"
                || allowed
                    .trim()
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(origin)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_queue_holds_two_relay_batches() {
        assert!(WsConfig::default().outbound_queue >= 2 * chat_service::RELAY_BATCH);
    }

    #[test]
    fn origins_match_exactly_up_to_case_and_trailing_slash() {
        let config = WsConfig {
            allowed_origins: vec!["https://app.example.com".to_owned()],
            ..WsConfig::default()
        };
        let cases = [
            ("https://app.example.com", true),
            ("https://APP.example.com/", true),
            ("http://app.example.com", false),
            ("https://app.example.com.evil.test", false),
            ("null", false),
        ];
        for (origin, allowed) in cases {
            assert_eq!(config.origin_allowed(origin), allowed, "{origin}");
        }
        assert!(!WsConfig::default().origin_allowed("https://app.example.com"));
        let any = WsConfig {
            allowed_origins: vec!["*".to_owned()],
            ..WsConfig::default()
        };
        assert!(any.origin_allowed("https://whatever.test"));
    }
}
