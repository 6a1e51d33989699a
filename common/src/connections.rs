//! The HTTP server's connections: the accept loop around hyper, with the limits that
//! keep slow, silent or too many clients from starving probes and scrapes, and the
//! shutdown deadline. Plain TCP and TLS (`tls::TlsListener`) go through the same loop.
//!
//! - A client has [`HEADER_READ_TIMEOUT`] to send a request's headers, on a new
//!   connection and between the requests of a keep-alive connection (HTTP/1): a silent
//!   or idle connection is closed then. While more than [`BUSY_CONNECTIONS`] are
//!   open, new connections get [`BUSY_HEADER_READ_TIMEOUT`], so a flood of silent
//!   connections turns over quickly and a probe queued behind them gets through.
//! - At most [`MAX_CONNECTIONS`] are open at once; further clients wait in the
//!   kernel's listen queue (they are not accepted, so they hold no file descriptor).
//! - HTTP/2 connections (over TLS) are pinged every [`H2_KEEP_ALIVE_INTERVAL`] and
//!   closed when a ping goes unanswered for [`H2_KEEP_ALIVE_TIMEOUT`].
//! - On shutdown, accepting stops, in-flight requests get up to [`SHUTDOWN_DEADLINE`]
//!   to finish, and the connections still open then are cut.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

/// Connections open at once. Well below the usual file-descriptor limit (1,024), so
/// the process never runs out of them; a scrape needs one, a probe one.
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// Above this many open connections, new ones get the short header timeout.
pub(crate) const BUSY_CONNECTIONS: usize = MAX_CONNECTIONS / 2;
/// Time to send a request's headers, and to start the next one on a keep-alive
/// connection. Prometheus reconnects when an idle connection has been closed.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The same while the server is busy ([`BUSY_CONNECTIONS`]).
pub(crate) const BUSY_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an HTTP/2 connection is pinged, and how long the answer may take.
pub(crate) const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub(crate) const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// After SIGTERM or SIGINT: how long in-flight requests may take to finish. Below
/// Kubernetes' default grace period (30 s).
pub(crate) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

fn builder(header_read_timeout: Duration) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    b
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for open
/// connections up to [`SHUTDOWN_DEADLINE`]. Errors of single connections (and of
/// accepting, which the listener logs and retries) never end it.
pub(crate) async fn serve<L>(mut listener: L, app: Router, shutdown: impl Future<Output = ()>)
where
    L: axum::serve::Listener,
{
    let normal = builder(HEADER_READ_TIMEOUT);
    let busy = builder(BUSY_HEADER_READ_TIMEOUT);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (io, _peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let open = MAX_CONNECTIONS - slots.available_permits();
        let (builder, timeout) = if open > BUSY_CONNECTIONS {
            (&busy, BUSY_HEADER_READ_TIMEOUT)
        } else {
            (&normal, HEADER_READ_TIMEOUT)
        };
        let conn = builder
            .serve_connection_with_upgrades(
                TokioIo::new(FirstByteDeadline::new(io, timeout)),
                TowerToHyperService::new(app.clone()),
            )
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        let cut = MAX_CONNECTIONS - slots.available_permits();
        tracing::warn!(
            connections = cut,
            deadline_seconds = SHUTDOWN_DEADLINE.as_secs(),
            "connections still open at the shutdown deadline are cut"
        );
    } else if open > 0 {
        tracing::debug!(connections = open, "open connections finished");
    }
}

/// A connection that fails its reads when its first byte has not come within the
/// timeout. hyper's header read timeout starts only once it knows the protocol, and
/// finding that out (HTTP/1 or the HTTP/2 preface) waits for bytes without one.
struct FirstByteDeadline<I> {
    io: I,
    /// `None` once a byte has been read.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<I> FirstByteDeadline<I> {
    fn new(io: I, timeout: Duration) -> Self {
        FirstByteDeadline {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.deadline = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header read timeout",
                )))
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_connection_must_send_its_first_byte_in_time() {
        let (_client, server) = tokio::io::duplex(64);
        let mut io = FirstByteDeadline::new(server, Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let err = io.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        // Once a byte has come, the deadline is gone (hyper's own timeouts take over).
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = FirstByteDeadline::new(server, Duration::from_secs(10));
        client.write_all(b"G").await.expect("write");
        assert_eq!(io.read(&mut [0u8; 8]).await.expect("read"), 1);
        let more = tokio::time::timeout(Duration::from_secs(60), io.read(&mut [0u8; 8])).await;
        assert!(more.is_err(), "still waiting, without an error");
    }
}
