//! A connection wrapper that fails reads and writes once no byte has moved either way for
//! the idle timeout, so abandoned keep-alive connections are closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep};

/// What an idle time too long for the clock is taken as.
const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// An I/O stream closed after `idle` without traffic.
pub struct IdleTimeout<S> {
    inner: S,
    timer: Pin<Box<Sleep>>,
    idle: Duration,
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            timer: Box::pin(sleep(idle)),
            idle,
        }
    }

    /// Maps an inner poll result: traffic resets the timer; waiting checks it.
    fn after<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                // An idle time too long to add to the clock (a setting of centuries) is
                // as good as never.
                let now = Instant::now();
                let deadline = now.checked_add(self.idle).unwrap_or_else(|| now + NEVER);
                self.timer.as_mut().reset(deadline);
                Poll::Ready(r)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.after(cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_cut_off_after_the_idle_time() {
        let (client, _server) = tokio::io::duplex(64);
        let mut wrapped = IdleTimeout::new(client, Duration::from_secs(30));
        let mut buf = [0u8; 8];
        let err = wrapped.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_the_connection_open() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = tokio::io::duplex(64);
        let mut wrapped = IdleTimeout::new(client, Duration::from_secs(30));
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(20)).await;
            server.write_all(b"x").await.unwrap();
            let mut buf = [0u8; 1];
            wrapped.read_exact(&mut buf).await.unwrap();
        }
    }
}
