//! The notifications go to a real Unix datagram socket named by `NOTIFY_SOCKET`, as systemd's
//! would. The environment is process-wide, so every test here runs inside a figment jail, which
//! holds one lock for every test that changes the environment and restores it afterwards.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixDatagram;

use super::*;

/// One datagram received, and whether the readiness check had answered true before it came.
struct Received {
    text: String,
    ready_before: bool,
}

/// Runs `body` in a jail whose `NOTIFY_SOCKET` names a bound datagram socket, on a
/// current-thread runtime.
// figment's `Jail` closure returns figment's own (large) error type.
#[allow(clippy::result_large_err)]
fn with_socket<F, Fut>(env: &[(&str, &str)], body: F)
where
    F: FnOnce(UnixDatagram) -> Fut,
    Fut: Future<Output = ()>,
{
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        let path = jail.directory().join("notify.sock");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
            jail.set_env("NOTIFY_SOCKET", path.display());
            for (key, value) in env {
                jail.set_env(key, value);
            }
            body(socket).await;
        });
        Ok(())
    });
}

/// Every datagram that arrives within `window`.
async fn receive_for(socket: &UnixDatagram, window: Duration, ready: &AtomicBool) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + window;
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await {
        received.push(Received {
            text: String::from_utf8_lossy(&buffer[..n]).into_owned(),
            ready_before: ready.load(Ordering::SeqCst),
        });
    }
    received
}

fn count(received: &[Received], line: &str) -> usize {
    received
        .iter()
        .filter(|r| r.text.lines().any(|l| l == line))
        .count()
}

/// A readiness check that answers false `not_ready_checks` times, then true; `ready` records
/// that it has answered true.
fn check_ready_after(
    not_ready_checks: usize,
) -> (Arc<AtomicBool>, impl FnMut() -> std::future::Ready<bool>) {
    let ready = Arc::new(AtomicBool::new(false));
    let checks = AtomicUsize::new(0);
    let flag = ready.clone();
    let check = move || {
        let answer = checks.fetch_add(1, Ordering::SeqCst) >= not_ready_checks;
        if answer {
            flag.store(true, Ordering::SeqCst);
        }
        std::future::ready(answer)
    };
    (ready, check)
}

#[test]
// figment's `Jail` closure returns figment's own (large) error type.
#[allow(clippy::result_large_err)]
fn nothing_is_set_up_without_notify_socket() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("WATCHDOG_USEC", "1000000");
        assert_eq!(Notifier::from_env(), None);
        Ok(())
    });
}

#[test]
fn ready_is_sent_once_and_only_after_the_node_is_ready() {
    with_socket(&[], |socket| async move {
        let notifier = Notifier::from_env()
            .expect("NOTIFY_SOCKET is set")
            .with_ready_poll(Duration::from_millis(20));
        assert_eq!(notifier.watchdog_ping(), None, "WATCHDOG_USEC is unset");
        // Not ready for the first 10 checks (about 200 ms).
        let (ready, check) = check_ready_after(10);
        let stopping = CancellationToken::new();
        let task = tokio::spawn(notifier.run(check, stopping.clone()));

        let received = receive_for(&socket, Duration::from_millis(800), &ready).await;
        assert!(
            ready.load(Ordering::SeqCst),
            "the check never answered true"
        );
        assert_eq!(count(&received, "READY=1"), 1, "one READY=1 in 800 ms");
        for message in &received {
            assert!(
                message.ready_before,
                "{:?} arrived before the node was ready",
                message.text
            );
        }

        stopping.cancel();
        let received = receive_for(&socket, Duration::from_millis(200), &ready).await;
        assert_eq!(count(&received, "STOPPING=1"), 1);
        assert_eq!(count(&received, "READY=1"), 0);
        // Without a watchdog there is nothing left to send: the task ends.
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the notifier ends after STOPPING=1 without a watchdog")
            .expect("the notifier did not panic");
    });
}

#[test]
fn a_node_that_stops_before_it_is_ready_never_says_ready() {
    with_socket(&[], |socket| async move {
        let notifier = Notifier::from_env()
            .expect("NOTIFY_SOCKET is set")
            .with_ready_poll(Duration::from_millis(20));
        let (ready, check) = check_ready_after(usize::MAX);
        let stopping = CancellationToken::new();
        let _task = tokio::spawn(notifier.run(check, stopping.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stopping.cancel();
        let received = receive_for(&socket, Duration::from_millis(300), &ready).await;
        assert_eq!(count(&received, "READY=1"), 0);
        assert_eq!(count(&received, "STOPPING=1"), 1);
    });
}

#[test]
fn the_watchdog_is_fed_at_half_its_timeout_until_the_process_ends() {
    let pid = std::process::id().to_string();
    // systemd's watchdog timeout: 200 ms, so a ping every 100 ms.
    with_socket(
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", &pid)],
        |socket| async move {
            let notifier = Notifier::from_env()
                .expect("NOTIFY_SOCKET is set")
                .with_ready_poll(Duration::from_millis(20));
            assert_eq!(notifier.watchdog_ping(), Some(Duration::from_millis(100)));
            let (ready, check) = check_ready_after(0);
            let stopping = CancellationToken::new();
            let task = tokio::spawn(notifier.run(check, stopping.clone()));

            let received = receive_for(&socket, Duration::from_millis(550), &ready).await;
            let pings = count(&received, "WATCHDOG=1");
            assert!((4..=7).contains(&pings), "{pings} pings in 550 ms");
            assert_eq!(count(&received, "READY=1"), 1);

            // Stopping takes a while (drain, hand-over, grace): the pings go on meanwhile.
            stopping.cancel();
            let received = receive_for(&socket, Duration::from_millis(350), &ready).await;
            assert_eq!(count(&received, "STOPPING=1"), 1);
            assert!(
                count(&received, "WATCHDOG=1") >= 2,
                "pings stopped with STOPPING=1"
            );
            task.abort();
        },
    );
}

#[test]
fn a_watchdog_meant_for_another_process_is_ignored() {
    with_socket(
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
        |_socket| async move {
            let notifier = Notifier::from_env().expect("NOTIFY_SOCKET is set");
            if std::process::id() != 1 {
                assert_eq!(notifier.watchdog_ping(), None);
            }
        },
    );
}

#[test]
// figment's `Jail` closure returns figment's own (large) error type.
#[allow(clippy::result_large_err)]
fn an_unreachable_socket_is_logged_not_fatal() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        let path = jail.directory().join("nobody-listens.sock");
        jail.set_env("NOTIFY_SOCKET", path.display());
        jail.set_env("WATCHDOG_USEC", "40000");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let notifier = Notifier::from_env()
                .expect("NOTIFY_SOCKET is set")
                .with_ready_poll(Duration::from_millis(10));
            let (_ready, check) = check_ready_after(0);
            let stopping = CancellationToken::new();
            let task = tokio::spawn(notifier.run(check, stopping.clone()));
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopping.cancel();
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!task.is_finished(), "the notifier gave up (or panicked)");
            task.abort();
        });
        Ok(())
    });
}

#[test]
fn the_ping_interval_is_half_the_timeout() {
    assert_eq!(
        watchdog_ping_interval(Duration::from_secs(30)),
        Duration::from_secs(15)
    );
    assert_eq!(
        watchdog_ping_interval(Duration::from_micros(1)),
        WATCHDOG_PING_INTERVAL_MIN
    );
}
