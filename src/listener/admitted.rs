//! The accept loop every listener shares, and what it yields: a connection
//! that holds its slot in the gate for as long as it is open, and is closed
//! if it sends nothing within `--first-byte-timeout`.
//!
//! Why the first byte has a bound of its own: hyper's HTTP/1 head timeout
//! starts when the connection does, so it already covers a silent one, but
//! it must be long enough for a slow client's whole head; a client that
//! means to ask sends at once. HTTP/2 has no timeout at all before the
//! client's preface.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tracing::{debug, warn};

use crate::listener::gate::{Gate, Slot};

/// An accepted connection, in its slot.
pub struct Admitted {
    stream: TcpStream,
    /// Until the first byte arrives.
    first_byte: Option<Pin<Box<Sleep>>>,
    _slot: Slot,
}

/// Waits for a slot in `gate`, then for a connection that its source's cap
/// admits (one over the cap is closed at once).
pub async fn accept(listener: &TcpListener, gate: &Gate, first_byte: Duration) -> Admitted {
    loop {
        let vacancy = gate.vacancy().await;
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = gate.admit(vacancy, peer.ip()) else {
            debug!(%peer, "closed a connection: its source holds --max-connections-per-source");
            continue;
        };
        let _ = stream.set_nodelay(true);
        return Admitted {
            stream,
            first_byte: Some(Box::pin(tokio::time::sleep(first_byte))),
            _slot: slot,
        };
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.first_byte = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let silent_too_long = this
                    .first_byte
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                match silent_too_long {
                    true => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing within --first-byte-timeout",
                    ))),
                    false => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// tonic asks each connection for its addresses (for `Request::remote_addr`).
impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::listener::limits::ListenerLimits;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: ListenerLimits,
    }

    /// A listener, a client connected to it, and the server's side.
    async fn connected() -> (TcpStream, Admitted) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let gate = Gate::new(&Flags::parse_from(["test"]).limits, Counter::default());
        let client = TcpStream::connect(addr).await.expect("connect");
        let admitted = accept(&listener, &gate, Duration::from_secs(2)).await;
        (client, admitted)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_cut_off() {
        let (_client, mut server) = connected().await;
        let mut buf = [0u8; 16];
        // Without the bound the read would wait for ever: give up at 60 s.
        let read = tokio::time::timeout(Duration::from_secs(60), server.read(&mut buf)).await;
        assert_eq!(
            read.map(|r| r.map_err(|e| e.kind())),
            Ok(Err(io::ErrorKind::TimedOut)),
            "a silent client is closed at --first-byte-timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn once_a_byte_arrives_the_connection_may_wait() {
        let (mut client, mut server) = connected().await;
        client.write_all(b"G").await.expect("send");
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).await.expect("read"), 1);
        // A read that waits past the first-byte timeout is not cut off
        // (the head timeout is hyper's): the next byte arrives at 3 s.
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.write_all(b"E").await.expect("send");
            client
        });
        assert_eq!(server.read(&mut buf).await.expect("read"), 1);
        drop(later.await);
    }
}
