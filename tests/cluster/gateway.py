"""The gateway tier: the operator's gateway in front of three simulated RK3588 boards, as
hack/test-cluster.sh starts them (`hack/testcluster.sh up --boards 3` with gateway client keys,
`--queue-depth 4`, and agents that require the cluster token). Stdlib only; every wait bounded.

Steps (each prints `ok - ...`):
  1. smollm2 (GGUF, LeastLoad) and qwen3-sim (.rkllm on rkllm-sim at vendor speed,
     PrefixAffinity) Ready on 3 boards; `/v1/models`, `/api/tags` and `/api/ps` list them from
     every board;
  2. errors in each API's shape: unknown model 404 naming it; a model with no Ready replica 503
     saying why; no key 401; a key whose allow-list lacks the model 403; a board refuses a caller
     without the cluster token; x-request-id passed through, the board named in a header;
  3. the official openai and ollama clients' compatibility suite through the gateway;
  4. PrefixAffinity: a 5-turn conversation stays on one board; 20 distinct conversations use
     all three;
  5. LeastLoad under a skewed load: board-1's queue filled directly, 4 requests through the
     gateway all go to the idle boards;
  6. a client disconnect mid-stream: the board's busy count returns to 0;
  7. queue overflow: 429 with Retry-After in both shapes, everything admitted answers 200;
  8. kill -9 a board under load: every request (none had started streaming) answers 200, the
     board is ejected; it comes back.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

NS = "default"
WAIT = 180.0
KEY = "gw-test-key"
LIMITED = "gw-limited-key"
ROOT = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    print(f"[gateway {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg: str) -> None:
    log(f"FAIL - {msg}")
    for what in (["get", "boards", "-o", "wide"], ["get", "md", "-A"]):
        print(kubectl(*what, check=False), flush=True)
    sys.exit(1)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    p = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        fail(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def wait_for(what: str, cond: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.3)
    fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Resp:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def call(method: str, url: str, body: Any = None, key: str | None = KEY, headers: dict | None = None,
         timeout: float = 120) -> Resp:
    h = {"content-type": "application/json", **(headers or {})}
    if key:
        h["authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Resp(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Resp(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        return Resp(0, {}, str(e).encode())


def chat_body(model: str, text: str, max_tokens: int = 4, system: str | None = None, **extra: Any) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return {"model": model, "messages": msgs, "max_tokens": max_tokens, "temperature": 0, **extra}


def in_parallel(fns: list[Callable[[], Any]]) -> list[Any]:
    out: list[Any] = [None] * len(fns)

    def run(i: int) -> None:
        out[i] = fns[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
    return out


def apply_md(name: str, spec: dict) -> None:
    doc = {"apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": name, "namespace": NS}, "spec": spec}
    kubectl("apply", "-f", "-", stdin=json.dumps(doc))


def ready_replicas(name: str) -> int:
    p = subprocess.run(["kubectl", "get", "md", name, "-n", NS, "-o", "json"], capture_output=True, text=True, timeout=60)
    return ((json.loads(p.stdout).get("status") or {}).get("readyReplicas") or 0) if p.returncode == 0 else 0


def main() -> None:
    up = Path(sys.argv[1]).read_text().splitlines()
    env = dict(line.split("=", 1) for line in up if "=" in line)
    boards = {ln.split()[1]: ln.split()[2] for ln in up if ln.startswith("BOARD ")}
    gw, origin, origin_dir = env["GATEWAY"], env["ORIGIN"], Path(env["ORIGIN_DIR"])
    token = Path(env["CLUSTER_TOKEN_FILE"]).read_text().strip()
    cluster_dir = Path(env["KUBECONFIG"]).parent
    os.environ["TESTCLUSTER_DIR"] = str(cluster_dir)
    testcluster = [str(ROOT / "hack" / "testcluster.sh")]
    sums = dict(reversed(ln.split()) for ln in (origin_dir / "SHA256SUMS").read_text().splitlines())
    gguf = next(n for n in sums if n.endswith(".gguf"))
    rk = next(n for n in sums if n.endswith("_rk3588.rkllm") and n.startswith("Qwen3"))

    def board_load(board: str) -> dict[str, dict]:
        r = call("GET", f"{boards[board]}/internal/v1/load", key=token, timeout=5)
        return {m["name"]: m for m in (r.json() or {}).get("models", [])} if r.status == 200 else {}

    def gw_metric(name: str, labels: dict[str, str]) -> float:
        text = call("GET", f"{gw}/metrics").body.decode()
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                   if ln.startswith(name + "{") and all(w in ln for w in want))

    # 1. two deployments on all three boards, listed from every board.
    apply_md("smollm2", {"model": "smollm2", "aliases": ["smol:135m"], "format": "gguf", "replicas": 3,
                         "source": {"url": f"{origin}/{gguf}", "sha256": sums[gguf]},
                         "runtime": {"maxContextLen": 2048}})
    apply_md("qwen3", {"model": "qwen3-sim", "format": "rkllm", "replicas": 3, "socs": ["rk3588"],
                       "routing": {"strategy": "PrefixAffinity", "prefixChars": 256},
                       "source": {"url": f"{origin}/{rk}", "sha256": sums[rk]}})
    apply_md("idle", {"model": "idle", "format": "gguf", "replicas": 0,
                      "source": {"url": f"{origin}/{gguf}", "sha256": sums[gguf]}})
    wait_for("smollm2 and qwen3 Ready on 3 boards", lambda: ready_replicas("smollm2") == 3 and ready_replicas("qwen3") == 3)

    def listed() -> Any:
        models = {m["id"]: m for m in (call("GET", f"{gw}/v1/models").json() or {}).get("data", [])}
        ok = all(len((models.get(n) or {}).get("meta", {}).get("boards", [])) == 3 for n in ("smollm2", "smol:135m", "qwen3-sim"))
        return ok and models
    models = wait_for("the gateway routes both models to 3 boards", listed, 30)
    if models["smol:135m"]["meta"]["served_name"] != "smollm2" or not models["smol:135m"]["meta"]["alias"]:
        fail(f"alias entry {models['smol:135m']}")
    if models["idle"]["meta"]["ready_replicas"] != 0:
        fail(f"idle: {models['idle']}")
    tags = {m["name"]: m for m in call("GET", f"{gw}/api/tags").json()["models"]}
    if not {"smollm2", "smol:135m", "qwen3-sim"} <= set(tags) or not tags["smollm2"].get("size"):
        fail(f"/api/tags: {tags}")
    # Each board loads its models on assignment; /api/ps shows what is resident where.
    ps = call("GET", f"{gw}/api/ps").json()["models"]
    where = {(e["board"], e["name"].removesuffix(":latest")) for e in ps}
    if {b for b, _ in where} != set(boards):
        fail(f"/api/ps boards {where}")
    log(f"ok - 2 models x 3 boards: /v1/models ({len(models)} names, boards in meta), /api/tags with details, /api/ps from {len(boards)} boards")

    # 2. errors, auth, headers.
    r = call("POST", f"{gw}/v1/chat/completions", chat_body("no-such-model", "hi"))
    e = (r.json() or {}).get("error") or {}
    if r.status != 404 or e.get("code") != "model_not_found" or "no-such-model" not in e.get("message", ""):
        fail(f"unknown model (OpenAI): {r.status} {r.body!r}")
    r = call("POST", f"{gw}/api/chat", {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    if r.status != 404 or "no-such-model" not in (r.json() or {}).get("error", ""):
        fail(f"unknown model (Ollama): {r.status} {r.body!r}")
    r = call("POST", f"{gw}/v1/chat/completions", chat_body("idle", "hi"))
    if r.status != 503 or "scaled to zero" not in r.json()["error"]["message"]:
        fail(f"no replica (OpenAI): {r.status} {r.body!r}")
    r = call("POST", f"{gw}/api/generate", {"model": "idle", "prompt": "hi"})
    if r.status != 503 or "scaled to zero" not in (r.json() or {}).get("error", ""):
        fail(f"no replica (Ollama): {r.status} {r.body!r}")
    r = call("GET", f"{gw}/v1/models", key=None)
    if r.status != 401 or r.json()["error"]["type"] != "authentication_error":
        fail(f"no key (OpenAI): {r.status} {r.body!r}")
    r = call("GET", f"{gw}/api/tags", key="wrong")
    if r.status != 401 or "error" not in (r.json() or {}):
        fail(f"bad key (Ollama): {r.status} {r.body!r}")
    if call("GET", f"{gw}/healthz", key=None).status != 200 or call("GET", f"{gw}/", key=None).body != b"Ollama is running":
        fail("probes need no key")
    r = call("POST", f"{gw}/v1/chat/completions", chat_body("qwen3-sim", "hi"), key=LIMITED)
    if r.status != 403 or "qwen3-sim" not in r.json()["error"]["message"]:
        fail(f"allow-list: {r.status} {r.body!r}")
    limited_names = {m["id"] for m in call("GET", f"{gw}/v1/models", key=LIMITED).json()["data"]}
    if limited_names != {"smollm2"}:
        fail(f"a limited key sees {limited_names}")
    r = call("POST", f"{gw}/v1/chat/completions", chat_body("smollm2", "Say hi"), key=LIMITED,
             headers={"x-request-id": "gw-e2e-42"})
    if r.status != 200 or r.headers.get("x-request-id") != "gw-e2e-42" or r.headers.get("x-rockchip-llama-board") not in boards:
        fail(f"through the gateway: {r.status} {r.headers} {r.body[:200]!r}")
    served_by = r.headers["x-rockchip-llama-board"]
    board_log = (cluster_dir / "logs" / f"{served_by}.log").read_text()
    if "gw-e2e-42" not in board_log:
        fail(f"the request id is not in {served_by}'s log")
    direct = call("POST", f"{boards['board-1']}/v1/chat/completions", chat_body("smollm2", "hi"), key=None)
    if direct.status != 401:
        fail(f"a board answered a caller without the cluster token: {direct.status}")
    log("ok - 404/503/401 in both shapes, 403 outside a key's allow-list, boards refuse callers without the cluster token, request id on both sides")

    # 3. the official clients through the gateway.
    t0 = time.monotonic()
    compat = subprocess.run([str(ROOT / "hack" / "test-compat-external.sh"), gw, "smollm2", KEY, "-q", "-x"],
                            env={**os.environ, "COMPAT_ALIAS": "smol:135m"}, timeout=1200)
    if compat.returncode != 0:
        fail("the compatibility suite failed through the gateway")
    log(f"ok - openai and ollama clients' compatibility suite through the gateway ({time.monotonic() - t0:.0f} s)")

    # 4. PrefixAffinity (25 requests one after another, which also shows the gateway keeping its
    # connections to the boards: hack/test-cluster.sh runs it with 2 serving threads).
    opened_before = gw_metric("rockchip_llama_gateway_board_connections_opened_total", {})
    convo = [{"role": "system", "content": "You are a terse assistant for gardeners."}]
    seen = set()
    for turn in range(5):
        convo.append({"role": "user", "content": f"Question {turn}: when do tulips bloom?"})
        r = call("POST", f"{gw}/v1/chat/completions", {"model": "qwen3-sim", "messages": convo, "max_tokens": 4})
        if r.status != 200:
            fail(f"turn {turn}: {r.status} {r.body!r}")
        seen.add(r.headers["x-rockchip-llama-board"])
        convo.append({"role": "assistant", "content": r.json()["choices"][0]["message"]["content"]})
    if len(seen) != 1:
        fail(f"a 5-turn conversation moved between boards: {seen}")
    spread = {}
    for i in range(20):
        r = call("POST", f"{gw}/v1/chat/completions",
                 chat_body("qwen3-sim", f"Conversation {i}: tell me about topic number {i * 7919}.", system=f"Persona {i}"))
        if r.status != 200:
            fail(f"conversation {i}: {r.status}")
        b = r.headers["x-rockchip-llama-board"]
        spread[b] = spread.get(b, 0) + 1
    if set(spread) != set(boards):
        fail(f"20 conversations did not use every board: {spread}")
    hits = gw_metric("rockchip_llama_gateway_routing_decisions_total", {"policy": "PrefixAffinity", "reason": "affinity_hit"})
    opened = gw_metric("rockchip_llama_gateway_board_connections_opened_total", {}) - opened_before
    if opened > 2 * len(boards):
        fail(f"25 requests one after another opened {opened:.0f} connections to the boards (kept: at most one per "
             f"board and serving thread, {2 * len(boards)})")
    log(f"ok - PrefixAffinity: 5 turns on {seen.pop()}; 20 conversations spread {spread}; affinity hits counted: {hits:.0f}; "
        f"{opened:.0f} board connections opened for 25 requests")

    # 5. LeastLoad under a skewed load: board-1 busy with direct requests (1 running, 3 waiting).
    long_body = chat_body("smollm2", "Write a long story about a fox.", max_tokens=200)
    hog = [lambda: call("POST", f"{boards['board-1']}/v1/chat/completions", long_body, key=token, timeout=WAIT)
           for _ in range(4)]
    hog_threads = [threading.Thread(target=f) for f in hog]
    for t in hog_threads:
        t.start()
    wait_for("board-1's queue filled", lambda: board_load("board-1").get("smollm2", {}).get("waiting", 0) >= 2, 30)
    time.sleep(0.6)  # two polls
    results = in_parallel([lambda: call("POST", f"{gw}/v1/chat/completions", chat_body("smollm2", "Hi", max_tokens=2))
                           for _ in range(4)])
    used = [r.headers.get("x-rockchip-llama-board") for r in results]
    if any(r.status != 200 for r in results) or "board-1" in used:
        fail(f"LeastLoad sent to the full board-1 while others were free: {[(r.status, b) for r, b in zip(results, used)]}")
    for t in hog_threads:
        t.join(timeout=WAIT)
    log(f"ok - LeastLoad with board-1's queue full: the 4 requests went to {sorted(used)}")

    # 6. a client disconnect mid-stream frees the board.
    u = urllib.parse.urlsplit(gw)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps(chat_body("smollm2", "Count to a thousand.", max_tokens=400, stream=True)),
                 {"content-type": "application/json", "authorization": f"Bearer {KEY}"})
    resp = conn.getresponse()
    victim = resp.getheader("x-rockchip-llama-board")
    if resp.status != 200 or not resp.read1(64):
        fail(f"stream did not start: {resp.status}")
    busy = board_load(victim).get("smollm2", {})
    conn.sock.close()
    conn.close()
    wait_for(f"{victim}'s busy count back to 0 after the disconnect",
             lambda: (lambda m: m.get("running", 1) == 0 and m.get("waiting", 1) == 0)(board_load(victim).get("smollm2", {})), 20)
    log(f"ok - client left mid-stream: {victim} went from {busy} to idle")

    # 7. queue overflow: capacity 3 boards x (1 slot + 1 queued) + 4 waiting at the gateway.
    def slow(path: str) -> Callable[[], Resp]:
        if path == "/api/chat":
            body = {"model": "qwen3-sim", "messages": [{"role": "user", "content": "overflow"}], "stream": False,
                    "options": {"num_predict": 40}}
        else:
            body = chat_body("qwen3-sim", "overflow", max_tokens=40)
        return lambda: call("POST", f"{gw}{path}", body, timeout=WAIT)
    results = in_parallel([slow("/v1/chat/completions") for _ in range(10)] + [slow("/api/chat") for _ in range(8)])
    codes = [r.status for r in results]
    over = [r for r in results if r.status == 429]
    if not over or any(c not in (200, 429) for c in codes) or codes.count(200) < 10:
        fail(f"queue overflow: {codes}")
    for r in over:
        body = r.json() or {}
        shape_ok = isinstance(body.get("error"), dict) and body["error"].get("type") == "rate_limit_error" \
            or isinstance(body.get("error"), str)
        if not r.headers.get("retry-after") or not shape_ok:
            fail(f"429 without Retry-After or in no API's shape: {r.headers} {r.body!r}")
    log(f"ok - 18 at once over capacity 6 + queue 4: {codes.count(200)} answered, {len(over)} refused with 429 + Retry-After")

    # 8. kill -9 a board under load: nothing that had not started streaming fails.
    victim = "board-2"
    before = gw_metric("rockchip_llama_gateway_ejections_total", {"board": victim})
    loads = [lambda i=i: call("POST", f"{gw}/v1/chat/completions", chat_body("qwen3-sim", f"load {i}", max_tokens=40), timeout=WAIT)
             for i in range(9)]
    killer = threading.Timer(1.0, lambda: subprocess.run([*testcluster, "board-stop", victim, "KILL"], check=True, timeout=60))
    killer.start()
    results = in_parallel(loads)
    killer.join()
    codes = [r.status for r in results]
    if any(c != 200 for c in codes):
        fail(f"requests failed when {victim} was killed: {codes} {[r.body[:120] for r in results if r.status != 200]}")
    wait_for(f"{victim} ejected", lambda: gw_metric("rockchip_llama_gateway_ejections_total", {"board": victim}) > before, 10)
    retried = gw_metric("rockchip_llama_gateway_retries_total", {"board": victim})
    after = [call("POST", f"{gw}/v1/chat/completions", chat_body("qwen3-sim", f"after {i}")).headers.get("x-rockchip-llama-board")
             for i in range(4)]
    if victim in after:
        fail(f"requests still sent to the dead {victim}: {after}")
    subprocess.run([*testcluster, "board-start", victim], check=True, timeout=WAIT)
    wait_for(f"{victim} routed again", lambda: victim in (listed() or {}).get("qwen3-sim", {}).get("meta", {}).get("boards", []), WAIT)
    log(f"ok - kill -9 {victim} under load: 9/9 answered ({retried:.0f} retried elsewhere), {victim} ejected, back after restart")


if __name__ == "__main__":
    main()
