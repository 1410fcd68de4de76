//! A pause between dials to a peer that could not be reached ([`DialBackoff`]).
//!
//! A tonic channel connects lazily and dials again for the next call after a failed connect.
//! Every background task of a node calls its peers on its own beat (Raft's pre-votes, probes,
//! island forwarding, relays), so a node cut off from a peer dials it several times a second,
//! for as long as the cut lasts: a stream of SYNs towards a site that is gone, and on a host
//! that keeps each attempt's port for a while, ports used up. [`DialBackoff`] wraps the
//! connector of a channel: after a failed dial, calls until a pause has passed fail at once
//! without dialing; the pause doubles with each failure in a row, from [`DIAL_BACKOFF_MIN`] up
//! to [`DIAL_BACKOFF_MAX`], and a successful dial ends it. The longest pause is well under
//! `island_after` (at least two election timeouts, 10 s by default), so a healed link is found
//! within a second.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Uri;
use tower::Service;

/// The pause after the first failed dial.
pub const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest pause between two dials to a peer that cannot be reached.
pub const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// An error a dial can end with.
pub type DialError = Box<dyn std::error::Error + Send + Sync>;

/// Failed dials in a row, and when the next one may go out.
#[derive(Debug, Default)]
struct Failures {
    in_a_row: u32,
    next_dial: Option<Instant>,
}

impl Failures {
    /// The pause after `in_a_row` failures: doubling from the least, at most the most.
    fn pause(in_a_row: u32) -> Duration {
        let doublings = in_a_row.saturating_sub(1).min(16);
        DIAL_BACKOFF_MIN
            .saturating_mul(1 << doublings)
            .min(DIAL_BACKOFF_MAX)
    }
}

/// A connector (a service from URI to connection) that pauses after failed dials; see the
/// module docs. Clones share the pause, as the clones of one channel's connector must.
#[derive(Clone, Debug)]
pub struct DialBackoff<C> {
    inner: C,
    failures: Arc<Mutex<Failures>>,
}

impl<C> DialBackoff<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            failures: Arc::new(Mutex::new(Failures::default())),
        }
    }
}

fn lock(failures: &Mutex<Failures>) -> std::sync::MutexGuard<'_, Failures> {
    match failures.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl<C> Service<Uri> for DialBackoff<C>
where
    C: Service<Uri> + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<DialError>,
{
    type Response = C::Response;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let now = Instant::now();
        if let Some(next_dial) = lock(&self.failures).next_dial.filter(|at| *at > now) {
            let wait = next_dial - now;
            return Box::pin(async move {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "the peer could not be reached; next dial in {} ms",
                        wait.as_millis()
                    ),
                )
                .into())
            });
        }
        let dial = self.inner.call(uri);
        let failures = Arc::clone(&self.failures);
        Box::pin(async move {
            let result = dial.await.map_err(Into::into);
            let mut failures = lock(&failures);
            match &result {
                Ok(_) => *failures = Failures::default(),
                Err(_) => {
                    failures.in_a_row = failures.in_a_row.saturating_add(1);
                    failures.next_dial = Some(Instant::now() + Failures::pause(failures.in_a_row));
                }
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    use tower::ServiceExt;

    use super::*;

    /// A connector that counts its dials and fails while `failing` says so.
    fn counting(
        dials: Arc<AtomicUsize>,
        failing: Arc<AtomicU32>,
    ) -> impl Service<Uri, Response = (), Error = io::Error, Future = impl Send> + Clone + Send
    {
        tower::service_fn(move |_uri: Uri| {
            let (dials, failing) = (Arc::clone(&dials), Arc::clone(&failing));
            async move {
                dials.fetch_add(1, Ordering::SeqCst);
                if failing.load(Ordering::SeqCst) > 0 {
                    Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
                } else {
                    Ok(())
                }
            }
        })
    }

    async fn dial(
        service: &mut DialBackoff<
            impl Service<Uri, Response = (), Error = io::Error, Future = impl Send + 'static>
                + Send
                + 'static,
        >,
    ) -> bool {
        let uri = Uri::from_static("http://peer:9000");
        match service.ready().await {
            Ok(ready) => ready.call(uri).await.is_ok(),
            Err(_) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_refuses_is_dialled_after_a_doubling_pause_and_success_ends_it() {
        let (dials, failing) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU32::new(1)));
        let mut service = DialBackoff::new(counting(Arc::clone(&dials), Arc::clone(&failing)));

        // The first dial fails; calls within the next 50 ms fail without dialing.
        assert!(!dial(&mut service).await);
        for _ in 0..10 {
            assert!(!dial(&mut service).await);
        }
        assert_eq!(dials.load(Ordering::SeqCst), 1);

        // After 50 ms one more dial goes out, fails, and the pause doubles to 100 ms.
        tokio::time::advance(Duration::from_millis(51)).await;
        assert!(!dial(&mut service).await);
        assert_eq!(dials.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_millis(60)).await;
        assert!(!dial(&mut service).await);
        assert_eq!(
            dials.load(Ordering::SeqCst),
            2,
            "still within the 100 ms pause"
        );
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(!dial(&mut service).await);
        assert_eq!(dials.load(Ordering::SeqCst), 3);

        // A clone (another connection attempt of the same channel) shares the pause.
        let mut clone = service.clone();
        assert!(!dial(&mut clone).await);
        assert_eq!(dials.load(Ordering::SeqCst), 3);

        // The peer is back: the first dial after the pause succeeds, and the next call dials
        // at once.
        failing.store(0, Ordering::SeqCst);
        tokio::time::advance(DIAL_BACKOFF_MAX).await;
        assert!(dial(&mut service).await);
        assert!(dial(&mut service).await);
        assert_eq!(dials.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn the_pause_doubles_up_to_its_bound() {
        assert_eq!(Failures::pause(1), DIAL_BACKOFF_MIN);
        assert_eq!(Failures::pause(2), DIAL_BACKOFF_MIN * 2);
        assert_eq!(Failures::pause(3), DIAL_BACKOFF_MIN * 4);
        assert_eq!(Failures::pause(6), DIAL_BACKOFF_MAX);
        assert_eq!(Failures::pause(u32::MAX), DIAL_BACKOFF_MAX);
    }
}
