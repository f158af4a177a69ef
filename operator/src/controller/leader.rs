//! Leader election on a coordination.k8s.io/v1 Lease, so several operator replicas can run and
//! only one writes. kube 5 has no helper for it; this is the client-go scheme in small:
//!
//! - The Lease `rockchip-llama-operator` in the operator namespace names the holder.
//! - A replica takes it when it is free (no holder) or expired (renewTime + leaseDurationSeconds
//!   in the past), and renews it every 5 s while it leads. Writes are replaces carrying the
//!   resourceVersion read, so two replicas racing for it cannot both win.
//! - A leader that cannot renew for longer than the renew deadline stops leading before the
//!   lease could expire, so two leaders never overlap (given sane clocks).
//! - On shutdown the leader clears holderIdentity, so a standby takes over at once rather than
//!   after the lease runs out.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use tokio_util::sync::CancellationToken;

use super::error::Error;

/// Name of the Lease the operator replicas compete for.
pub const LEASE_NAME: &str = "rockchip-llama-operator";
/// How long a renewal is valid.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews (and a standby retries).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A leader that has not renewed for this long steps down: it stays under LEASE_DURATION so the
/// old leader has stopped before anyone else may take the lease.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// What a replica should do with the Lease as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write ourselves as holder; `transition` when the holder changes.
    Take {
        /// The holder changes (leaseTransitions + 1).
        transition: bool,
    },
    /// Someone else holds a fresh lease.
    Wait,
}

/// Whether `me` may hold the lease at `now`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else { return Decision::Take { transition: true } };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Decision::Take { transition: false };
    }
    if holder.is_empty() {
        return Decision::Take { transition: true };
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0)));
    match renewed.and_then(|r| r.checked_add(duration).ok()) {
        Some(expires) if expires > now => Decision::Wait,
        _ => Decision::Take { transition: true },
    }
}

/// The spec `me` writes when taking or renewing the lease.
pub fn taken(old: Option<&LeaseSpec>, me: &str, transition: bool, now: Timestamp) -> LeaseSpec {
    let old = old.cloned().unwrap_or_default();
    let transitions = old.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15)),
        acquire_time: if transition { Some(MicroTime(now)) } else { old.acquire_time.clone() },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if transition { transitions.saturating_add(1) } else { transitions }),
        ..old
    }
}

/// One replica's side of the election.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    identity: String,
}

impl Elector {
    /// Competes for the Lease in `namespace` as `identity`.
    pub fn new(client: Client, namespace: &str, identity: String) -> Self {
        Self { api: Api::namespaced(client, namespace), identity }
    }

    /// Our holderIdentity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt to take or renew the lease; true when we hold it afterwards.
    pub async fn try_lead(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(LEASE_NAME).await.map_err(Error::kube("reading Lease", LEASE_NAME))?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let Decision::Take { transition } = decide(spec, &self.identity, now) else { return Ok(false) };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.to_owned()),
                resource_version: current.as_ref().and_then(|l| l.resource_version()),
                ..ObjectMeta::default()
            },
            spec: Some(taken(spec, &self.identity, transition, now)),
        };
        let result = match current {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await,
        };
        match result {
            Ok(_) => {
                if transition {
                    tracing::info!(identity = %self.identity, "became the leader");
                }
                Ok(true)
            }
            // Another replica wrote first (409 conflict, or 409 already exists on create).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(Error::kube("writing Lease", LEASE_NAME)(e)),
        }
    }

    /// Waits until we lead; false when `stop` fires first.
    pub async fn acquire(&self, stop: &CancellationToken) -> bool {
        loop {
            match self.try_lead().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(RENEW_EVERY) => {}
            }
        }
    }

    /// Renews every RENEW_EVERY while `term` runs; cancels `term` when leadership is lost (someone
    /// else holds the lease, or no renewal succeeded for RENEW_DEADLINE).
    pub async fn hold(&self, term: CancellationToken) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = term.cancelled() => return,
                () = tokio::time::sleep(RENEW_EVERY) => {}
            }
            match tokio::time::timeout(RENEW_EVERY, self.try_lead()).await {
                Ok(Ok(true)) => last_ok = tokio::time::Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(identity = %self.identity, "another replica holds the lease; stepping down");
                    term.cancel();
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the leader lease"),
                Err(_) => tracing::warn!("renewing the leader lease timed out"),
            }
            if last_ok.elapsed() > RENEW_DEADLINE {
                tracing::warn!(identity = %self.identity, "could not renew the leader lease; stepping down");
                term.cancel();
                return;
            }
        }
    }

    /// Clears holderIdentity if we still hold the lease, so a standby takes over at once.
    pub async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else { return Ok(()) };
            let spec = lease.spec.get_or_insert_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await.map(drop)
        }
        .await;
        match result {
            Ok(()) => tracing::info!(identity = %self.identity, "released the leader lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the leader lease"),
        }
    }
}

/// A holderIdentity for this process: `base` (pod name or hostname) plus a random suffix, so a
/// restarted pod with the same name is a new holder.
pub fn identity(base: Option<&str>) -> String {
    use std::hash::{BuildHasher, Hasher};
    let base = base
        .map(str::to_owned)
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| LEASE_NAME.to_owned());
    // RandomState is seeded from the OS per process: random enough to tell processes apart.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{base}-{:08x}", hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("ts")
    }

    fn held_by(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(t(renewed))),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn free_or_expired_leases_are_taken() {
        assert_eq!(decide(None, "me", t(0)), Decision::Take { transition: true });
        assert_eq!(decide(Some(&held_by(None, 0)), "me", t(1)), Decision::Take { transition: true });
        assert_eq!(decide(Some(&held_by(Some("other"), 0)), "me", t(14)), Decision::Wait);
        assert_eq!(decide(Some(&held_by(Some("other"), 0)), "me", t(15)), Decision::Take { transition: true });
        assert_eq!(decide(Some(&held_by(Some("me"), 0)), "me", t(100)), Decision::Take { transition: false });
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let mut old = held_by(Some("me"), 0);
        old.acquire_time = Some(MicroTime(t(-100)));
        let renewed = taken(Some(&old), "me", false, t(5));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t(-100))));
        assert_eq!(renewed.renew_time, Some(MicroTime(t(5))));
        assert_eq!(renewed.lease_transitions, Some(2));
        let took = taken(Some(&old), "new", true, t(20));
        assert_eq!(took.holder_identity.as_deref(), Some("new"));
        assert_eq!(took.lease_transitions, Some(3));
        assert_eq!(took.lease_duration_seconds, Some(15));
    }

    #[test]
    fn deadline_is_inside_the_lease() {
        assert!(RENEW_EVERY < RENEW_DEADLINE && RENEW_DEADLINE < LEASE_DURATION);
    }

    #[test]
    fn identities_differ_per_call_site_seed() {
        let a = identity(Some("pod-0"));
        assert!(a.starts_with("pod-0-") && a.len() == "pod-0-".len() + 8, "{a}");
    }
}
