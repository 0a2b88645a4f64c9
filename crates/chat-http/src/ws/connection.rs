//! One WebSocket connection: a controller task that reads client frames, answers them,
//! pings, and enforces every limit and deadline, and a writer task that drains the
//! connection's bounded outbound queue into the socket. The hub only ever queues, so a
//! slow socket stalls its own writer and nobody else.
//!
//! Becoming ready (and resuming): the controller tells the writer to hold what the hub
//! queues, attaches to the hub (so no live change can slip by), replays what the client
//! missed since its token page by page straight to the writer, sends `ready` with the
//! token to keep, then releases the held frames. The writer drops every frame whose
//! position it has already sent or that the replay covered ([`SentPositions`]): no gap,
//! no duplicate. While it holds frames (until the last held one is written) the writer
//! keeps moving what the hub queues into its hold, also while it waits on the socket, so
//! a burst of live events during a replay waits there (up to [`HELD_FRAMES`]) instead of
//! filling the hub's queue of a client that reads.
//!
//! The controller steers the writer through [`Steering`]: each command (a replayed
//! frame, an `error`, `ready`, the release) waits at most
//! [`WsConfig::replay_frame_deadline`] for room, so a client that stops reading while it
//! resumes is closed as a slow consumer (4008) instead of holding its connection, its
//! replay and its held frames for ever.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, MessageStream, ProtocolError, Session};
use bytestring::ByteString;
use chat_domain::{FeedPos, UserId};
use chat_service::{ServiceError, SyncLimit, SyncToken};
use futures::{FutureExt as _, StreamExt as _};
use prometheus::IntGauge;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use super::dedup::SentPositions;
use super::protocol::{self, ClientFrame, FrameError, Reply};
use crate::AppState;
use crate::error::ApiError;
use crate::realtime::{Realtime, WsConfig, frame};
use crate::sync_token;
use crate::wire::MessageOut;
use chat_realtime::{Connection, Hub, Offer, Outgoing};

/// How many frames the writer holds back from the hub while a replay runs; past it the
/// hub's own queue fills and the connection is kicked as a slow consumer (4008), like
/// any client that cannot keep up.
const HELD_FRAMES: usize = 10_000;

/// How many replay frames may wait for the writer before the replay waits in turn.
const STEER_QUEUE: usize = 64;

/// Close codes of the protocol (see `docs/websocket.md`).
pub(crate) mod close {
    /// The server is shutting down.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// A text frame that is not UTF-8.
    pub(crate) const INVALID_PAYLOAD: u16 = 1007;
    /// Authentication failed, timed out or expired.
    pub(crate) const POLICY: u16 = 1008;
    /// A frame larger than the limit.
    pub(crate) const TOO_BIG: u16 = 1009;
    /// Authentication could not be checked (the user directory is unavailable).
    pub(crate) const INTERNAL: u16 = 1011;
    /// Events may have been missed: reconnect and catch up.
    pub(crate) const RESYNC: u16 = 1012;
    /// Two pings in a row went unanswered.
    pub(crate) const PING_TIMEOUT: u16 = 4000;
    /// The client did not read its events fast enough.
    pub(crate) const SLOW_CONSUMER: u16 = 4008;
    /// The user already has the most WebSockets open that they may.
    pub(crate) const TOO_MANY_CONNECTIONS: u16 = 4029;
}

/// A caller whose token has been verified.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authenticated {
    pub(crate) user: UserId,
    /// When the token stops being valid.
    pub(crate) expires_at: Option<Instant>,
}

/// Counts the connection in the open-WebSockets gauge while it lives.
struct OpenGauge(IntGauge);

impl OpenGauge {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

enum Next {
    Continue,
    /// The server closes the connection.
    Close(CloseReason),
    /// The client closed the connection; the server answers in kind.
    Echo(CloseReason),
    /// The client went away without a close frame.
    Gone,
}

fn reason(code: u16, description: &str) -> CloseReason {
    CloseReason {
        code: CloseCode::from(code),
        description: Some(description.to_owned()),
    }
}

/// Runs one connection to its end. `authenticated` is set when the handshake carried a
/// valid `Authorization` header; otherwise the first frame must be `auth`. `since` is the
/// handshake's sync token, if any (an `auth` frame's own `since` replaces it).
pub(crate) async fn run(
    state: web::Data<AppState>,
    realtime: Arc<Realtime>,
    session: Session,
    stream: MessageStream,
    authenticated: Option<Authenticated>,
    since: Option<SyncToken>,
) {
    let _open = OpenGauge::new(state.metrics.open_websockets().clone());
    let config = realtime.config().clone();
    let hub = Arc::clone(realtime.hub());
    let (connection, queue) = hub.connection(config.outbound_queue);
    let (drain, drain_signal) = tokio::sync::oneshot::channel();
    let (sender, steering) = mpsc::channel(STEER_QUEUE);
    let steer = Steering {
        sender,
        deadline: config.replay_frame_deadline,
    };
    let writer = actix_web::rt::spawn(write_loop(session.clone(), queue, steering, drain_signal));
    let mut messages = stream
        .max_frame_size(config.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(config.max_frame_bytes);
    let mut shutdown = hub.shutdown_signal();
    let mut resync = hub.resync_signal();
    let mut ping = interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let auth_deadline = Instant::now() + config.auth_timeout;

    let mut link = Link {
        state,
        hub,
        config,
        connection,
        steer,
        since,
        user: None,
        expires_at: None,
        missed_pongs: 0,
    };
    // A user over the connection cap is closed (4029) before `ready`.
    let mut refused = match authenticated {
        Some(caller) => link.become_ready(caller, None).await.err(),
        None => None,
    };

    // (close reason, the client closed first, flush what is queued before closing)
    let close = loop {
        if let Some(refused) = refused.take() {
            break Some((refused, false, false));
        }
        let expiry = link.expires_at;
        tokio::select! {
            () = link.connection.kicked() => {
                break Some((reason(close::SLOW_CONSUMER, "slow consumer"), false, false));
            }
            _ = shutdown.wait_for(|down| *down) => {
                break Some((reason(close::GOING_AWAY, "server shutting down"), false, true));
            }
            Ok(()) = resync.changed() => {
                break Some((reason(close::RESYNC, "events may have been missed; reconnect"), false, false));
            }
            () = sleep_until(auth_deadline), if link.user.is_none() => {
                break Some((reason(close::POLICY, "authentication timed out"), false, false));
            }
            () = sleep_until(expiry.unwrap_or(auth_deadline)), if expiry.is_some() => {
                break Some((reason(close::POLICY, "the token has expired"), false, false));
            }
            _ = ping.tick() => {
                if link.missed_pongs >= link.config.max_missed_pongs {
                    break Some((reason(close::PING_TIMEOUT, "ping timeout"), false, false));
                }
                link.missed_pongs += 1;
                link.push(Outgoing::Ping);
            }
            message = messages.next() => match link.on_message(message).await {
                Next::Continue => {}
                Next::Close(reason) => break Some((reason, false, false)),
                Next::Echo(reason) => break Some((reason, true, true)),
                Next::Gone => break None,
            },
        }
    };

    if let Some(user) = link.user {
        link.hub.detach(user, &link.connection);
    }
    let flush = close.as_ref().is_some_and(|(_, _, flush)| *flush);
    if flush {
        // On a shutdown or a client's close, what is queued (the ack of a send that was
        // just committed, say) still goes out, within a short bound.
        let _ = drain.send(());
        let abort = writer.abort_handle();
        if tokio::time::timeout(link.config.close_timeout, writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    } else {
        writer.abort();
        // The writer's end (cancelled or finished) is all that matters here.
        let _ = writer.await;
    }
    let Some((reason, client_closed, _)) = close else {
        return;
    };
    tracing::debug!(code = ?reason.code, description = ?reason.description, "closing websocket");
    // Closing the last handle ends the response, and with it the TCP connection. Keep one
    // until the client has answered our close frame, so that a client writing at that
    // moment does not get a reset that discards the close frame before it reads it.
    let keep_open = session.clone();
    let deadline = Instant::now() + link.config.close_timeout;
    let _ = tokio::time::timeout_at(deadline, session.close(Some(reason))).await;
    if !client_closed {
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(Ok(message)) = messages.next().await {
                if matches!(message, AggregatedMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    drop(keep_open);
}

/// What the controller tells the writer, ahead of anything the hub queued.
#[derive(Debug)]
enum Steer {
    /// Hold what the hub queues from now on (sent before attaching to the hub).
    Hold,
    /// Send this text now: a replayed event, an `error` or `ready` while catching up.
    Send(ByteString),
    /// Everything at or below this position has been sent or covered: send what was
    /// held (without those), then what the hub queues, as it comes.
    Release(FeedPos),
}

/// Sends what is queued, in order, until the queue or the socket closes; once `drain`
/// fires, sends what is queued at that moment and returns. `steer` comes first: it holds
/// and releases the hub's frames and carries the replay.
async fn write_loop(
    session: Session,
    queue: mpsc::Receiver<Outgoing>,
    mut steer: mpsc::Receiver<Steer>,
    mut drain: tokio::sync::oneshot::Receiver<()>,
) {
    let mut writer = Writer {
        session,
        queue,
        held: None,
        sent: SentPositions::default(),
    };
    loop {
        let room = writer.has_room();
        let done = tokio::select! {
            biased;
            Some(command) = steer.recv() => writer.steer(command).await,
            item = writer.queue.recv(), if room => match item {
                Some(item) => writer.take(item).await,
                None => return,
            },
            _ = &mut drain => {
                if writer.held.is_none() {
                    while let Ok(item) = writer.queue.try_recv() {
                        if writer.take(item).await.is_err() {
                            return;
                        }
                    }
                }
                return;
            }
        };
        if done.is_err() {
            return;
        }
    }
}

/// The writer's state.
struct Writer {
    session: Session,
    /// What the hub queues for this connection.
    queue: mpsc::Receiver<Outgoing>,
    /// What the hub queued while a replay runs, until the release has written it all.
    held: Option<VecDeque<Outgoing>>,
    /// The stored changes sent.
    sent: SentPositions,
}

impl Writer {
    /// Whether the hub's frames may be taken now: always, unless the hold is full.
    fn has_room(&self) -> bool {
        self.held
            .as_ref()
            .is_none_or(|held| held.len() < HELD_FRAMES)
    }

    async fn steer(&mut self, command: Steer) -> Result<(), actix_ws::Closed> {
        match command {
            Steer::Hold => {
                self.held.get_or_insert_with(VecDeque::new);
                Ok(())
            }
            Steer::Send(text) => self.send(Outgoing::Text(text)).await,
            Steer::Release(covered) => {
                self.sent.raise_floor(covered);
                // Oldest first; what the hub queues meanwhile joins the hold at the back
                // (see `send`), so it goes out after them, and then the hub's frames go
                // straight out again.
                while let Some(item) = self.held.as_mut().and_then(VecDeque::pop_front) {
                    self.send(item).await?;
                }
                self.held = None;
                Ok(())
            }
        }
    }

    /// Holds `item` while a replay runs, else [`Writer::send`]s it.
    async fn take(&mut self, item: Outgoing) -> Result<(), actix_ws::Closed> {
        if let Some(held) = &mut self.held {
            held.push_back(item);
            return Ok(());
        }
        self.send(item).await
    }

    /// Writes `item` unless it is a stored change already sent. While frames are held,
    /// what the hub has queued is moved into the hold first, and what it queues while the
    /// write waits (for the client to read) too, up to [`HELD_FRAMES`]: a replay, however
    /// long, does not fill the hub's queue of a client that reads.
    async fn send(&mut self, item: Outgoing) -> Result<(), actix_ws::Closed> {
        if let Outgoing::Text(text) = &item {
            if let Some(pos) = frame::pos_of(text) {
                if !self.sent.admit(pos) {
                    return Ok(());
                }
            }
        }
        let Self {
            session,
            queue,
            held,
            ..
        } = self;
        let Some(held) = held else {
            return write(session, item).await;
        };
        while held.len() < HELD_FRAMES {
            match queue.try_recv() {
                Ok(queued) => held.push_back(queued),
                Err(_) => break,
            }
        }
        let mut written = std::pin::pin!(write(session, item));
        loop {
            tokio::select! {
                biased;
                done = &mut written => return done,
                Some(queued) = queue.recv(), if held.len() < HELD_FRAMES => held.push_back(queued),
            }
        }
    }
}

/// Writes one item to the socket.
async fn write(session: &mut Session, item: Outgoing) -> Result<(), actix_ws::Closed> {
    match item {
        Outgoing::Text(text) => session.text(text).await,
        Outgoing::Ping => session.ping(b"").await,
        Outgoing::Pong(bytes) => session.pong(&bytes).await,
    }
}

/// The controller's end of the writer's steering. Every command waits at most `deadline`
/// ([`WsConfig::replay_frame_deadline`]) for room: the writer makes room as the client
/// reads, so a client that stops reading while it resumes (mid-replay, or at its `error`,
/// its `ready` or the release) is closed as a slow consumer (4008) instead of holding its
/// connection, its replay and its held frames for ever.
struct Steering {
    sender: mpsc::Sender<Steer>,
    deadline: Duration,
}

impl Steering {
    /// Hands `command` to the writer: 4008 past the deadline, 1001 once the writer is
    /// gone (the connection is closing anyway).
    async fn send(&self, command: Steer) -> Result<(), CloseReason> {
        match tokio::time::timeout(self.deadline, self.sender.send(command)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(reason(close::GOING_AWAY, "the connection is closing")),
            Err(_) => Err(reason(close::SLOW_CONSUMER, "slow consumer")),
        }
    }
}

/// The controller's state.
struct Link {
    state: web::Data<AppState>,
    hub: Arc<Hub>,
    config: WsConfig,
    connection: Arc<Connection>,
    /// The writer's steering.
    steer: Steering,
    /// The handshake's sync token.
    since: Option<SyncToken>,
    /// Set once authenticated.
    user: Option<UserId>,
    expires_at: Option<Instant>,
    missed_pongs: u32,
}

impl Link {
    /// Queues a reply; a full queue kicks the connection like any slow consumer.
    fn push(&self, item: Outgoing) {
        if self.connection.offer(item, false) == Offer::Overflow {
            tracing::warn!("slow consumer kicked while replying");
        }
    }

    fn reply(&self, reply: &Reply) {
        self.push(Outgoing::Text(reply.encode()));
    }

    /// Starts delivering events: holds the hub's frames, attaches, catches up from the
    /// sync token (the `auth` frame's `since`, else the handshake's), sends `ready`, then
    /// releases the held frames; refuses (4029) a user who already has the most
    /// connections allowed on this node. `since` is the `auth` frame's token as sent.
    async fn become_ready(
        &mut self,
        caller: Authenticated,
        since: Option<String>,
    ) -> Result<(), CloseReason> {
        self.steer.send(Steer::Hold).await?;
        if !self.hub.try_attach(
            caller.user,
            &self.connection,
            self.config.max_connections_per_user,
            None,
        ) {
            return Err(reason(
                close::TOO_MANY_CONNECTIONS,
                "too many connections for this user",
            ));
        }
        self.user = Some(caller.user);
        self.expires_at = caller.expires_at;
        let since = match since {
            Some(text) => Some(sync_token::decode("since", &text)),
            None => self.since.map(Ok),
        };
        let (resumed, next) = self.catch_up(caller.user, since).await?;
        let ready = Reply::ready(caller.user, resumed, next.as_ref().map(sync_token::encode));
        self.steer.send(Steer::Send(ready.encode())).await?;
        // Without a position (the feed was unreadable) nothing is taken as covered.
        let covered = next.map_or(FeedPos::ZERO, |token| token.pos);
        self.steer.send(Steer::Release(covered)).await
    }

    /// Replays what `user` missed since `since` to the writer; answers whether it did and
    /// the token that `ready` carries. A token the server cannot resume from (malformed,
    /// of another feed, older than the retention) is answered with an `error` frame and a
    /// fresh token (the client reloads); a store that cannot be read closes the
    /// connection (1011), so that the client retries with the token it has.
    async fn catch_up(
        &self,
        user: UserId,
        since: Option<Result<SyncToken, ApiError>>,
    ) -> Result<(bool, Option<SyncToken>), CloseReason> {
        let unavailable = || {
            reason(
                close::INTERNAL,
                "missed events cannot be read now; retry later",
            )
        };
        let service = &self.state.service;
        let mut token = match since {
            None => return Ok((false, self.head().await)),
            Some(Err(malformed)) => {
                self.steer_error(&malformed).await?;
                return Ok((false, self.head().await));
            }
            Some(Ok(token)) => token,
        };
        loop {
            let page = match service.sync(user, Some(token), SyncLimit::MAX).await {
                Ok(page) => page,
                Err(ServiceError::SyncTokenExpired) => {
                    self.steer_error(&ApiError::Service(ServiceError::SyncTokenExpired))
                        .await?;
                    return Ok((false, self.head().await));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "websocket catch-up failed");
                    return Err(unavailable());
                }
            };
            for synced in &page.events {
                let text = frame::event_text(&synced.event, Some(synced.pos)).map_err(|err| {
                    tracing::error!(error = %err, "replayed event not encoded");
                    unavailable()
                })?;
                // A client that stops reading mid-replay blocks the writer, then this
                // send: past `replay_frame_deadline` it is dropped as a slow consumer.
                self.steer.send(Steer::Send(ByteString::from(text))).await?;
            }
            token = page.next;
            if !page.has_more {
                return Ok((true, Some(token)));
            }
            if self.connection.kicked().now_or_never().is_some() {
                return Err(reason(close::SLOW_CONSUMER, "slow consumer"));
            }
        }
    }

    /// The feed's head, for a client that starts afresh; `None` (logged) when the store
    /// cannot say.
    async fn head(&self) -> Option<SyncToken> {
        match self.state.service.feed_head().await {
            Ok(head) => Some(head),
            Err(err) => {
                tracing::warn!(error = %err, "feed head unavailable for ready");
                None
            }
        }
    }

    /// Sends an `error` frame while catching up (the hub's frames are held).
    async fn steer_error(&self, error: &ApiError) -> Result<(), CloseReason> {
        self.steer
            .send(Steer::Send(Reply::error(None, error).encode()))
            .await
    }

    async fn on_message(
        &mut self,
        message: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Next {
        match message {
            None => Next::Gone,
            Some(Ok(AggregatedMessage::Text(text))) => self.on_text(&text).await,
            Some(Ok(AggregatedMessage::Binary(_))) => {
                if self.user.is_none() {
                    return Next::Close(reason(close::POLICY, "the first frame must be auth"));
                }
                let error =
                    ApiError::field("frame", "binary frames are not supported; send JSON text");
                self.reply(&Reply::error(None, &error));
                Next::Continue
            }
            Some(Ok(AggregatedMessage::Ping(bytes))) => {
                self.push(Outgoing::Pong(bytes));
                Next::Continue
            }
            Some(Ok(AggregatedMessage::Pong(_))) => {
                self.missed_pongs = 0;
                Next::Continue
            }
            Some(Ok(AggregatedMessage::Close(client_reason))) => {
                Next::Echo(client_reason.unwrap_or_else(|| CloseReason::from(CloseCode::Normal)))
            }
            Some(Err(ProtocolError::Overflow)) => {
                Next::Close(reason(close::TOO_BIG, "frame too large"))
            }
            Some(Err(ProtocolError::Io(err))) if err.to_string().contains("continuation size") => {
                Next::Close(reason(close::TOO_BIG, "message too large"))
            }
            Some(Err(ProtocolError::Io(err))) if err.kind() == std::io::ErrorKind::InvalidData => {
                Next::Close(reason(close::INVALID_PAYLOAD, "text frames must be UTF-8"))
            }
            Some(Err(err)) => {
                tracing::debug!(error = %err, "websocket protocol error");
                Next::Close(reason(u16::from(CloseCode::Protocol), "protocol error"))
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Next {
        let Some(user) = self.user else {
            return match protocol::parse(text) {
                Ok(ClientFrame::Auth { token, since }) => match self.authenticate(&token).await {
                    Ok(caller) => match self.become_ready(caller, since).await {
                        Ok(()) => Next::Continue,
                        Err(refused) => Next::Close(refused),
                    },
                    Err(next) => next,
                },
                _ => Next::Close(reason(close::POLICY, "the first frame must be auth")),
            };
        };
        let frame = match protocol::parse(text) {
            Ok(frame) => frame,
            Err(FrameError { request_id, error }) => {
                self.reply(&Reply::error(request_id, &error));
                return Next::Continue;
            }
        };
        let service = &self.state.service;
        match frame {
            // A `since` on a connection that is already live is ignored: it is up to date.
            ClientFrame::Auth { token, .. } => match self.authenticate(&token).await {
                // A fresh token for the same user extends the connection's life.
                Ok(caller) if caller.user == user => {
                    self.expires_at = caller.expires_at;
                    self.reply(&Reply::ready(user, false, None));
                }
                Ok(_) => {
                    let error = ApiError::Service(chat_service::ServiceError::Forbidden(
                        "a connection cannot change its user",
                    ));
                    self.reply(&Reply::error(None, &error));
                }
                Err(next) => return next,
            },
            ClientFrame::Send {
                request_id,
                conversation_id,
                message,
            } => match service.send_message(user, conversation_id, message).await {
                Ok(sent) => {
                    if sent.created {
                        self.state.metrics.message_sent();
                    }
                    self.reply(&Reply::Ack {
                        request_id,
                        message: Some(MessageOut::from(&sent.view)),
                        created: Some(sent.created),
                    });
                }
                Err(err) => self.reply(&Reply::error(request_id, &ApiError::from(err))),
            },
            ClientFrame::Typing {
                request_id,
                conversation_id,
                is_typing,
            } => {
                match service.typing(user, conversation_id, is_typing).await {
                    // Over the typing budget the frame is dropped silently: typing is a
                    // hint, and answering every extra frame would cost more than it.
                    Err(chat_service::ServiceError::RateLimited { .. }) => {}
                    done => self.answer(request_id, done),
                }
            }
            ClientFrame::Read {
                request_id,
                conversation_id,
                up_to,
            } => {
                let done = service.mark_read(user, conversation_id, up_to).await;
                self.answer(request_id, done.map(|_| ()));
            }
            ClientFrame::Ping { request_id } => self.reply(&Reply::Pong { request_id }),
        }
        Next::Continue
    }

    /// Acks (when the client asked with a `request_id`) or reports the failure.
    fn answer(
        &self,
        request_id: Option<serde_json::Value>,
        done: Result<(), chat_service::ServiceError>,
    ) {
        match done {
            Ok(()) if request_id.is_some() => self.reply(&Reply::Ack {
                request_id,
                message: None,
                created: None,
            }),
            Ok(()) => {}
            Err(err) => self.reply(&Reply::error(request_id, &ApiError::from(err))),
        }
    }

    /// Verifies an `auth` frame's token (provisioning the user like the REST API does).
    async fn authenticate(&self, token: &str) -> Result<Authenticated, Next> {
        match super::authenticate(&self.state, token).await {
            Ok(caller) => Ok(caller),
            Err(ApiError::Unauthorized(why)) => Err(Next::Close(reason(close::POLICY, why))),
            Err(err) => {
                tracing::warn!(error = %err, "websocket authentication unavailable");
                Err(Next::Close(reason(
                    close::INTERNAL,
                    "authentication is unavailable; retry later",
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A steering whose writer takes `room` commands and reads none.
    fn stalled(room: usize, deadline: Duration) -> (Steering, mpsc::Receiver<Steer>) {
        let (sender, writer) = mpsc::channel(room);
        (Steering { sender, deadline }, writer)
    }

    fn code(refused: &CloseReason) -> u16 {
        u16::from(refused.code)
    }

    #[tokio::test]
    async fn a_command_the_writer_has_no_room_for_is_a_slow_consumer_at_the_deadline() {
        let deadline = Duration::from_millis(200);
        let (steer, _writer) = stalled(1, deadline);
        steer.send(Steer::Send("replayed".into())).await.unwrap();
        // `ready`, the release and an `error` wait like a replayed frame.
        for command in [
            Steer::Send("ready".into()),
            Steer::Release(FeedPos::ZERO),
            Steer::Send("error".into()),
        ] {
            let asked = Instant::now();
            let refused = tokio::time::timeout(Duration::from_secs(5), steer.send(command))
                .await
                .expect("answered at the deadline, not waited on for ever")
                .unwrap_err();
            assert_eq!(code(&refused), close::SLOW_CONSUMER);
            assert!(asked.elapsed() >= deadline, "{:?}", asked.elapsed());
        }
    }

    #[tokio::test]
    async fn a_command_passes_once_the_writer_makes_room_within_the_deadline() {
        let (steer, mut writer) = stalled(1, Duration::from_secs(5));
        steer.send(Steer::Hold).await.unwrap();
        let reading = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut taken = Vec::new();
            while let Some(command) = writer.recv().await {
                taken.push(command);
            }
            taken
        });
        steer.send(Steer::Release(FeedPos::ZERO)).await.unwrap();
        drop(steer);
        let taken = reading.await.unwrap();
        assert!(
            matches!(taken[..], [Steer::Hold, Steer::Release(_)]),
            "{taken:?}"
        );
    }

    #[tokio::test]
    async fn a_writer_that_is_gone_closes_with_1001_at_once() {
        let (steer, writer) = stalled(1, Duration::from_secs(60));
        drop(writer);
        let refused = tokio::time::timeout(Duration::from_secs(5), steer.send(Steer::Hold))
            .await
            .expect("at once")
            .unwrap_err();
        assert_eq!(code(&refused), close::GOING_AWAY);
    }
}
