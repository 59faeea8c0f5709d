//! Live streams nobody reads: what they cost an http node, and that the node lets them go.
//!
//! Each stalled reader is a raw TCP connection with a 4 KiB receive buffer that asks for a room's
//! event stream, reads the response head (so the stream is known to be open) and then never
//! reads again. Large posts then pile up behind it: in the client's receive buffer, in the
//! node's socket send buffer (fixed at 128 KiB by the node), in hyper's write buffer and in the
//! stream's queue of events, which is where the node's own memory goes. The node drops each
//! connection once its writes have waited for the write stall timeout. What is measured: the
//! node's peak resident memory over the whole episode, and how many of the connections it
//! dropped.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The client's receive buffer: small, so the node's side fills quickly.
const RECEIVE_BUFFER: u32 = 4096;

/// How long opening one stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream of `room` on the http node at `address`, opened with `authorization` and not read
/// past its response head.
pub(crate) async fn open(
    address: SocketAddr,
    room: i64,
    authorization: &str,
) -> anyhow::Result<TcpStream> {
    let opening = async {
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(RECEIVE_BUFFER)?;
        let mut stream = socket.connect(address).await?;
        let head = format!(
            "GET /v1/rooms/{room}/events HTTP/1.1\r\nHost: {address}\r\n\
             Accept: text/event-stream\r\nAuthorization: {authorization}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        // The response head, byte by byte, so that nothing past it is read.
        let mut reply = Vec::new();
        while !reply.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            ensure!(
                stream.read(&mut byte).await? == 1,
                "the stream closed before its head"
            );
            reply.push(byte[0]);
        }
        ensure!(
            reply.starts_with(b"HTTP/1.1 200"),
            "the stream answered {}",
            String::from_utf8_lossy(&reply).lines().next().unwrap_or("")
        );
        anyhow::Ok(stream)
    };
    tokio::time::timeout(OPEN_TIMEOUT, opening)
        .await
        .context("opening a stalled stream timed out")?
}
