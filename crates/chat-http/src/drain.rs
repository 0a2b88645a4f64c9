//! Graceful shutdown that answers every request it took. On SIGTERM (or SIGINT) the server
//! first *drains*: requests that arrive from then on are answered `503` at once (with
//! `Connection: close`), every WebSocket is asked to close (1001), and the server waits,
//! at most its shutdown timeout, until every response it started has been sent to the
//! end: a request's once its body is written, a WebSocket's once its close handshake is
//! over (or its close timeout has passed) and the connection ends. Then it stops actix
//! at once: what is left are idle keep-alive connections, which a graceful stop would
//! wait for (each until its keep-alive timer fires, looked at once a second) although
//! no answer is owed on them.
//!
//! Why not actix's own signal handling: on a graceful stop actix-server 2 tells its accept
//! thread to stop before it tells the workers, and the accept thread, as it exits, drops
//! its end of each worker's connection channel; a worker that sees that channel close
//! before its stop message returns at once, dropping its connections with requests in
//! flight (observed in `chatd/tests/shutdown.rs`: a stored message's `201` lost, about one
//! run in ten). Once drained, no response is being produced or sent when actix stops, so
//! whichever way a worker stops, no accepted request loses its answer.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, ResponseError, web};
use chat_service::ServiceError;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::realtime::Realtime;

/// How often [`Drain::wait_idle`] looks at the count of requests in flight.
const POLL: Duration = Duration::from_millis(5);

/// How long the server waits, once no response is left to send, before stopping: the
/// last bytes of a body (or a `503` of the drain, which is not counted) may still sit in
/// the connection's write buffer.
const FLUSH_GRACE: Duration = Duration::from_millis(50);

/// The requests whose response is not sent yet, and whether the server is draining.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    closing: AtomicBool,
    in_flight: AtomicUsize,
}

/// Counts one request in flight until dropped.
struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted in flight until the body has been
/// sent to its end (or dropped, with its connection). A WebSocket's body is its stream
/// of frames, which ends when the connection closes: a WebSocket counts until then.
struct Counted {
    body: BoxBody,
    guard: Option<InFlight>,
}

impl MessageBody for Counted {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let next = Pin::new(&mut self.body).poll_next(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            self.guard = None;
        }
        next
    }
}

impl Drain {
    /// From now on, new requests are answered `503`.
    pub fn close(&self) {
        self.0.closing.store(true, Ordering::SeqCst);
    }

    /// Whether [`Drain::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.0.closing.load(Ordering::SeqCst)
    }

    /// Requests whose response is not sent to its end yet (open WebSockets included).
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::SeqCst)
    }

    /// Counts a request in, unless draining. The count is raised before `closing` is
    /// read (and `close` sets `closing` before the waiter reads the count), so either the
    /// request is refused or the waiter sees it.
    fn enter(&self) -> Option<InFlight> {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(Arc::clone(&self.0));
        (!self.is_closing()).then_some(guard)
    }

    /// Waits until no request is in flight (every response sent, every WebSocket
    /// closed), at most `bound`. Whether none is.
    pub async fn wait_idle(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            if self.in_flight() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Drains, then stops the server: new requests answered `503`, every WebSocket
    /// asked to close (1001) through `realtime`, then, once every response started has
    /// been sent and every WebSocket has closed (within `bound`), `server.stop(false)`,
    /// which drops the connections left: idle ones once drained, and at the bound also
    /// those still busy (the shutdown timeout is the most the stop waits for them).
    pub async fn drain_and_stop(
        &self,
        server: &ServerHandle,
        realtime: Option<&Realtime>,
        bound: Duration,
    ) {
        self.close();
        if let Some(realtime) = realtime {
            realtime.shut_down();
        }
        let started = Instant::now();
        if self.wait_idle(bound).await {
            tracing::info!(
                waited_ms = started.elapsed().as_millis(),
                "every response sent and every WebSocket closed; stopping the HTTP server"
            );
            tokio::time::sleep(FLUSH_GRACE).await;
        } else {
            tracing::warn!(
                in_flight = self.in_flight(),
                "responses (or WebSockets) still open at the shutdown timeout; stopping the \
                 HTTP server, which drops them"
            );
        }
        // Not a graceful stop: actix would wait for every connection still open, idle
        // keep-alive ones included, up to its own shutdown timeout.
        server.stop(false).await;
    }
}

/// The middleware: counts each request in flight until its response has been sent (a
/// WebSocket until it closes), and answers `503` (closing the connection) once the server
/// drains.
///
/// # Errors
/// The inner service's errors.
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, Error> {
    let drain = req.app_data::<web::Data<Drain>>().cloned();
    let guard = match drain {
        Some(drain) => match drain.enter() {
            Some(guard) => Some(guard),
            None => {
                let (http_req, _) = req.into_parts();
                let mut response = ApiError::Service(ServiceError::Unavailable).error_response();
                response
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
                return Ok(ServiceResponse::new(http_req, response).map_into_right_body());
            }
        },
        None => None,
    };
    let response = next.call(req).await?;
    Ok(response.map_body(|_, body| {
        EitherBody::left(Counted {
            body: body.boxed(),
            guard,
        })
    }))
}

/// A signal that asks the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (an orchestrator's stop).
    Terminate,
}

/// Waits for SIGINT or, on Unix, SIGTERM (a SIGTERM handler that cannot be installed is
/// logged and only SIGINT is awaited).
pub async fn stop_signal() -> StopSignal {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "SIGTERM handler not installed");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => StopSignal::Interrupt,
        () = terminate => StopSignal::Terminate,
    }
}

/// On SIGTERM or SIGINT: [`Drain::drain_and_stop`] with `bound`, closing the WebSockets
/// of `realtime`.
pub(crate) fn stop_on_signal(
    drain: Drain,
    server: ServerHandle,
    realtime: Option<Arc<Realtime>>,
    bound: Duration,
) {
    tokio::spawn(async move {
        let signal = stop_signal().await;
        tracing::info!(
            ?signal,
            "stop signal received; draining (WebSockets closed with 1001), then stopping"
        );
        drain
            .drain_and_stop(&server, realtime.as_deref(), bound)
            .await;
    });
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::test::{TestRequest, call_service, init_service, read_body};
    use actix_web::{App, HttpResponse, http::StatusCode};
    use tokio::sync::{Notify, mpsc};

    use super::*;

    #[actix_web::test]
    async fn a_draining_server_answers_new_requests_503_and_waits_for_those_in_flight() {
        let drain = Drain::default();
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let (held, go) = (Arc::clone(&entered), Arc::clone(&release));
        let app = init_service(
            App::new()
                .app_data(web::Data::new(drain.clone()))
                .wrap(from_fn(gate))
                .route(
                    "/fast",
                    web::get().to(|| async { HttpResponse::Ok().body("fast") }),
                )
                .route(
                    "/slow",
                    web::get().to(move || {
                        let (held, go) = (Arc::clone(&held), Arc::clone(&go));
                        async move {
                            held.notify_one();
                            go.notified().await;
                            HttpResponse::Ok().finish()
                        }
                    }),
                ),
        )
        .await;
        let app = std::rc::Rc::new(app);
        let fast = call_service(&*app, TestRequest::get().uri("/fast").to_request()).await;
        assert_eq!(fast.status(), StatusCode::OK);
        // Answered, but its body is not sent yet.
        assert_eq!(drain.in_flight(), 1);
        assert_eq!(read_body(fast).await, "fast");
        assert_eq!(drain.in_flight(), 0);

        // A slow request inside the application, then the drain begins.
        let slow = {
            let app = std::rc::Rc::clone(&app);
            actix_web::rt::spawn(async move {
                call_service(&*app, TestRequest::get().uri("/slow").to_request()).await
            })
        };
        entered.notified().await;
        assert_eq!(drain.in_flight(), 1);
        drain.close();
        let refused = call_service(&*app, TestRequest::get().uri("/fast").to_request()).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            refused.response().head().connection_type(),
            ConnectionType::Close
        );
        assert!(!drain.wait_idle(Duration::from_millis(30)).await);

        release.notify_one();
        let slow = slow.await.unwrap();
        assert_eq!(slow.status(), StatusCode::OK);
        // A body that is never sent (its connection gone) counts no more once dropped.
        drop(slow);
        assert!(drain.wait_idle(Duration::from_secs(5)).await);
    }

    #[actix_web::test]
    async fn a_streamed_response_such_as_a_websocket_counts_until_its_stream_ends() {
        let drain = Drain::default();
        let (frames, stream) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let stream = Arc::new(std::sync::Mutex::new(Some(stream)));
        let app = init_service(
            App::new()
                .app_data(web::Data::new(drain.clone()))
                .wrap(from_fn(gate))
                .route(
                    "/stream",
                    web::get().to(move || {
                        let stream = stream.lock().unwrap().take().unwrap();
                        async move {
                            HttpResponse::Ok().streaming(futures::stream::unfold(
                                stream,
                                |mut stream| async move {
                                    stream.recv().await.map(|frame| (frame, stream))
                                },
                            ))
                        }
                    }),
                ),
        )
        .await;
        let streaming = call_service(&app, TestRequest::get().uri("/stream").to_request()).await;
        assert_eq!(streaming.status(), StatusCode::OK);
        frames.send(Ok(Bytes::from_static(b"frame"))).await.unwrap();
        let reading = actix_web::rt::spawn(read_body(streaming));
        drain.close();
        // The stream is open: the drain waits for it.
        assert!(!drain.wait_idle(Duration::from_millis(30)).await);
        assert_eq!(drain.in_flight(), 1);

        // The connection closes (a WebSocket's last handle dropped): the stream ends.
        drop(frames);
        assert!(drain.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(reading.await.unwrap(), "frame");
    }
}
