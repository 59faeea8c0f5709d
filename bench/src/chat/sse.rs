//! Live delivery as subscribers see it: many Server-Sent Events streams of one room, each read
//! by a task of its own, timing every message from the moment the bench posted it to the moment
//! its bytes arrived on the stream.
//!
//! A timed post carries its send time in its body (`sent=<ns since the bench's clock base>`), so
//! a receipt needs no table look-up, and parsing stays minimal: an event is cut at the blank line
//! that ends it, and only its `event:` name and the `sent=` stamp in its data are read. A task
//! per stream (rather than one loop over all of them) lets the runtime read whichever streams
//! are ready; the receipt time is taken when the chunk arrives, before it is parsed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The marker before a timed post's send time.
const STAMP: &[u8] = b"sent=";

/// A body for a timed post: its send time as [`STAMP`] and 20 digits, padded to `bytes`.
pub(crate) fn stamped_body(sent_ns: u64, bytes: usize) -> String {
    let mut body = format!("switchboard-bench sent={sent_ns:020} ");
    while body.len() < bytes {
        body.push('x');
    }
    body
}

/// What a complete `message` event carried: the send time of a timed post, or none (a probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    Stamped(u64),
    Unstamped,
}

/// Cuts a stream's bytes into events and reports each `message` event (other kinds, comments
/// and keep-alives are skipped).
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    /// Where the search for the next blank line resumes: everything before it has been searched.
    searched: usize,
}

impl SseParser {
    /// Feeds one chunk; calls `each` for every `message` event it completes.
    pub(crate) fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(Received)) {
        self.buffer.extend_from_slice(chunk);
        let mut start = 0;
        loop {
            let from = self.searched.max(start);
            let Some(end) = find(&self.buffer[from..], b"\n\n").map(|i| from + i) else {
                self.searched = self.buffer.len().saturating_sub(1).max(start);
                break;
            };
            if let Some(received) = message(&self.buffer[start..end]) {
                each(received);
            }
            start = end + 2;
            self.searched = start;
        }
        self.buffer.drain(..start);
        self.searched -= start;
    }
}

/// The `message` event in one event block (its lines, without the blank line), if it is one.
fn message(block: &[u8]) -> Option<Received> {
    let mut is_message = false;
    let mut stamp = None;
    for line in block.split(|&b| b == b'\n') {
        if let Some(name) = line.strip_prefix(b"event:") {
            is_message = name.trim_ascii() == b"message";
        } else if line.starts_with(b"data:") {
            stamp = stamp.or_else(|| stamp_in(line));
        }
    }
    is_message.then_some(stamp.map_or(Received::Unstamped, Received::Stamped))
}

/// The digits after [`STAMP`] in `data`.
fn stamp_in(data: &[u8]) -> Option<u64> {
    let at = find(data, STAMP)? + STAMP.len();
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&data[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The streams being read, and what they have received so far.
#[derive(Debug)]
pub(crate) struct Subscribers {
    readers: Vec<JoinHandle<anyhow::Result<Vec<u64>>>>,
    stop: watch::Sender<bool>,
    /// `message` events received over every stream, stamped or not.
    received: Arc<AtomicU64>,
}

impl Subscribers {
    /// Reads every stream of `streams` in a task of its own; `base` is the clock the stamps
    /// count from.
    pub(crate) fn read(streams: Vec<Incoming>, base: Instant) -> Self {
        let (stop, stopped) = watch::channel(false);
        let received = Arc::new(AtomicU64::new(0));
        let readers = streams
            .into_iter()
            .map(|body| tokio::spawn(read_stream(body, base, stopped.clone(), received.clone())))
            .collect();
        Self {
            readers,
            stop,
            received,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.readers.len()
    }

    /// `message` events received so far over every stream.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops reading and returns every stamped receipt's latency, in nanoseconds. A stream that
    /// failed is an error.
    pub(crate) async fn finish(self) -> anyhow::Result<Vec<u64>> {
        let _ = self.stop.send(true);
        let mut latencies = Vec::new();
        for reader in self.readers {
            latencies.extend(reader.await.context("an SSE reader panicked")??);
        }
        Ok(latencies)
    }
}

/// Reads one stream until stopped: counts every `message` event and times the stamped ones.
async fn read_stream(
    mut body: Incoming,
    base: Instant,
    mut stopped: watch::Receiver<bool>,
    received: Arc<AtomicU64>,
) -> anyhow::Result<Vec<u64>> {
    let mut parser = SseParser::default();
    let mut latencies = Vec::new();
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = stopped.wait_for(|stop| *stop) => return Ok(latencies),
        };
        let arrived = base.elapsed().as_nanos() as u64;
        let Some(frame) = frame else {
            anyhow::bail!("an event stream ended while being read");
        };
        let frame = frame.context("reading an event stream")?;
        if let Some(data) = frame.data_ref() {
            parser.feed(data, |message| {
                received.fetch_add(1, Ordering::Relaxed);
                if let Received::Stamped(sent) = message {
                    latencies.push(arrived.saturating_sub(sent));
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<Received> {
        let mut parser = SseParser::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |r| seen.push(r));
        }
        seen
    }

    #[test]
    fn finds_stamped_and_unstamped_messages() {
        let body = stamped_body(1_234_567, 100);
        assert_eq!(body.len(), 100);
        let stream = format!(
            ": keep-alive\n\nevent: member_joined\nid: 1\ndata: {{\"room_id\":1}}\n\n\
             event: message\nid: 2\ndata: {{\"body\":\"{body}\"}}\n\n\
             event:message\nid: 3\ndata: {{\"body\":\"probe\"}}\n\n"
        );
        assert_eq!(
            events(&[stream.as_bytes()]),
            vec![Received::Stamped(1_234_567), Received::Unstamped]
        );
    }

    #[test]
    fn events_split_across_chunks_are_read_once_complete() {
        let stream = format!(
            "event: message\ndata: {{\"body\":\"{}\"}}\n\nevent: message\ndata: x\n\n",
            stamped_body(42, 60)
        );
        let bytes = stream.as_bytes();
        // Every split point, including inside the stamp and between the two newlines.
        for cut in 0..bytes.len() {
            let seen = events(&[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(
                seen,
                vec![Received::Stamped(42), Received::Unstamped],
                "cut at {cut}"
            );
        }
        // Byte by byte, and an incomplete event waits for its end.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(events(&singles).len(), 2);
        assert!(events(&[b"event: message\ndata: sent=5\n"]).is_empty());
    }
}
