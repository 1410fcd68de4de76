//! Leases for the services that must run on one node at a time (a mailbox's fetcher, its
//! sender), with fencing.
//!
//! A lease is replicated state: its holder (the node that proposed the acquiring command), a
//! fencing token and an expiry. The expiry is the proposer's clock (`Command::at_ms`) plus the
//! duration asked for; `apply` reads no clock. A node takes a lease that is free or expired at
//! its own command's time, and the token goes up by one each time the lease changes hands (or
//! is taken again after it lapsed), never otherwise. A holder renews with the token it holds.
//!
//! Fencing: every command a holder proposes as holder carries a [`Fence`] (lease name and
//! token), and `apply` refuses it unless the lease still has that token, that holder, and has
//! not expired at the command's time. A node that lost its lease, because it was partitioned
//! away, paused or slow, and another node took it, cannot commit as the holder: its token is
//! stale in the log's order, whatever its clock says.

use super::State;
use crate::command::email::{AcquireLease, Fence};
use crate::command::{Outcome, Rejection};
use crate::limits;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};

/// A lease as the state holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The node holding it.
    pub holder: NodeId,
    /// Its fencing token; goes up by one whenever the lease is taken anew.
    pub token: u64,
    /// When it expires unless renewed, ms since the Unix epoch (the holder's clock).
    pub expires_at_ms: u64,
}

impl State {
    pub(super) fn acquire_lease(
        &mut self,
        at_ms: u64,
        origin: NodeId,
        request: &AcquireLease,
    ) -> Result<Outcome, Rejection> {
        let leases = &mut self.email.leases;
        if !leases.contains_key(&request.name) && leases.len() >= limits::LEASES_MAX {
            return Err(Rejection::LimitReached {
                what: "leases".to_owned(),
                limit: limits::LEASES_MAX as u64,
            });
        }
        let expires_at_ms = at_ms.saturating_add(request.duration_ms);
        let lease = match leases.get_mut(&request.name) {
            // A renewal by the holder, before expiry, with its token.
            Some(lease)
                if lease.holder == origin
                    && at_ms < lease.expires_at_ms
                    && request.renew == Some(lease.token) =>
            {
                lease.expires_at_ms = lease.expires_at_ms.max(expires_at_ms);
                lease.clone()
            }
            // Held by someone (or by this node under another token) and not expired.
            Some(lease) if at_ms < lease.expires_at_ms => {
                return Ok(Outcome::Lease {
                    granted: false,
                    holder: lease.holder,
                    token: lease.token,
                    expires_at_ms: lease.expires_at_ms,
                });
            }
            // Expired: taken anew under the next token.
            Some(lease) => {
                lease.holder = origin;
                lease.token += 1;
                lease.expires_at_ms = expires_at_ms;
                lease.clone()
            }
            None => {
                let lease = Lease {
                    holder: origin,
                    token: 1,
                    expires_at_ms,
                };
                leases.insert(request.name.clone(), lease.clone());
                lease
            }
        };
        Ok(Outcome::Lease {
            granted: true,
            holder: lease.holder,
            token: lease.token,
            expires_at_ms: lease.expires_at_ms,
        })
    }

    pub(super) fn release_lease(
        &mut self,
        at_ms: u64,
        origin: NodeId,
        name: &str,
        token: u64,
    ) -> Result<Outcome, Rejection> {
        if let Some(lease) = self.email.leases.get_mut(name) {
            if lease.holder == origin && lease.token == token && at_ms < lease.expires_at_ms {
                // Expired from now on: the next taker gets the next token.
                lease.expires_at_ms = at_ms;
            }
        }
        Ok(Outcome::Done)
    }

    /// Refuses unless `origin` holds `fence` at `at_ms` (see the module docs).
    pub(super) fn check_fence(
        &self,
        at_ms: u64,
        origin: NodeId,
        fence: &Fence,
    ) -> Result<(), Rejection> {
        match self.email.leases.get(&fence.name) {
            Some(lease)
                if lease.holder == origin
                    && lease.token == fence.token
                    && at_ms < lease.expires_at_ms =>
            {
                Ok(())
            }
            _ => Err(Rejection::LeaseLost {
                name: fence.name.clone(),
            }),
        }
    }

    /// The lease `name`, if any node ever held it.
    pub fn lease(&self, name: &str) -> Option<&Lease> {
        self.email.leases.get(name)
    }
}
