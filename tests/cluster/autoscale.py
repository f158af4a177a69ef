"""Autoscaling, to zero and back, on the gateway cluster of hack/test-cluster.sh (three
simulated RK3588 boards, agents requiring the cluster token, gateway client keys), run after
tests/cluster/gateway.py. Stdlib only (helpers from gateway.py); every wait bounded.

Steps (each prints `ok - ...`):
  1. admission: autoscaling.minReplicas above maxReplicas is refused with the CEL message;
  2. a deployment with minReplicas 0 and scaleDownDelay 3s starts with spec.replicas (1), then,
     idle, is scaled to zero: status.autoscaling.desiredReplicas 0, Ready/ScaledToZero, the
     board entry `Cached` (unloaded, file kept), nothing resident in /api/ps;
  3. one request through the gateway brings it back: held, answered 200, a ScaledUp Event; the
     time from request to answer is printed (the benchmark measures it properly);
  4. demand: the gateway's /internal/v1/demand needs the cluster token and counts requests in
     flight; 3 long requests at once with targetActivePerReplica 1 scale it to maxReplicas (2);
  5. a streamed request from zero answers through the official openai client;
  6. autoscaling removed: `kubectl scale` (the scale subresource) sets the count again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g  # noqa: E402  (the shared helpers of the gateway tier)
from gateway import KEY, NS, call, chat_body, fail, in_parallel, kubectl, ready_replicas, wait_for  # noqa: E402
from openai import OpenAI  # noqa: E402  (run with the venv of hack/pyenv.sh)

NAME = "scaler"


def log(msg: str) -> None:
    print(f"[autoscale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def md_json() -> dict:
    return json.loads(kubectl("get", "md", NAME, "-n", NS, "-o", "json"))


def autoscaling_status() -> dict:
    return (md_json().get("status") or {}).get("autoscaling") or {}


def condition(md: dict, kind: str) -> dict:
    return next((c for c in (md.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def entries() -> dict[str, str]:
    """board → desired state of this deployment's entry."""
    boards = json.loads(kubectl("get", "boards", "-o", "json"))["items"]
    out = {}
    for b in boards:
        for e in b["spec"].get("models", []):
            if e["key"] == f"{NS}/{NAME}":
                out[b["metadata"]["name"]] = e.get("desired", "Loaded")
    return out


def main() -> None:
    up = Path(sys.argv[1]).read_text().splitlines()
    env = dict(line.split("=", 1) for line in up if "=" in line)
    gw, origin, origin_dir = env["GATEWAY"], env["ORIGIN"], Path(env["ORIGIN_DIR"])
    token = Path(env["CLUSTER_TOKEN_FILE"]).read_text().strip()
    sums = dict(reversed(ln.split()) for ln in (origin_dir / "SHA256SUMS").read_text().splitlines())
    gguf = next(n for n in sums if n.endswith(".gguf"))
    source = {"url": f"{origin}/{gguf}", "sha256": sums[gguf]}

    # 1. admission.
    doc = {"apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": "bad-bounds", "namespace": NS},
           "spec": {"format": "gguf", "source": source, "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}}
    p = subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(doc), capture_output=True, text=True, timeout=60)
    if p.returncode == 0 or "must not exceed" not in p.stderr:
        fail(f"minReplicas > maxReplicas was not refused with the CEL message: {p.returncode} {p.stderr!r}")
    log("ok - admission refuses autoscaling.minReplicas above maxReplicas (CEL)")

    # 2. starts at spec.replicas, then idle → zero.
    g.apply_md(NAME, {"model": NAME, "format": "gguf", "replicas": 1, "source": source,
                      "runtime": {"maxContextLen": 1024},
                      "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "targetActivePerReplica": 1,
                                      "scaleDownDelay": "3s"}})
    wait_for(f"{NAME} Ready with 1 replica", lambda: ready_replicas(NAME) == 1)
    t0 = time.monotonic()
    wait_for(f"{NAME} scaled to zero", lambda: autoscaling_status().get("desiredReplicas") == 0 and ready_replicas(NAME) == 0, 60)
    md = md_json()
    ready = condition(md, "Ready")
    if ready.get("reason") != "ScaledToZero" or "autoscaled to zero" not in ready.get("message", ""):
        fail(f"Ready condition when scaled to zero: {ready}")
    cached = wait_for("the board entry kept as Cached", lambda: (e := entries()) and set(e.values()) == {"Cached"} and e, 30)
    ps = call("GET", f"{gw}/api/ps").json()["models"]
    if any(m["name"].removesuffix(":latest") == NAME for m in ps):
        fail(f"{NAME} still resident after scaling to zero: {ps}")
    log(f"ok - idle {NAME} scaled to zero {time.monotonic() - t0:.1f} s after Ready (scaleDownDelay 3s): "
        f"Ready/ScaledToZero, entry Cached on {sorted(cached)}, nothing resident; reason: {autoscaling_status().get('reason')}")

    # 3. one request brings it back.
    t0 = time.monotonic()
    r = call("POST", f"{gw}/v1/chat/completions", chat_body(NAME, "Say hi"), timeout=150)
    took = time.monotonic() - t0
    if r.status != 200 or not r.json()["choices"][0]["message"]["content"]:
        fail(f"request from zero: {r.status} {r.body[:300]!r}")
    if autoscaling_status().get("desiredReplicas", 0) < 1:
        fail(f"answered but desiredReplicas is {autoscaling_status()}")
    events = kubectl("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={NAME}", "-o", "json")
    reasons = {e.get("reason") for e in json.loads(events)["items"]}
    if not {"ScaledUp", "ScaledToZero"} <= reasons:
        fail(f"events of {NAME}: {reasons}")
    log(f"ok - a request from zero was held and answered 200 in {took:.1f} s (file cached on the board); Events {sorted(reasons & {'ScaledUp', 'ScaledToZero'})}")

    # 4. demand: the endpoint, and scaling up under load.
    if call("GET", f"{gw}/internal/v1/demand", key=None).status != 401:
        fail("the demand endpoint answered without the cluster token")
    seen_inflight: list[int] = []

    def long_request() -> Any:
        return call("POST", f"{gw}/v1/chat/completions", chat_body(NAME, "Count from one to two hundred.", max_tokens=300), timeout=240)

    def watch() -> Any:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            d = call("GET", f"{gw}/internal/v1/demand", key=token).json() or {}
            m = d.get("models", {}).get(f"{NS}/{NAME}", {})
            seen_inflight.append(m.get("inflight", 0) + m.get("waiting", 0))
            if autoscaling_status().get("desiredReplicas") == 2:
                return True
            time.sleep(0.3)
        return False

    results = in_parallel([long_request, long_request, long_request, watch])
    if not results[3]:
        fail(f"3 requests at once did not scale {NAME} to 2 (demand seen {max(seen_inflight, default=0)}): {autoscaling_status()}")
    if any(r.status != 200 for r in results[:3]):
        fail(f"requests under scale-up: {[(r.status, r.body[:120]) for r in results[:3]]}")
    log(f"ok - /internal/v1/demand refuses callers without the cluster token and counted up to {max(seen_inflight)} "
        f"requests; 3 at once (1 per replica) scaled {NAME} to maxReplicas 2; all answered 200")

    # 5. a stream from zero, through the official client.
    wait_for(f"{NAME} back to zero", lambda: autoscaling_status().get("desiredReplicas") == 0 and ready_replicas(NAME) == 0, 90)
    client = OpenAI(base_url=f"{gw}/v1", api_key=KEY, max_retries=0, timeout=150)
    t0 = time.monotonic()
    text = "".join((c.choices[0].delta.content or "") for c in client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0, stream=True) if c.choices)
    if not text:
        fail("the stream from zero carried no text")
    log(f"ok - a streamed request from zero answered through the openai client in {time.monotonic() - t0:.1f} s: {text!r}")

    # 6. autoscaling off: kubectl scale works.
    kubectl("patch", "md", NAME, "-n", NS, "--type=json", "-p", '[{"op":"remove","path":"/spec/autoscaling"}]')
    kubectl("scale", "md", NAME, "-n", NS, "--replicas=2")
    wait_for(f"{NAME} at 2 replicas by kubectl scale", lambda: ready_replicas(NAME) == 2, 120)
    kubectl("delete", "md", NAME, "-n", NS, "--wait=true", "--timeout=60s")
    log("ok - with autoscaling removed, kubectl scale --replicas=2 gives 2 Ready replicas")



if __name__ == "__main__":
    main()
