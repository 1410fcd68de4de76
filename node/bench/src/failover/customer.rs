//! The customer of a failover trial: follows a chat's stream exactly as the product's pages do
//! (`node/ui/session.js`, class `Stream`, which the chat widget, the chat page and the agent
//! console share), so the trial measures what a real customer sees.
//!
//! The page, as written there:
//! - `connect()` opens a WebSocket to the node in use, sets `lastHeard` to now and starts one
//!   timer, `setInterval(watch, PING_EVERY_MS)`, which runs while the socket connects and while
//!   it is open.
//! - Every frame received (events, typing, queue status, pongs) sets `lastHeard`; an event whose
//!   `seq` is beyond the cursor advances it (older ones are dropped).
//! - `watch()`: if more than `SILENT_AFTER_MS` passed since `lastHeard`, the page drops the socket
//!   (`close(4000, "silent")`, without waiting) and retries; otherwise, if the socket is open, it
//!   sends `{"type":"ping"}`, which the node answers `{"type":"pong"}` at once. A socket that
//!   never opens is given up the same way.
//! - A close (or an error) retries too. `retry()` moves to the next node in the page's list and
//!   connects again after `backoffMs(failures - 1)` (0 for the first retry since the last open):
//!   `BACKOFF_FIRST_MS` doubling up to `BACKOFF_MAX_MS`, with full jitter in the upper half.
//!   `failures` goes back to 0 when a socket opens.
//!
//! The timers are read from session.js itself ([`PageTimers`]), so the trial follows the pages
//! when their constants change.
//!
//! [`Customer`] runs that loop on a task and reports what it sees, with the instant, on a
//! channel.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::peers::{open_stream, Chat, Ws};

/// The pages' shared code, whose constants the customer follows.
const SESSION_JS: &str = include_str!("../../../ui/session.js");

/// The timers of `node/ui/session.js`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTimers {
    /// `PING_EVERY_MS`: how often an open stream pings its node and checks for silence.
    pub ping_every: Duration,
    /// `SILENT_AFTER_MS`: a stream that heard nothing (no event, no pong) this long moves to
    /// another node.
    pub silent_after: Duration,
    /// `BACKOFF_FIRST_MS`: the reconnect backoff's first delay.
    pub backoff_first: Duration,
    /// `BACKOFF_MAX_MS`: the most the reconnect backoff grows to.
    pub backoff_max: Duration,
}

impl PageTimers {
    /// The timers the pages run with.
    pub fn of_pages() -> anyhow::Result<Self> {
        Self::parse(SESSION_JS)
    }

    /// The timers in `source`, a version of session.js.
    fn parse(source: &str) -> anyhow::Result<Self> {
        let ms = |name: &str| -> anyhow::Result<Duration> {
            let prefix = format!("export const {name} = ");
            let value = source
                .lines()
                .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
                .and_then(|rest| rest.strip_suffix(';'))
                .with_context(|| format!("session.js has no `{prefix}<ms>;`"))?;
            let value: u64 = value
                .parse()
                .with_context(|| format!("session.js: {name} = {value} is not milliseconds"))?;
            Ok(Duration::from_millis(value))
        };
        let timers = Self {
            ping_every: ms("PING_EVERY_MS")?,
            silent_after: ms("SILENT_AFTER_MS")?,
            backoff_first: ms("BACKOFF_FIRST_MS")?,
            backoff_max: ms("BACKOFF_MAX_MS")?,
        };
        anyhow::ensure!(
            !timers.ping_every.is_zero() && !timers.backoff_first.is_zero(),
            "session.js: PING_EVERY_MS and BACKOFF_FIRST_MS must be above 0"
        );
        Ok(timers)
    }

    /// `backoffMs(n)`: doubling from `backoff_first`, capped at `backoff_max`, a uniformly
    /// random point in the upper half.
    fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .backoff_max
            .min(self.backoff_first * 2u32.pow(n.min(10)));
        // The 53 low bits of a v4 UUID (all random: its version and variant bits are higher
        // up), as a fraction in [0, 1).
        let bits = uuid::Uuid::new_v4().as_u128() & ((1u128 << 53) - 1);
        let random = bits as f64 / (1u64 << 53) as f64;
        ceiling / 2 + ceiling.mul_f64(random / 2.0)
    }
}

/// The frame a page sends to check its stream is alive.
const PING_FRAME: &str = r#"{"type":"ping"}"#;

/// Longest the harness lets an abandoned socket's close frame take (in the background: the page
/// does not wait for it either).
const ABANDONED_CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// Outer bound on one WebSocket opening; the page's own silence check gives up long before
/// (after `SILENT_AFTER_MS`), this only keeps every wait bounded.
const OPEN_WITHIN: Duration = Duration::from_secs(30);

/// What the customer saw, when; `node` is the index in its node list.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    /// A stream opened.
    Open { node: usize, at: Instant },
    /// A chat event beyond the cursor arrived.
    Event { node: usize, seq: u64, at: Instant },
    /// The stream closed or failed (a reset, a close frame, a refused connection).
    Closed { node: usize, at: Instant },
    /// The page's watch gave up on a silent stream (or one that did not open in time).
    Silent { node: usize, at: Instant },
}

/// A customer following one chat; its task stops when this is dropped.
pub struct Customer {
    seen: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Drop for Customer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Customer {
    /// Follows `chat` from `after` as a page with the node list `nodes` (the one to use first
    /// first) does.
    pub fn follow(timers: PageTimers, nodes: Vec<String>, chat: Chat, after: u64) -> Self {
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(page(timers, nodes, chat, after, tx));
        Self { seen, task }
    }

    /// The next thing the customer saw, waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> anyhow::Result<Seen> {
        tokio::time::timeout(within, self.seen.recv())
            .await
            .with_context(|| format!("the customer saw nothing within {within:?}"))?
            .context("the customer's task ended")
    }
}

/// Drops a socket the way `socket.close(4000, "silent")` does: the close frame is sent in the
/// background and nobody waits for the answer.
fn abandon(mut ws: Ws) {
    tokio::spawn(async move {
        let frame = CloseFrame {
            code: CloseCode::from(4000),
            reason: "silent".into(),
        };
        let _ = tokio::time::timeout(ABANDONED_CLOSE_WITHIN, ws.close(Some(frame))).await;
    });
}

/// The page's `Stream` loop; ends when the receiver is gone.
async fn page(
    timers: PageTimers,
    nodes: Vec<String>,
    chat: Chat,
    mut cursor: u64,
    tx: mpsc::UnboundedSender<Seen>,
) {
    if nodes.is_empty() {
        return;
    }
    let mut index = 0usize;
    let mut failures = 0u32;
    loop {
        let node = index % nodes.len();
        // connect(): lastHeard = now, and the watch timer from now on.
        let mut last_heard = Instant::now();
        let mut watch = tokio::time::interval_at(
            tokio::time::Instant::from_std(last_heard) + timers.ping_every,
            timers.ping_every,
        );
        watch.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let path = format!("/api/v1/chats/{}/stream?after={cursor}", chat.id);
        let opening = open_stream(&nodes[node], &path, &chat.token, OPEN_WITHIN);
        tokio::pin!(opening);
        let opened = loop {
            tokio::select! {
                opened = &mut opening => break opened.map_err(|_| Seen::Closed {
                    node,
                    at: Instant::now(),
                }),
                _ = watch.tick() => {
                    if last_heard.elapsed() > timers.silent_after {
                        break Err(Seen::Silent { node, at: Instant::now() });
                    }
                }
            }
        };
        match opened {
            // A refused or failed opening is a close; one that stayed silent is given up.
            Err(seen) => {
                if tx.send(seen).is_err() {
                    return;
                }
            }
            Ok(mut ws) => {
                // onopen
                failures = 0;
                last_heard = Instant::now();
                if tx
                    .send(Seen::Open {
                        node,
                        at: last_heard,
                    })
                    .is_err()
                {
                    return;
                }
                loop {
                    tokio::select! {
                        frame = ws.next() => match frame {
                            Some(Ok(message)) => {
                                // onmessage
                                last_heard = Instant::now();
                                let Message::Text(text) = message else { continue };
                                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                                    continue;
                                };
                                if frame["type"] == "pong" {
                                    continue;
                                }
                                if let Some(seq) = frame["seq"].as_u64() {
                                    if seq > cursor {
                                        cursor = seq;
                                        let seen = Seen::Event { node, seq, at: last_heard };
                                        if tx.send(seen).is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                            // onclose
                            None | Some(Err(_)) => {
                                if tx.send(Seen::Closed { node, at: Instant::now() }).is_err() {
                                    return;
                                }
                                break;
                            }
                        },
                        _ = watch.tick() => {
                            if last_heard.elapsed() > timers.silent_after {
                                if tx.send(Seen::Silent { node, at: Instant::now() }).is_err() {
                                    return;
                                }
                                abandon(ws);
                                break;
                            }
                            // A browser's send never fails on the spot; trouble shows as a
                            // close, which is what an error here stands for.
                            let sent = tokio::time::timeout(
                                timers.ping_every,
                                ws.send(Message::text(PING_FRAME)),
                            )
                            .await;
                            if !matches!(sent, Ok(Ok(()))) {
                                if tx.send(Seen::Closed { node, at: Instant::now() }).is_err() {
                                    return;
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
        // retry()
        let delay = if failures == 0 {
            Duration::ZERO
        } else {
            timers.backoff(failures - 1)
        };
        failures += 1;
        index += 1;
        tokio::time::sleep(delay).await;
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timers_are_the_pages_own() {
        let timers = PageTimers::of_pages().unwrap();
        // What G10's 2 s reconnect needs of them: a silent node left within 2 s.
        assert!(timers.silent_after + timers.ping_every < Duration::from_secs(2));
        let edited = SESSION_JS.replace(
            "export const SILENT_AFTER_MS = ",
            "export const SILENT_AFTER_MS = 9",
        );
        assert_ne!(PageTimers::parse(&edited).unwrap(), timers);
        let broken = SESSION_JS.replace("export const PING_EVERY_MS = ", "const PING = ");
        assert!(PageTimers::parse(&broken).is_err());
    }

    #[test]
    fn backoff_doubles_within_its_upper_half_up_to_the_cap() {
        let timers = PageTimers {
            ping_every: Duration::from_millis(250),
            silent_after: Duration::from_millis(1500),
            backoff_first: Duration::from_millis(200),
            backoff_max: Duration::from_millis(5000),
        };
        for (n, ceiling) in [
            (0, 200),
            (1, 400),
            (2, 800),
            (4, 3200),
            (5, 5000),
            (30, 5000),
        ] {
            for _ in 0..50 {
                let delay = timers.backoff(n).as_millis();
                assert!(
                    (ceiling / 2..=ceiling).contains(&delay),
                    "backoff({n}) = {delay} ms, not within [{}, {ceiling}]",
                    ceiling / 2
                );
            }
        }
    }
}
