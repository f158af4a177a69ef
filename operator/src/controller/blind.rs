//! Telling a dead board from a silent watch. Both the gateway and the controller judge boards by
//! their Leases as a reflector shows them; when the watch behind it goes quiet (a stopping API
//! server holds watches open and silent), every Lease seems to expire at once. [`Blind`] notices
//! that from the Leases themselves and keeps them fresh until renewals show again.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::boards::LeaseTimes;

/// How long a lease kept fresh by a blind view counts as fresh before it is looked at again.
pub const BLIND_RECHECK: SignedDuration = SignedDuration::from_secs(1);

/// When a view of the Leases (a reflector store) went stale: from the newest renewal it showed
/// to the moment it shows renewals again. The gateway and the controller each keep one.
///
/// An API server restart (or any outage longer than a lease) would otherwise expire every
/// board's Lease in the gateway's eyes, and the gateway would refuse every request while every
/// board is fine. The watch need not fail for that: a stopping API server holds watches open and
/// silent. So staleness is read from the Leases themselves: every holder renews a quarter of the
/// way through its lease, so when no Lease at all was renewed for half the shortest lease the view
/// is stale, not every board dead. A Lease that was fresh at the newest renewal the view shows
/// stays fresh while the view is stale, and for one lease duration after it shows renewals again
/// (the agents, retrying every second or so, renew by then). A board that really died meanwhile
/// is still taken out of routing by the load poller's ejection. Found by `make soak`: a stopping
/// kube-apiserver kept the watches silent for ~30 s and the gateway answered 503 to everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blind {
    began: Option<Timestamp>,
    ended: Option<Timestamp>,
}

impl Blind {
    /// Looks at every Lease the view holds at `now`.
    pub fn observe(&mut self, leases: impl Iterator<Item = LeaseTimes>, now: Timestamp) {
        let (mut newest, mut shortest) = (None::<Timestamp>, None::<SignedDuration>);
        for l in leases {
            newest = newest.max(Some(l.renewed));
            shortest = Some(shortest.map_or(l.duration, |s| s.min(l.duration)));
        }
        let (Some(newest), Some(shortest)) = (newest, shortest) else { return };
        // Holders renew every quarter of their lease: no renewal at all for half the shortest
        // lease means the view, not every board, has stopped.
        let stale = newest.saturating_add(shortest / 2).is_ok_and(|until| until < now);
        let was_stale = self.began.is_some() && self.ended.is_none();
        if stale && !was_stale {
            tracing::warn!(newest_renewal = %newest, "no Lease renewed for half a lease: the view is stale, boards stay fresh");
            *self = Self { began: Some(newest), ended: None };
        } else if !stale && was_stale {
            tracing::info!(since = %newest, "Leases renewed again: the view is live");
            self.ended = Some(now);
        }
    }

    /// Whether a board with this Lease may be routed to at `now`.
    pub fn fresh(&self, lease: LeaseTimes, now: Timestamp) -> bool {
        let expires = lease.expires();
        if expires > now {
            return true;
        }
        let Some(began) = self.began else { return false };
        // Fresh when the view went stale, and not yet one lease duration past its return.
        expires > began && self.ended.is_none_or(|e| e.saturating_add(lease.duration).is_ok_and(|until| now < until))
    }

    /// The lease as it should be judged at `now`: itself, unless it is [`fresh`](Self::fresh)
    /// only because the view cannot see its renewals; then as if renewed so that it stays fresh
    /// for one more [`BLIND_RECHECK`], when whoever judges it looks again. Lets code that reads
    /// plain [`LeaseTimes`] (liveness, the requeue time of a reconcile) honour a blind view.
    pub fn judged(&self, lease: LeaseTimes, now: Timestamp) -> LeaseTimes {
        if lease.expires() > now || !self.fresh(lease, now) {
            return lease;
        }
        let until = now.saturating_add(BLIND_RECHECK).unwrap_or(now);
        LeaseTimes { renewed: until.saturating_sub(lease.duration).unwrap_or(until), duration: lease.duration }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn lease(renewed: i64) -> LeaseTimes {
        LeaseTimes { renewed: at(renewed), duration: SignedDuration::from_secs(8) }
    }

    #[test]
    fn a_lease_does_not_expire_while_the_view_shows_no_renewals() {
        let mut b = Blind::default();
        // Three boards renewing every 2 s (8 s leases).
        let view = |renewed: [i64; 3], b: &mut Blind, now: i64| b.observe(renewed.into_iter().map(lease), at(now));
        view([0, 1, 2], &mut b, 3);
        assert!(b.fresh(lease(0), at(7)) && !b.fresh(lease(0), at(9)), "a live view: renew + duration");
        // The API server stops at 3 s and is back at 35 s: no renewal shows in between. The view
        // is stale from 6 s (the newest renewal, 2 s, + half the shortest lease).
        for now in 4..35 {
            view([0, 1, 2], &mut b, now);
        }
        assert!(b.fresh(lease(0), at(20)), "the outage must not expire a lease the gateway cannot see renewed");
        assert!(!b.fresh(lease(-10), at(20)), "a lease that had expired stays expired");
        // Back: one board has renewed, the others renew within a second or two.
        view([0, 36, 2], &mut b, 36);
        assert!(b.fresh(lease(0), at(40)), "one lease duration to renew after the view is back");
        assert!(!b.fresh(lease(0), at(45)), "an agent that did not renew by then is gone");
        assert!(b.fresh(lease(40), at(45)), "renewed: fresh as usual");
        // One board dies while the others renew: no staleness, its lease expires as usual.
        for now in 46..60 {
            view([44, now - 1, now - 1], &mut b, now);
        }
        assert!(!b.fresh(lease(44), at(59)), "a dead board among live ones expires");

        // A longer Lease in the namespace (the operator's, 30 s) does not delay noticing.
        let mut b = Blind::default();
        let long = |r: i64| LeaseTimes { renewed: at(r), duration: SignedDuration::from_secs(30) };
        for now in 3..20 {
            b.observe([lease(1), lease(2), long(0)].into_iter(), at(now));
        }
        assert!(b.fresh(lease(1), at(19)), "stale from 6 s, whatever the longest lease");
    }

    #[test]
    fn judged_leases_stay_fresh_only_while_the_view_is_blind() {
        let mut b = Blind::default();
        for now in 3..6 {
            b.observe([lease(0), lease(2)].into_iter(), at(now));
        }
        assert_eq!(b.judged(lease(0), at(5)), lease(0), "fresh anyway: unchanged");
        for now in 6..20 {
            b.observe([lease(0), lease(2)].into_iter(), at(now));
        }
        let kept = b.judged(lease(0), at(19));
        assert_eq!(kept.expires(), at(20), "blind: fresh for one more recheck");
        assert_eq!(kept.duration, lease(0).duration);
        assert_eq!(b.judged(lease(-10), at(19)), lease(-10), "expired before the view went blind");
    }
}
