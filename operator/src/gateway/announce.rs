//! This replica's demand, and the Lease that tells the leader where to read it (`crate::demand`
//! has the why and the shapes).
//!
//! - `GET /internal/v1/demand` answers from the gateway's own counters: per ModelDeployment, the
//!   requests in its queue (those held for a scale from zero included) and those sent to a board
//!   and not finished. It asks for the cluster token when one is configured, not a client key:
//!   the reader is the leader, a cluster component.
//! - The Lease `rockchip-llama-gateway-<identity>` in the lease namespace, labelled as a
//!   gateway's, carries the base URL in an annotation and is renewed every [`RENEW_EVERY`]
//!   (valid [`LEASE_DURATION`]), so the leader stops reading a replica that died within 30 s. It
//!   is deleted when the gateway stops cleanly.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use api_types::{ApiError, ErrorShape};
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::demand::{self, Demand};

/// How long a renewal is valid: three missed renewals and the leader stops reading this replica.
pub const LEASE_DURATION: Duration = Duration::from_secs(30);
/// How often the Lease is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Longest time one API call on the Lease may take (a slow API server must not pile calls up).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The Lease's name for `identity`: a valid object name whatever the host name holds
/// (lowercase, `[a-z0-9-.]`, at most 253 characters, alphanumeric at both ends).
pub fn lease_name(identity: &str) -> String {
    let clean: String = format!("{}{identity}", demand::LEASE_PREFIX)
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .take(253)
        .collect();
    clean.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

/// The base URL to announce when none is configured: the listen address when it names one IP,
/// else the pod's IP (`POD_IP`, from the downward API), else the host name.
pub fn default_url(bound: SocketAddr, pod_ip: Option<&str>, host: Option<&str>) -> String {
    let port = bound.port();
    if !bound.ip().is_unspecified() {
        return format!("http://{bound}");
    }
    if let Some(ip) = pod_ip.and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok()) {
        return format!("http://{}", SocketAddr::new(ip, port));
    }
    let host = host.map(str::trim).filter(|h| !h.is_empty()).unwrap_or("localhost");
    format!("http://{host}:{port}")
}

/// The operator's own Pod as the owner of its Lease, so Kubernetes' garbage collector deletes
/// the Lease with the Pod even when the Pod cannot (`helm uninstall` may remove its RBAC first).
/// Only for a Pod in the Lease's namespace (an owner elsewhere counts as gone and would get the
/// Lease deleted at once); from the downward API's `POD_NAMESPACE`, `POD_NAME` and `POD_UID`.
pub fn pod_owner(
    lease_namespace: &str,
    pod_namespace: Option<&str>,
    name: Option<&str>,
    uid: Option<&str>,
) -> Option<OwnerReference> {
    let (name, uid) = (name.filter(|n| !n.is_empty())?, uid.filter(|u| !u.is_empty())?);
    (pod_namespace == Some(lease_namespace)).then(|| OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Pod".to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        ..OwnerReference::default()
    })
}

/// The Lease as this replica writes it at `now`, keeping what the last write set that a renewal
/// keeps (resourceVersion, acquireTime).
pub fn lease(
    identity: &str,
    url: &str,
    owner: Option<&OwnerReference>,
    now: Timestamp,
    current: Option<&Lease>,
) -> Lease {
    let (label, value) = demand::LEASE_LABEL;
    let old = current.and_then(|l| l.spec.as_ref());
    let ours = old.is_some_and(|s| s.holder_identity.as_deref() == Some(identity));
    Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(identity)),
            labels: Some([(label.to_owned(), value.to_owned())].into()),
            annotations: Some([(demand::URL_ANNOTATION.to_owned(), url.to_owned())].into()),
            resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
            owner_references: owner.map(|o| vec![o.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_owned()),
            lease_duration_seconds: Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(30)),
            acquire_time: Some(old.filter(|_| ours).and_then(|s| s.acquire_time.clone()).unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Creates or renews the Lease once.
async fn renew(api: &Api<Lease>, identity: &str, url: &str, owner: Option<&OwnerReference>) -> Result<(), kube::Error> {
    let name = lease_name(identity);
    let current = api.get_opt(&name).await?;
    let next = lease(identity, url, owner, Timestamp::now(), current.as_ref());
    match current {
        None => api.create(&PostParams::default(), &next).await.map(drop),
        Some(_) => api.replace(&name, &PostParams::default(), &next).await.map(drop),
    }
}

/// Keeps this replica's Lease renewed until `stop`, then deletes it (best effort).
pub async fn run(client: Client, gw: Arc<Gateway>, url: String, stop: CancellationToken) {
    let api: Api<Lease> = Api::namespaced(client, &gw.config.lease_namespace);
    let identity = gw.config.identity.clone();
    let name = lease_name(&identity);
    let env = |k: &str| std::env::var(k).ok();
    let owner = pod_owner(
        &gw.config.lease_namespace,
        env("POD_NAMESPACE").as_deref(),
        env("POD_NAME").as_deref(),
        env("POD_UID").as_deref(),
    );
    tracing::info!(lease = %name, %url, "gateway: announcing demand counters");
    // Failed renewals in a row.
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        match tokio::time::timeout(CALL_TIMEOUT, renew(&api, &identity, &url, owner.as_ref())).await {
            Ok(Ok(())) => {
                if failures > 0 {
                    tracing::info!(lease = %name, "gateway: demand Lease renewed again");
                }
                failures = 0;
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = %name, %error, "gateway: renewing the demand Lease");
                failures += 1;
            }
            Err(_) => {
                tracing::warn!(lease = %name, "gateway: renewing the demand Lease timed out");
                failures += 1;
            }
        }
        // After a failure (a conflict with a write in between, the API server restarting) the
        // next tries come sooner, within the Lease's validity; a lasting one (no RBAC) is
        // retried at the normal pace rather than logged every 2 s.
        let wait = if (1..=2).contains(&failures) { RENEW_EVERY / 5 } else { RENEW_EVERY };
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    match tokio::time::timeout(CALL_TIMEOUT, api.delete(&name, &DeleteParams::default())).await {
        Ok(Ok(_)) => tracing::info!(lease = %name, "gateway: demand Lease deleted"),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
        Ok(Err(error)) => tracing::warn!(lease = %name, %error, "gateway: deleting the demand Lease"),
        Err(_) => tracing::warn!(lease = %name, "gateway: deleting the demand Lease timed out"),
    }
}

/// Whether `headers` carry `expected` as their bearer token (always, when none is expected).
/// Both sides are hashed and compared in constant time.
pub fn token_ok(expected: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else { return true };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let Some(given) = given else { return false };
    let (a, b): ([u8; 32], [u8; 32]) = (Sha256::digest(given.trim()).into(), Sha256::digest(expected).into());
    bool::from(a.ct_eq(&b))
}

/// This gateway replica's requests per ModelDeployment (`<namespace>/<name>`): waiting in its
/// queue (held for a scale from zero included) and in flight to a board. Only deployments with
/// something to count are listed. Read by the leader's autoscaler, with the cluster token.
#[utoipa::path(get, path = "/internal/v1/demand", tag = "ops",
    responses((status = 200, description = "Waiting and in-flight requests per deployment", body = Demand),
              (status = 401, description = "A cluster token is configured and the request does not carry it")))]
pub async fn demand(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if !token_ok(gw.config.cluster_token.as_deref(), &headers) {
        return ApiError::Unauthorized.into_response_as(ErrorShape::OpenAi);
    }
    Json(gw.demand()).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(lease_name("op-7d9f-x-0a1b2c3d"), "rockchip-llama-gateway-op-7d9f-x-0a1b2c3d");
        assert_eq!(lease_name("My_Host.local-"), "rockchip-llama-gateway-my-host.local");
        assert_eq!(lease_name(&"a".repeat(400)).len(), 253);
    }

    #[test]
    fn default_urls() {
        let any: SocketAddr = "0.0.0.0:11434".parse().unwrap();
        assert_eq!(default_url("10.0.0.7:8080".parse().unwrap(), Some("10.1.1.1"), None), "http://10.0.0.7:8080");
        assert_eq!(default_url(any, Some("10.42.0.9"), Some("pod")), "http://10.42.0.9:11434");
        assert_eq!(default_url(any, Some("fd00::5"), None), "http://[fd00::5]:11434");
        assert_eq!(default_url("[::]:1".parse().unwrap(), None, Some("gw-0\n")), "http://gw-0:1");
        assert_eq!(default_url(any, Some("garbage"), None), "http://localhost:11434");
    }

    #[test]
    fn the_lease_names_us_and_keeps_its_acquire_time() {
        let t0: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-28T10:00:10Z".parse().unwrap();
        let first = lease("gw-1", "http://10.0.0.1:11434", None, t0, None);
        assert_eq!(first.metadata.labels.as_ref().unwrap()[demand::LEASE_LABEL.0], demand::LEASE_LABEL.1);
        assert_eq!(first.metadata.annotations.as_ref().unwrap()[demand::URL_ANNOTATION], "http://10.0.0.1:11434");
        let spec = first.spec.as_ref().unwrap();
        assert_eq!((spec.holder_identity.as_deref(), spec.lease_duration_seconds), (Some("gw-1"), Some(30)));
        let mut stored = first.clone();
        stored.metadata.resource_version = Some("42".into());
        let renewed = lease("gw-1", "http://10.0.0.1:11434", None, t1, Some(&stored));
        let spec = renewed.spec.as_ref().unwrap();
        assert_eq!(renewed.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!((spec.acquire_time.clone().unwrap().0, spec.renew_time.clone().unwrap().0), (t0, t1));
    }

    #[test]
    fn the_pod_owns_its_lease_only_in_the_same_namespace() {
        let owner = pod_owner("ops", Some("ops"), Some("operator-0"), Some("u-1")).expect("owner");
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("Pod", "operator-0", "u-1"));
        assert_eq!(owner.block_owner_deletion, None, "no finalizer rights needed on the Pod");
        let t0: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        let l = lease("gw-1", "http://10.0.0.1:11434", Some(&owner), t0, None);
        assert_eq!(l.metadata.owner_references, Some(vec![owner]));
        assert_eq!(pod_owner("ops", Some("other"), Some("operator-0"), Some("u-1")), None);
        assert_eq!(pod_owner("ops", Some("ops"), Some("operator-0"), None), None, "outside a pod: no owner");
    }

    #[test]
    fn the_endpoint_is_in_the_openapi_document() {
        let doc = super::super::http::openapi_json();
        assert!(doc.contains(&format!("\"{}\"", demand::PATH)), "{} missing", demand::PATH);
        assert!(doc.contains("\"ModelDemand\""), "its schema too");
    }

    #[test]
    fn the_token_is_required_when_configured() {
        let mut h = HeaderMap::new();
        assert!(token_ok(None, &h));
        assert!(!token_ok(Some("secret"), &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secre"));
        assert!(!token_ok(Some("secret"), &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        assert!(token_ok(Some("secret"), &h));
    }
}
