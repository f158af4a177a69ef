"""The cluster tier: a real kube-apiserver, the operator, three simulated boards and an origin,
as `hack/testcluster.sh up --boards 3` starts them (board-3 is an RK3576). Run by
hack/test-cluster.sh, which brings the cluster up and down; this script only drives it through
kubectl and the boards' HTTP APIs. Every wait is bounded; the first failure stops the run with
the state that explains it. Stdlib only.

Steps (each prints `ok - ...`):
  1. a GGUF ModelDeployment with 2 replicas from the origin → 2 boards Ready, the model and its
     alias answer on both, the origin sent the file once (the second board took it from the first);
  2. kill -9 one of them → its lease expires → the replica is re-placed on the free board; the
     board comes back and is not given a duplicate;
  3. cordon a board holding a replica → a new replica Ready elsewhere first, then removed;
  4. scale to 3 with `kubectl scale` → the third board fetches from a peer (origin: one copy in all);
  5. a runtime change → rolled one board at a time, some replica answering throughout;
  6. an .rkllm deployment for rk3588 → only the rk3588 boards, Degraded saying why; a model too
     large for the memory of the only matching board is not placed, Degraded naming it;
  7. an origin file with a flipped byte → Failed with the reason, never loaded;
  8. replicas 0 → unloaded everywhere, blobs still cached;
  9. delete → assignments removed, unassigned blobs evicted beyond the store budget;
 10. SIGTERM → the board reports Ready=False/Draining before it exits; restarted, it serves its
     model again without downloading it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

NS = "default"
WAIT = 180.0  # s: the bound of any single wait (2 shared cores, models load on the CPU)
STEP_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg: str) -> None:
    log(f"FAIL - {msg}")
    for what in (["get", "boards", "-o", "wide"], ["get", "md", "-A", "-o", "yaml"], ["get", "leases", "-A"]):
        print(kubectl(*what, check=False), flush=True)
    sys.exit(1)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    p = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        fail(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout + (p.stderr if not check else "")


def get(kind: str, name: str, ns: str | None = NS) -> dict[str, Any] | None:
    args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
    p = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60)
    return json.loads(p.stdout) if p.returncode == 0 else None


def wait_for(what: str, cond: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.5)
    fail(f"timed out after {timeout:.0f} s waiting for {what}")


def http(method: str, url: str, body: dict | None = None, timeout: float = 60) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        return 0, str(e)


def chat(endpoint: str, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    return http("POST", f"{endpoint}/v1/chat/completions", body)[0]


def cond(obj: dict | None, kind: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return c
    return {}


def board_models(board: str) -> dict[str, dict]:
    b = get("board", board, None) or {}
    return {m["key"]: m for m in (b.get("spec") or {}).get("models") or []}


def board_status_models(board: str) -> dict[str, dict]:
    b = get("board", board, None) or {}
    return {m["key"]: m for m in (b.get("status") or {}).get("models") or []}


def placements(md: str) -> dict[str, dict]:
    o = get("md", md) or {}
    return {p["board"]: p for p in (o.get("status") or {}).get("placements") or []}


def ready(md: str, n: int) -> Callable[[], Any]:
    def check() -> Any:
        o = get("md", md) or {}
        st = o.get("status") or {}
        return st.get("readyReplicas") == n and st.get("observedGeneration") == o["metadata"]["generation"] and o
    return check


def origin_bytes(log_file: Path, name: str) -> int:
    total = 0
    for line in log_file.read_text().splitlines():
        r = json.loads(line)
        if r.get("path") == name and r.get("method") == "GET":
            total += r.get("sent", 0)
    return total


def apply_md(name: str, spec: dict) -> None:
    doc = {"apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": name, "namespace": NS}, "spec": spec}
    kubectl("apply", "-f", "-", stdin=json.dumps(doc))


def main() -> None:
    env = dict(line.split("=", 1) for line in Path(sys.argv[1]).read_text().splitlines() if "=" in line)
    boards = {ln.split()[1]: ln.split()[2] for ln in Path(sys.argv[1]).read_text().splitlines() if ln.startswith("BOARD ")}
    cluster_dir = Path(env["KUBECONFIG"]).parent
    origin, origin_dir = env["ORIGIN"], Path(env["ORIGIN_DIR"])
    requests_log = cluster_dir / "logs" / "origin-requests.jsonl"
    sums = dict(reversed(ln.split()) for ln in (origin_dir / "SHA256SUMS").read_text().splitlines())
    gguf = next(n for n in sums if n.endswith(".gguf"))
    size = (origin_dir / gguf).stat().st_size
    testcluster = [str(Path(__file__).resolve().parents[2] / "hack" / "testcluster.sh")]
    # board-stop / board-start act on this cluster, whatever the caller's environment says.
    os.environ["TESTCLUSTER_DIR"] = str(cluster_dir)

    def board_ready(b: str) -> bool:
        return cond(get("board", b, None), "Ready").get("status") == "True"

    wait_for("3 Boards Ready", lambda: all(board_ready(b) for b in boards))
    socs = {b: (get("board", b, None) or {})["status"].get("soc") for b in boards}
    if socs != {"board-1": "rk3588", "board-2": "rk3588", "board-3": "rk3576"}:
        fail(f"board SoCs {socs}")
    log(f"ok - 3 boards registered with leases: {socs}")

    # 1. two replicas from the origin, pipelined.
    spec = {"model": "smollm2", "aliases": ["smol:135m"], "format": "gguf", "replicas": 2,
            "source": {"url": f"{origin}/{gguf}", "sha256": sums[gguf], "sizeBytes": size},
            "runtime": {"maxContextLen": 1024}}
    apply_md("smollm2", spec)
    md = wait_for("smollm2: 2 ready replicas", ready("smollm2", 2))
    placed = sorted(placements("smollm2"))
    if len(placed) != 2 or any(p["phase"] != "Ready" for p in placements("smollm2").values()):
        fail(f"placements {placements('smollm2')}")
    if cond(md, "Ready").get("status") != "True":
        fail(f"Ready condition {cond(md, 'Ready')}")
    for b in placed:
        for name in ("smollm2", "smol:135m"):
            if chat(boards[b], name) != 200:
                fail(f"{name} does not answer on {b}")
    sent = origin_bytes(requests_log, gguf)
    if sent != size:
        fail(f"the origin sent {sent} bytes of {gguf}; one copy is {size}")
    log(f"ok - 2 replicas Ready on {placed}; model and alias answer on both; origin sent one copy ({size} bytes)")

    # 2. a board dies: lease expiry, re-placement, no duplicate on return.
    victim, survivor = placed[0], placed[1]
    spare = next(b for b in boards if b not in placed)
    subprocess.run([*testcluster, "board-stop", victim, "KILL"], check=True, timeout=60)
    wait_for(f"{victim} marked not Ready", lambda: cond(get("board", victim, None), "Ready").get("reason") == "LeaseExpired")
    wait_for("the replica re-placed", lambda: sorted(placements("smollm2")) == sorted([survivor, spare])
             and ready("smollm2", 2)())
    subprocess.run([*testcluster, "board-start", victim], check=True, timeout=WAIT)
    wait_for(f"{victim} Ready again", lambda: board_ready(victim))
    time.sleep(5)  # a few reconciles with the board back
    if "default/smollm2" in board_models(victim) or len(placements("smollm2")) != 2:
        fail(f"{victim} got a duplicate: {placements('smollm2')}")
    if chat(boards[spare], "smollm2") != 200:
        fail(f"the re-placed replica on {spare} does not answer")
    log(f"ok - kill -9 {victim}: lease expired, replica re-placed on {spare}; {victim} came back without a duplicate")

    # 3. cordon: drained onto a free board, new replica Ready first.
    kubectl("patch", "board", survivor, "--type", "merge", "-p", '{"spec":{"cordoned":true}}')
    wait_for(f"{survivor} drained", lambda: sorted(placements("smollm2")) == sorted([spare, victim])
             and ready("smollm2", 2)())
    kubectl("patch", "board", survivor, "--type", "merge", "-p", '{"spec":{"cordoned":false}}')
    log(f"ok - cordoned {survivor}: replica moved to {victim}, then removed from {survivor}")

    # 4. scale to 3 through the scale subresource; the third board fetches from a peer.
    kubectl("scale", "md", "smollm2", "--replicas=3")
    wait_for("smollm2: 3 ready replicas", ready("smollm2", 3))
    sent = origin_bytes(requests_log, gguf)
    if sent != size:
        fail(f"after scaling to 3 the origin has sent {sent} bytes; one copy is {size}")
    log(f"ok - kubectl scale --replicas=3: 3 Ready; every board but the first took the file from a peer")

    # 5. a runtime change is rolled out one board at a time.
    revisions = {b: board_models(b)["default/smollm2"].get("revision") for b in boards}
    kubectl("patch", "md", "smollm2", "--type", "merge", "-p", '{"spec":{"runtime":{"maxContextLen":2048}}}')
    deadline = time.monotonic() + WAIT
    polls = 0
    while True:
        # One list call: a consistent snapshot of every board (separate gets could see a
        # sequential rollout as overlapping).
        items = json.loads(kubectl("get", "boards", "-o", "json"))["items"]
        models = {i["metadata"]["name"]: {m["key"]: m for m in (i.get("status") or {}).get("models") or []}
                  .get("default/smollm2", {}) for i in items}
        new = [b for b, m in models.items() if m.get("revision") not in (None, revisions[b]) and m.get("phase") == "Ready"]
        if len(new) == 3 and ready("smollm2", 3)():
            break
        answering = [b for b in boards if chat(boards[b], "smollm2") == 200]
        polls += 1
        if not answering:
            fail(f"no replica answered during the rollout: {models}")
        reloading = [b for b, m in models.items() if m.get("phase") != "Ready"]
        if len(reloading) > 1:
            fail(f"more than one board reloading at once: {reloading}")
        if time.monotonic() > deadline:
            fail(f"rollout did not finish: {models}")
        time.sleep(0.3)
    log(f"ok - runtime change rolled out board by board; a replica answered at each of {polls} polls")

    # 6. .rkllm for rk3588 only.
    rk = next(n for n in sums if n.endswith("_rk3588.rkllm") and n.startswith("Qwen3"))
    apply_md("qwen3", {"model": "qwen3-sim", "format": "rkllm", "socs": ["rk3588"], "replicas": 3,
                       "source": {"url": f"{origin}/{rk}", "sha256": sums[rk]}})
    md = wait_for("qwen3: 2 ready replicas", ready("qwen3", 2))
    if sorted(placements("qwen3")) != ["board-1", "board-2"]:
        fail(f"qwen3 placed on {sorted(placements('qwen3'))}")
    degraded = cond(md, "Degraded")
    if degraded.get("status") != "True" or "rk3588" not in degraded.get("message", ""):
        fail(f"Degraded condition {degraded}")
    if chat(boards["board-1"], "qwen3-sim") != 200:
        fail("qwen3-sim does not answer on board-1")
    log(f"ok - .rkllm for rk3588: only board-1 and board-2; Degraded: {degraded['message']}")

    # 6b. Memory: board-3 has 4 GiB (TESTCLUSTER_BOARD_MEM_GIB); a 4 GiB file needs ~4.8 GiB loaded.
    apply_md("big", {"model": "big", "format": "gguf", "socs": ["rk3576"], "replicas": 1,
                     "source": {"url": f"{origin}/not-there.gguf", "sha256": "0" * 64, "sizeBytes": 4 << 30}})

    def refused() -> Any:
        o = get("md", "big") or {}
        d = cond(o, "Degraded")
        return d.get("status") == "True" and "board-3" in d.get("message", "") and "free" in d["message"] and d
    d = wait_for("big: Degraded, naming board-3's memory", refused)
    if placements("big") or "default/big" in board_models("board-3"):
        fail(f"a model too large for board-3 was placed: {placements('big')}")
    kubectl("delete", "md", "big", "--wait=true", "--timeout=60s")
    log(f"ok - a model too large for every matching board is not placed: {d['message']}")

    # 7. a corrupted file at the origin.
    # A file no store holds yet (a blob already in a store is never fetched again), served with
    # one byte flipped.
    good = os.urandom(3 << 20)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    (origin_dir / "corrupt.gguf").write_bytes(bad)
    apply_md("broken", {"model": "broken", "format": "gguf", "replicas": 1,
                        "source": {"url": f"{origin}/corrupt.gguf", "sha256": hashlib.sha256(good).hexdigest()}})

    def failed() -> Any:
        p = list(placements("broken").values())
        return p and p[0]["phase"] == "Failed" and "sha256 mismatch" in (p[0].get("message") or "") and p[0]
    p = wait_for("broken: Failed with the digest mismatch", failed)
    st, models = http("GET", f"{boards[p['board']]}/v1/models")
    if "broken" in json.dumps(models):
        fail("a model that failed verification is served")
    kubectl("delete", "md", "broken", "--wait=true", "--timeout=60s")
    log(f"ok - corrupted origin file: Failed on {p['board']}: {p['message'][:90]}")

    # 8. replicas 0: unloaded everywhere, still cached.
    kubectl("scale", "md", "smollm2", "--replicas=0")

    def all_cached() -> bool:
        ms = [board_status_models(b).get("default/smollm2", {}) for b in boards]
        return all(m.get("phase") == "Cached" and not m.get("loaded") for m in ms)
    wait_for("smollm2 Cached on every board", all_cached)
    for b, ep in boards.items():
        if "smollm2" in json.dumps(http("GET", f"{ep}/api/ps")[1]):
            fail(f"smollm2 still resident on {b}")
        if not (cluster_dir / "boards" / b / "models" / "blobs" / f"sha256-{sums[gguf]}").is_file():
            fail(f"the blob is gone from {b}")
    log("ok - replicas 0: unloaded on every board, blob still in every store")

    # 9. delete: assignments removed, unassigned blobs evicted beyond the budget.
    kubectl("delete", "md", "smollm2", "--wait=true", "--timeout=60s")
    wait_for("assignments removed", lambda: all("default/smollm2" not in board_models(b) for b in boards))
    wait_for("blobs evicted beyond the store budget", lambda: not any(
        (cluster_dir / "boards" / b / "models" / "blobs" / f"sha256-{sums[gguf]}").exists() for b in boards))
    log(f"ok - delete: assignments removed, blobs evicted (store budget {os.environ.get('TESTCLUSTER_STORE_BUDGET')})")

    # 10. SIGTERM: the board says Draining before it goes; restarted, it serves its assigned
    # model again from its store (no new download).
    before = origin_bytes(requests_log, rk)
    subprocess.run([*testcluster, "board-stop", "board-1", "TERM"], check=True, timeout=60)
    c = cond(get("board", "board-1", None), "Ready")
    if (c.get("status"), c.get("reason")) != ("False", "Draining"):
        fail(f"after SIGTERM board-1's Ready condition is {c}")
    subprocess.run([*testcluster, "board-start", "board-1"], check=True, timeout=WAIT)
    wait_for("board-1 Ready again", lambda: board_ready("board-1"))
    wait_for("qwen3 Ready again on board-1", lambda: board_status_models("board-1").get("default/qwen3", {}).get("phase") == "Ready")
    if chat(boards["board-1"], "qwen3-sim") != 200:
        fail("qwen3-sim does not answer on board-1 after its restart")
    if origin_bytes(requests_log, rk) != before:
        fail("board-1 downloaded its verified blob again after a restart")
    log("ok - SIGTERM: Ready=False/Draining before exit; restarted, serving again from its store (no download)")
    log(f"all cluster checks passed in {time.monotonic() - STEP_T0:.0f} s")


if __name__ == "__main__":
    main()
