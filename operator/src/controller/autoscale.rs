//! The autoscaler's decision, pure: from a ModelDeployment's `spec.autoscaling`, what it decided
//! last time (`status.autoscaling`) and the demand the gateways report now, the replica count to
//! place. The leader runs it every `autoscaler::INTERVAL` (`autoscaler.rs` does the I/O).
//!
//! Rules, in order:
//! 1. `needed` = ⌈demand ÷ target per replica⌉ (target: `targetActivePerReplica`, else the
//!    replica's slots, `runtime.nBatch`), clamped to `minReplicas..=maxReplicas`.
//! 2. The count never leaves the bounds: above `maxReplicas` or below `minReplicas` it moves to
//!    the bound at once (a spec change).
//! 3. Scaling up is immediate: `needed` above the count replaces it. A request held for a
//!    deployment scaled to zero counts as waiting demand, so one request brings one replica.
//! 4. Scaling down waits: the count stays while demand needed it within the last
//!    `scaleDownDelay` (`lastActiveTime`), then drops straight to `needed` (0 included).
//! 5. When no gateway answered, demand is unknown: the count stays and `lastActiveTime` is not
//!    advanced, so an outage of every gateway neither scales down at once nor pins the count.
//! 6. The first decision (no status yet, e.g. autoscaling just added) starts from
//!    `spec.replicas` within the bounds, so enabling autoscaling does not drop serving replicas
//!    before the delay.

use crds::{Autoscaling, AutoscalingStatus, ModelDeployment};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The replica count the controller places for `md`: `spec.replicas`, or while
/// `spec.autoscaling` is set, the autoscaler's decision in status (the first decision's start,
/// rule 6, until it has made one), always within the bounds.
pub fn effective_replicas(md: &ModelDeployment) -> i32 {
    let spec = &md.spec;
    let Some(auto) = &spec.autoscaling else { return spec.replicas.max(0) };
    let decided = md.status.as_ref().and_then(|s| s.autoscaling.as_ref()).map(|a| a.desired_replicas);
    clamp(decided.unwrap_or(spec.replicas), auto)
}

/// Requests one replica should carry.
pub fn target_per_replica(md: &ModelDeployment) -> u64 {
    let auto = md.spec.autoscaling.as_ref();
    let target = auto.and_then(|a| a.target_active_per_replica).unwrap_or(md.spec.runtime.n_batch);
    u64::try_from(target).unwrap_or(1).max(1)
}

fn clamp(n: i32, auto: &Autoscaling) -> i32 {
    let max = auto.max_replicas.max(1);
    let min = auto.min_replicas.clamp(0, max);
    n.clamp(min, max)
}

/// Demand measured for one deployment: the sum over the gateways that answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    /// Requests waiting and in flight.
    pub demand: u64,
    /// Gateways that answered (0: demand unknown).
    pub gateways: u32,
}

/// Decides the count for `md` at `now`. The result is the whole `status.autoscaling`; the
/// caller writes it when it differs in what matters (`worth_writing`).
pub fn decide(md: &ModelDeployment, measured: Measured, now: Timestamp) -> Option<AutoscalingStatus> {
    let auto = md.spec.autoscaling.as_ref()?;
    let prev = md.status.as_ref().and_then(|s| s.autoscaling.as_ref());
    let current = effective_replicas(md);
    let per = target_per_replica(md);
    let needed = clamp(i32::try_from(measured.demand.div_ceil(per)).unwrap_or(i32::MAX), auto);
    let stamp = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t).to_string();
    let last_active = prev.and_then(|p| p.last_active_time.as_deref()).and_then(|t| t.parse::<Timestamp>().ok());
    let delay = SignedDuration::try_from(auto.scale_down_delay()).unwrap_or(SignedDuration::from_secs(600));
    let known = measured.gateways > 0;

    let (desired, active, reason) = if !known {
        (current, last_active, format!("no gateway reported demand: keeping {current}"))
    } else if needed >= current {
        let why = if needed > current { "scaled up" } else { "needed" };
        (needed, Some(now), format!("demand {} / {per} per replica: {why} {needed}", measured.demand))
    } else {
        // needed < current: down only after the delay since the count was last needed.
        let since = last_active.unwrap_or(now);
        let until = since.checked_add(delay).unwrap_or(since);
        if now >= until {
            let what = if needed == 0 { "scaled to zero".to_owned() } else { format!("scaled down to {needed}") };
            (
                needed,
                Some(now),
                format!(
                    "demand {} / {per} per replica needed {needed} since {}: {what}",
                    measured.demand,
                    stamp(since)
                ),
            )
        } else {
            (
                current,
                Some(since),
                format!(
                    "demand {} / {per} per replica needs {needed}; keeping {current} until {} (scaleDownDelay {})",
                    measured.demand,
                    stamp(until),
                    auto.scale_down_delay.as_deref().unwrap_or("10m")
                ),
            )
        }
    };
    let changed = prev.is_none_or(|p| p.desired_replicas != desired);
    Some(AutoscalingStatus {
        desired_replicas: desired,
        demand: i64::try_from(measured.demand).unwrap_or(i64::MAX),
        gateways: i32::try_from(measured.gateways).unwrap_or(i32::MAX),
        last_active_time: active.map(stamp),
        last_scale_time: if changed { Some(stamp(now)) } else { prev.and_then(|p| p.last_scale_time.clone()) },
        reason: Some(reason),
    })
}

/// Whether a new decision must be written: the count changed, the gateways answering changed,
/// demand went to or from zero, or, with everything else equal, `refresh` has passed since
/// `lastActiveTime` was written (so a fail-over leader's delay starts from a recent time). Demand
/// moving between non-zero values alone is not worth a write: one write per request is what
/// this design avoids.
pub fn worth_writing(prev: Option<&AutoscalingStatus>, next: &AutoscalingStatus, refresh: SignedDuration) -> bool {
    let Some(prev) = prev else { return true };
    let parse = |t: Option<&String>| t.and_then(|t| t.parse::<Timestamp>().ok());
    let stale = match (parse(prev.last_active_time.as_ref()), parse(next.last_active_time.as_ref())) {
        (Some(a), Some(b)) => b.duration_since(a) >= refresh,
        (a, b) => a.is_some() != b.is_some(),
    };
    prev.desired_replicas != next.desired_replicas
        || prev.gateways != next.gateways
        || (prev.demand == 0) != (next.demand == 0)
        || stale
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn md(auto: serde_json::Value, replicas: i32, status: Option<AutoscalingStatus>) -> ModelDeployment {
        let mut md: ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": { "name": "m", "namespace": "ns" },
            "spec": { "source": { "url": "http://o/m.gguf", "sha256": "a".repeat(64) }, "format": "gguf",
                      "replicas": replicas, "runtime": { "nBatch": 2 }, "autoscaling": auto }
        }))
        .expect("md");
        if let Some(s) = status {
            md.status = Some(crds::ModelDeploymentStatus { autoscaling: Some(s), ..Default::default() });
        }
        md
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn state(desired: i32, active: &str) -> AutoscalingStatus {
        AutoscalingStatus { desired_replicas: desired, last_active_time: Some(active.to_owned()), ..Default::default() }
    }

    const T0: &str = "2026-11-28T10:00:00Z";
    fn seen(demand: u64) -> Measured {
        Measured { demand, gateways: 2 }
    }

    #[test]
    fn without_autoscaling_spec_replicas_count() {
        let mut m = md(json!({ "maxReplicas": 3 }), 2, None);
        m.spec.autoscaling = None;
        assert_eq!(effective_replicas(&m), 2);
        assert_eq!(decide(&m, seen(5), at(T0)), None);
    }

    #[test]
    fn first_decision_starts_from_spec_replicas_within_bounds() {
        assert_eq!(effective_replicas(&md(json!({ "minReplicas": 0, "maxReplicas": 3 }), 2, None)), 2);
        assert_eq!(effective_replicas(&md(json!({ "minReplicas": 0, "maxReplicas": 3 }), 7, None)), 3);
        assert_eq!(effective_replicas(&md(json!({ "minReplicas": 2, "maxReplicas": 3 }), 1, None)), 2);
        // Idle at creation with minReplicas 0 and the default replicas 1: one replica until the delay.
        let m = md(json!({ "minReplicas": 0, "maxReplicas": 3 }), 1, None);
        let d = decide(&m, seen(0), at(T0)).expect("decision");
        assert_eq!(d.desired_replicas, 1);
    }

    #[test]
    fn scales_up_at_once_by_demand_over_slots() {
        let m = md(json!({ "minReplicas": 0, "maxReplicas": 4 }), 1, Some(state(1, T0)));
        let d = decide(&m, seen(5), at("2026-11-28T10:00:01Z")).expect("decision");
        // 5 requests, nBatch 2 per replica → 3.
        assert_eq!(d.desired_replicas, 3);
        assert_eq!(d.last_scale_time.as_deref(), Some("2026-11-28T10:00:01Z"));
        assert!(d.reason.as_deref().unwrap_or_default().contains("scaled up 3"), "{:?}", d.reason);
        // targetActivePerReplica overrides the slots; maxReplicas caps.
        let m = md(json!({ "minReplicas": 0, "maxReplicas": 4, "targetActivePerReplica": 1 }), 1, Some(state(1, T0)));
        assert_eq!(decide(&m, seen(9), at(T0)).expect("decision").desired_replicas, 4);
    }

    #[test]
    fn one_held_request_brings_a_deployment_back_from_zero() {
        let m = md(json!({ "minReplicas": 0, "maxReplicas": 2 }), 1, Some(state(0, T0)));
        assert_eq!(effective_replicas(&m), 0);
        let d = decide(&m, seen(1), at("2026-11-28T12:00:00Z")).expect("decision");
        assert_eq!(d.desired_replicas, 1);
    }

    #[test]
    fn scales_down_only_after_the_delay_and_then_to_zero() {
        let auto = json!({ "minReplicas": 0, "maxReplicas": 3, "scaleDownDelay": "10m" });
        let m = md(auto.clone(), 1, Some(state(2, T0)));
        let early = decide(&m, seen(0), at("2026-11-28T10:09:59Z")).expect("decision");
        assert_eq!(early.desired_replicas, 2);
        assert_eq!(early.last_active_time.as_deref(), Some(T0), "the delay keeps counting from the last need");
        assert!(
            early.reason.as_deref().unwrap_or_default().contains("until 2026-11-28T10:10:00Z"),
            "{:?}",
            early.reason
        );
        let late = decide(&m, seen(0), at("2026-11-28T10:10:00Z")).expect("decision");
        assert_eq!(late.desired_replicas, 0);
        assert!(late.reason.as_deref().unwrap_or_default().contains("scaled to zero"), "{:?}", late.reason);
        // Partial demand: down to what it needs, not to zero.
        let late = decide(&m, seen(1), at("2026-11-28T10:10:00Z")).expect("decision");
        assert_eq!(late.desired_replicas, 1);
    }

    #[test]
    fn demand_that_needs_the_count_restarts_the_delay() {
        let m = md(json!({ "minReplicas": 0, "maxReplicas": 3, "scaleDownDelay": "1m" }), 1, Some(state(2, T0)));
        let d = decide(&m, seen(4), at("2026-11-28T10:00:50Z")).expect("decision");
        assert_eq!((d.desired_replicas, d.last_active_time.as_deref()), (2, Some("2026-11-28T10:00:50Z")));
    }

    #[test]
    fn min_replicas_is_a_floor_even_when_idle() {
        let m = md(json!({ "minReplicas": 1, "maxReplicas": 3, "scaleDownDelay": "1s" }), 1, Some(state(3, T0)));
        assert_eq!(decide(&m, seen(0), at("2026-11-28T11:00:00Z")).expect("decision").desired_replicas, 1);
    }

    #[test]
    fn spec_bounds_apply_at_once() {
        // maxReplicas lowered below the current count.
        let m = md(json!({ "minReplicas": 0, "maxReplicas": 1, "scaleDownDelay": "1h" }), 1, Some(state(3, T0)));
        assert_eq!(effective_replicas(&m), 1);
        assert_eq!(decide(&m, seen(0), at(T0)).expect("decision").desired_replicas, 1);
    }

    #[test]
    fn unknown_demand_keeps_the_count_and_the_clock() {
        let m = md(json!({ "minReplicas": 0, "maxReplicas": 3, "scaleDownDelay": "1m" }), 1, Some(state(2, T0)));
        let d = decide(&m, Measured { demand: 0, gateways: 0 }, at("2026-11-28T11:00:00Z")).expect("decision");
        assert_eq!((d.desired_replicas, d.last_active_time.as_deref()), (2, Some(T0)));
        assert!(d.reason.as_deref().unwrap_or_default().starts_with("no gateway reported demand"));
    }

    #[test]
    fn writes_only_what_matters() {
        let refresh = SignedDuration::from_secs(60);
        let a = AutoscalingStatus { demand: 3, gateways: 2, ..state(2, T0) };
        assert!(worth_writing(None, &a, refresh));
        // Demand 3 → 4, 30 s later: not worth a write.
        let b = AutoscalingStatus { demand: 4, ..state(2, "2026-11-28T10:00:30Z") };
        let b = AutoscalingStatus { gateways: 2, ..b };
        assert!(!worth_writing(Some(&a), &b, refresh));
        // A minute on, the active time is refreshed.
        let c = AutoscalingStatus { demand: 4, gateways: 2, ..state(2, "2026-11-28T10:01:00Z") };
        assert!(worth_writing(Some(&a), &c, refresh));
        // To zero demand, a count change, another gateway: written.
        assert!(worth_writing(Some(&a), &AutoscalingStatus { demand: 0, ..a.clone() }, refresh));
        assert!(worth_writing(Some(&a), &AutoscalingStatus { desired_replicas: 3, ..a.clone() }, refresh));
        assert!(worth_writing(Some(&a), &AutoscalingStatus { gateways: 1, ..a.clone() }, refresh));
    }

    #[test]
    fn scale_down_delay_parses_units() {
        let a = |d: &str| Autoscaling {
            min_replicas: 0,
            max_replicas: 1,
            target_active_per_replica: None,
            scale_down_delay: Some(d.to_owned()),
        };
        assert_eq!(a("90s").scale_down_delay().as_secs(), 90);
        assert_eq!(a("10m").scale_down_delay().as_secs(), 600);
        assert_eq!(a("2h").scale_down_delay().as_secs(), 7200);
        assert_eq!(a("x").scale_down_delay().as_secs(), 600);
    }
}
