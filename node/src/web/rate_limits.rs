//! Abuse limits at the HTTP edge: logins per client address and per agent id, chat starts per
//! client address (GCRA through `governor`), and a cap on password checks in flight. A caller
//! over a limit gets 429 `rate_limited` with `Retry-After`; a node whose password checks are
//! all busy answers 503 `busy` after a short wait.
//!
//! The client address is the TCP peer's: behind a load balancer every client shares the
//! balancer's address, so set the per-address limits for that (docs/OPERATIONS.md).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parley_raft::ErrorClass;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::RateLimitsConfig;
use crate::error::ApiError;

/// Keys a limiter holds before it forgets those whose allowance is full again.
const KEYS_BEFORE_SWEEP: usize = 10_000;

/// Longest a login waits for a free password check before the node answers 503.
const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(2);

/// One keyed limiter: `per_minute` a key, in bursts of up to `per_minute`.
struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
    what: &'static str,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(per_minute: NonZeroU32, what: &'static str) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
            what,
        }
    }

    fn check(&self, key: &K) -> Result<(), ApiError> {
        if self.limiter.len() > KEYS_BEFORE_SWEEP {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let seconds = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
            ApiError {
                retry_after_s: Some(seconds),
                ..ApiError::new(
                    ErrorClass::TooManyRequests,
                    "rate_limited",
                    format!("too many {}; retry in {seconds} s", self.what),
                )
            }
        })
    }
}

/// The node's abuse limits, shared by its HTTP workers.
pub struct RateLimits {
    logins_per_address: Keyed<IpAddr>,
    logins_per_agent: Keyed<String>,
    chat_starts_per_address: Keyed<IpAddr>,
    password_checks: Arc<Semaphore>,
}

impl RateLimits {
    /// Limits as configured.
    pub fn new(config: &RateLimitsConfig) -> Self {
        Self {
            logins_per_address: Keyed::new(
                config.logins_per_address_per_minute,
                "logins from this address",
            ),
            logins_per_agent: Keyed::new(
                config.logins_per_agent_per_minute,
                "logins for this agent",
            ),
            chat_starts_per_address: Keyed::new(
                config.chat_starts_per_address_per_minute,
                "chats started from this address",
            ),
            password_checks: Arc::new(Semaphore::new(config.password_checks_in_flight_max)),
        }
    }

    /// A login attempt from `address` for `agent_id`; counts against both limits.
    pub fn login(&self, address: Option<IpAddr>, agent_id: &str) -> Result<(), ApiError> {
        if let Some(address) = address {
            self.logins_per_address.check(&address)?;
        }
        self.logins_per_agent.check(&agent_id.to_owned())
    }

    /// A chat start from `address`. A retry of a start (same request id) counts too: a client
    /// that retries slowly stays within any sane limit.
    pub fn chat_start(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        match address {
            Some(address) => self.chat_starts_per_address.check(&address),
            None => Ok(()),
        }
    }

    /// A permit to run one password check (argon2), waited for at most
    /// [`PASSWORD_CHECK_WAIT`].
    pub async fn password_check(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let permit = tokio::time::timeout(
            PASSWORD_CHECK_WAIT,
            Arc::clone(&self.password_checks).acquire_owned(),
        )
        .await;
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(ApiError::unavailable(
                "busy",
                "too many password checks are running on this node; retry",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32) -> RateLimits {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        RateLimits::new(&RateLimitsConfig {
            logins_per_address_per_minute: n,
            logins_per_agent_per_minute: n,
            chat_starts_per_address_per_minute: n,
            password_checks_in_flight_max: 1,
        })
    }

    #[test]
    fn a_key_over_its_quota_gets_429_with_retry_after_and_other_keys_do_not() {
        let limits = limits(3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(limits.chat_start(Some(a)).is_ok());
        }
        let refused = limits.chat_start(Some(a)).err();
        let refused = refused.as_ref();
        assert_eq!(refused.map(ApiError::status), Some(429));
        assert_eq!(refused.map(|e| e.code), Some("rate_limited"));
        // 3 a minute: the next one is about 20 s away.
        assert!(refused
            .and_then(|e| e.retry_after_s)
            .is_some_and(|s| (1..=21).contains(&s)));
        assert!(limits.chat_start(Some(b)).is_ok());
    }

    #[test]
    fn logins_count_per_address_and_per_agent() {
        let limits = limits(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(limits.login(Some(a), "alice").is_ok());
        assert!(limits.login(Some(b), "alice").is_ok());
        // alice is out of attempts from any address; a's address has one left, for bob.
        assert!(limits.login(Some(b), "alice").is_err());
        assert!(limits.login(Some(a), "bob").is_ok());
        assert!(limits.login(Some(a), "carmen").is_err());
    }

    #[tokio::test]
    async fn password_checks_wait_for_a_free_permit() {
        let limits = limits(10);
        let first = limits.password_check().await;
        assert!(first.is_ok());
        let waiting = tokio::time::timeout(Duration::from_millis(50), limits.password_check());
        assert!(
            waiting.await.is_err(),
            "a second check ran beside the first"
        );
        drop(first);
        assert!(limits.password_check().await.is_ok());
    }
}
