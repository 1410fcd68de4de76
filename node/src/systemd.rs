//! systemd's `Type=notify` protocol (`deploy/systemd/parley.service`): `READY=1` once the node
//! is ready (when `/readyz` would answer 200), `WATCHDOG=1` at half of `WATCHDOG_USEC` while the
//! process runs, `STOPPING=1` when it starts to stop.
//!
//! Everything here does nothing when `NOTIFY_SOCKET` is unset (the node was not started by
//! systemd), and a notification that cannot be sent is logged, never fatal: systemd then stops
//! or restarts the node by its own timeouts.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// How often readiness is checked until the node is first ready.
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Shortest watchdog ping interval (systemd's `WatchdogSec=` is whole microseconds; a tiny
/// value would make the node spin).
pub const WATCHDOG_PING_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// The notifications of one process under systemd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notifier {
    /// How often readiness is checked until it is first seen.
    ready_poll: Duration,
    /// Half of `WATCHDOG_USEC` when systemd watches this process; `None` otherwise.
    watchdog_ping: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd asks for through the environment; `None` when `NOTIFY_SOCKET` is
    /// unset, i.e. the node was not started by systemd with `Type=notify`.
    pub fn from_env() -> Option<Notifier> {
        std::env::var_os("NOTIFY_SOCKET")?;
        Some(Notifier {
            ready_poll: READY_POLL_INTERVAL,
            watchdog_ping: sd_notify::watchdog_enabled().map(watchdog_ping_interval),
        })
    }

    /// Checks readiness this often (tests use a short interval).
    pub fn with_ready_poll(mut self, interval: Duration) -> Notifier {
        self.ready_poll = interval;
        self
    }

    /// The interval of the watchdog pings, if systemd watches this process.
    pub fn watchdog_ping(&self) -> Option<Duration> {
        self.watchdog_ping
    }

    /// Sends `READY=1` once `ready()` first answers true, `WATCHDOG=1` every
    /// [`Self::watchdog_ping`] from the start, and `STOPPING=1` once `stopping` is cancelled
    /// (readiness is not reported after that). Runs until dropped or aborted, so the watchdog
    /// keeps being fed while the node drains and stops.
    pub async fn run<F, Fut>(self, mut ready: F, stopping: CancellationToken)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut watchdog = self.watchdog_ping.map(|interval| {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        let mut watchdog_failing = false;
        let mut poll = tokio::time::interval(self.ready_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Before READY=1: poll readiness. After: nothing left to report but STOPPING=1.
        let mut reported_ready = false;
        let mut reported_stopping = false;
        loop {
            tokio::select! {
                () = tick(watchdog.as_mut()) => {
                    match sd_notify::notify(&[NotifyState::Watchdog]) {
                        Ok(()) => watchdog_failing = false,
                        // Once per run of failures: a ping every few seconds would flood the log.
                        Err(error) if !watchdog_failing => {
                            watchdog_failing = true;
                            tracing::warn!(%error, "systemd: could not send WATCHDOG=1");
                        }
                        Err(_) => {}
                    }
                }
                () = stopping.cancelled(), if !reported_stopping => {
                    reported_stopping = true;
                    send(&[NotifyState::Stopping, NotifyState::Status("stopping")], "STOPPING=1");
                    if watchdog.is_none() {
                        return;
                    }
                }
                _ = poll.tick(), if !reported_ready && !reported_stopping => {
                    // Checked again after: the check itself may take a while.
                    if ready().await && !stopping.is_cancelled() {
                        reported_ready = true;
                        send(&[NotifyState::Ready, NotifyState::Status("ready")], "READY=1");
                    }
                }
            }
        }
    }
}

/// The next tick of `ticks`, or never.
async fn tick(ticks: Option<&mut tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Half of systemd's watchdog timeout, as `sd_watchdog_enabled(3)` advises.
fn watchdog_ping_interval(timeout: Duration) -> Duration {
    (timeout / 2).max(WATCHDOG_PING_INTERVAL_MIN)
}

fn send(states: &[NotifyState<'_>], what: &str) {
    match sd_notify::notify(states) {
        Ok(()) => tracing::info!("systemd: sent {what}"),
        Err(error) => tracing::warn!(%error, "systemd: could not send {what}"),
    }
}

#[cfg(test)]
mod tests;
