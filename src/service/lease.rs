//! [`LeaseKeeper`]: the one keeper of a lease held by this replica's work for a session (a
//! sync run, a live loop), with its fence.
//!
//! It renews the lease every third of the lease time, each renewal bounded by that third.
//! The work stops ([`LeaseKeeper::lost`] is cancelled) when:
//! - a renewal finds the tenure over (another replica took the lease, or it lapsed);
//! - a whole lease passed without a successful renewal (this replica was paused or cut off:
//!   by now another one may hold it);
//! - a write through [`LeaseKeeper::store`] found the fence stale (see
//!   [`Store::fenced`]): nothing was written.
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::storage::{Fence, Store};

/// Keeps a lease this replica took, until it is released, dropped or lost.
pub struct LeaseKeeper {
    store: Store,
    session_id: String,
    fence: Fence,
    lost: CancellationToken,
    /// Stops the renewals when the keeper goes.
    _renewals: DropGuard,
}

impl LeaseKeeper {
    /// Keeps the lease `fence` names for `session_id`, `lease` long without renewal, from
    /// now: spawns its renewals.
    pub fn start(store: Store, session_id: &str, fence: Fence, lease: Duration) -> Self {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        tokio::spawn(renew(
            store.clone(),
            session_id.to_owned(),
            fence.clone(),
            lease,
            lost.clone(),
            stop.clone(),
        ));
        Self {
            store,
            session_id: session_id.to_owned(),
            fence,
            lost,
            _renewals: stop.drop_guard(),
        }
    }

    /// The lease's fence.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Cancelled when the lease is lost: the work must stop.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// The store the work writes through: every write checks the fence (see
    /// [`Store::fenced`]).
    pub fn store(&self) -> Store {
        self.store.fenced(self.fence.clone(), self.lost.clone())
    }

    /// Stops renewing and gives the lease up (if this tenure still holds it).
    pub async fn release(self) {
        let Self {
            store,
            session_id,
            fence,
            _renewals,
            ..
        } = self;
        // No renewal may race the release (and report the lease lost).
        drop(_renewals);
        if let Err(error) = store.release_lease(&session_id, &fence).await {
            tracing::warn!(%error, kind = ?fence.kind, "cannot release the lease");
        }
    }
}

async fn renew(
    store: Store,
    session_id: String,
    fence: Fence,
    lease: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let lease_ms = lease.as_millis() as i64;
    let every = lease / 3;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut renewed_at = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
            _ = lost.cancelled() => return,
        }
        if renewed_at.elapsed() >= lease {
            tracing::warn!(kind = ?fence.kind, epoch = fence.epoch, "the lease went a whole lease time without renewal; stopping its work");
            lost.cancel();
            return;
        }
        match tokio::time::timeout(every, store.renew_lease(&session_id, &fence, lease_ms)).await {
            Ok(Ok(true)) => renewed_at = Instant::now(),
            Ok(Ok(false)) => {
                tracing::warn!(kind = ?fence.kind, epoch = fence.epoch, "the lease is lost (another holder took it, or it lapsed); stopping its work");
                lost.cancel();
                return;
            }
            Ok(Err(error)) => tracing::warn!(%error, kind = ?fence.kind, "cannot renew the lease"),
            Err(_) => tracing::warn!(kind = ?fence.kind, "a lease renewal timed out"),
        }
    }
}
